"""What the tests and the benchmarks share for driving Kaizen from outside: polling with a
deadline, free ports, the app on a uvicorn thread, `kaizen serve` in a child process, and the
`kaizen` command line in a child process. Import it as `tests.harness` (both run from the repo root).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")


def wait_until(predicate: Callable[[], T], timeout_s: float, what: str, interval_s: float = 0.1) -> T:
    """Call `predicate` until it returns something truthy, and return that; after `timeout_s`
    seconds fail with an AssertionError that says what was awaited."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(interval_s)


def free_port() -> int:
    with contextlib.closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ThreadServer:
    """Runs an ASGI app with uvicorn in a background thread on a free local port. For tests that
    need a real socket (a real HTTP client, Gradio's client, a browser); others use TestClient."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ThreadServer:
        self.thread.start()
        wait_until(lambda: self.server.started or not self.thread.is_alive(), 30, "uvicorn to start", 0.02)
        if not self.server.started:
            raise RuntimeError("uvicorn stopped before it started serving")
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def kaizen_cli(*args: str, data_dir: Path, env: dict[str, str] | None = None, timeout: float = 900,
               check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run `python launch.py ARGS` with KAIZEN_DATA_DIR=data_dir in a child process, as a user would,
    capturing its output. With `check`, a non-zero exit fails with the output."""
    full_env = {**os.environ, "KAIZEN_DATA_DIR": str(data_dir), **(env or {})}
    proc = subprocess.run([sys.executable, str(ROOT / "launch.py"), *args], capture_output=True, text=True,
                          env=full_env, timeout=timeout, cwd=ROOT)
    if check and proc.returncode != 0:
        raise AssertionError(f"kaizen {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


class ProcessServer:
    """`kaizen serve ARGS --data-dir DIR` in a child process (the real thing) on a free port, its
    output in a log file next to the data directory."""

    def __init__(self, data_dir: Path, *args: str, env: dict[str, str] | None = None, log: Path | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir = data_dir
        self.log = log or data_dir.parent / f"server-{self.port}.log"
        self.cmd = [sys.executable, str(ROOT / "launch.py"), "serve", "--port", str(self.port),
                    "--data-dir", str(data_dir), *args]
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 240) -> ProcessServer:
        """Start it and wait until /healthz answers; on failure the process is stopped and its log shown."""
        import httpx

        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(self.cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=ROOT)

        def healthy() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"kaizen serve exited early:\n{self.output()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(self.url + "/healthz", timeout=2).status_code == 200
            return False

        try:
            wait_until(healthy, timeout, f"kaizen serve on port {self.port} to become healthy", 0.25)
        except AssertionError:
            self.stop()
            raise RuntimeError(f"kaizen serve did not become healthy:\n{self.output()[-3000:]}") from None
        return self

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self, timeout: float = 20) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> ProcessServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
