"""Kaizen's benchmarks: `make bench` (or `python -m bench [--quick] [--only chat,storage]`).

Each module measures one thing on the embedded model on this CPU and returns result rows; the
package's `__main__` prints them as one markdown table and writes it to bench/results.md.
"""

import os

# Set before torch is first imported (any bench module imports it): OpenMP threads that spin
# while they wait collapse when the two cores are oversubscribed (measured 10x), and nothing
# here may reach a model hub.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
