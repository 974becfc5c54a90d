"""Shared pieces of the benchmarks: options, result rows and tables, statistics, a real
`kaizen serve` in a child process, a streaming chat client with timings, concurrent users, and
the `kaizen` command line.

These machines are shared and noisy, so every figure is a median (or p95) over repeats, and
each headline figure is compared with a baseline measured in the same run.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import httpx
import numpy as np

from tests import harness
from tests.harness import ProcessServer

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

ROOT = harness.ROOT
ADMIN = ("admin", "bench-admin-password")
T = TypeVar("T")


@dataclass(frozen=True)
class Options:
    """What every benchmark gets: the converted model directory, a scratch directory, quick mode."""

    model_dir: str
    out_dir: Path
    quick: bool = False

    def pick(self, full: T, quick: T) -> T:
        """The full run's value, or the quick run's."""
        return quick if self.quick else full

    def fresh_dir(self, name: str) -> Path:
        path = self.out_dir / name
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        return path


@dataclass(frozen=True)
class Row:
    """One line of the headline table: a figure and the same-run baseline it is compared with."""

    what: str
    figure: str
    baseline: str = ""
    ratio: str = ""
    notes: str = ""


@dataclass
class Table:
    """A detail table under a benchmark's heading in results.md."""

    title: str
    headers: list[str]
    rows: list[list] = field(default_factory=list)

    def markdown(self) -> str:
        return markdown_table(self.headers, self.rows, title=self.title)


@dataclass
class Result:
    name: str
    rows: list[Row] = field(default_factory=list)
    details: list[Table] = field(default_factory=list)
    seconds: float = 0.0


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence], title: str = "") -> str:
    def cell(v: object) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    lines = [f"**{title}**", ""] if title else []
    lines.append("| " + " | ".join(headers) + " |")
    lines.append("|" + "---|" * len(headers))
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


# --- statistics and formatting -------------------------------------------------------------------


def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs))


def p95(xs: Sequence[float]) -> float:
    return float(np.percentile(list(xs), 95))


def ratio(value: float, base: float) -> str:
    return f"{value / base:.2f}×" if base else "–"


def secs(s: float) -> str:
    return f"{s:.2f} s" if s < 10 else f"{s:.1f} s"


def ms(s: float) -> str:
    return f"{1000 * s:.0f} ms"


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB, Python {platform.python_version()}"


def load_average() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


# --- a real server and the command line --------------------------------------------------------


def kaizen_env(model_dir: str, **extra: str) -> dict[str, str]:
    """The environment a benchmark gives `kaizen`: the converted model, a known admin password."""
    return {**os.environ, "KAIZEN_MODEL": model_dir, "KAIZEN_ADMIN_PASSWORD": ADMIN[1], **extra}


class Server(ProcessServer):
    """`kaizen serve --no-schedule` in a child process on a free port (the real thing, so the
    client threads of a benchmark never compete with it for the GIL)."""

    def __init__(self, data_dir: Path, model_dir: str, *, memory: bool = False, env: dict[str, str] | None = None):
        super().__init__(data_dir, "--no-schedule", env=kaizen_env(model_dir, KAIZEN_MEMORY=str(memory).lower(),
                                                                     **(env or {})),
                         log=data_dir.parent / f"{data_dir.name}-server.log")

    def __enter__(self) -> Server:
        self.start(timeout=300)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop(timeout=30)

    def admin(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, auth=ADMIN, timeout=120)


def kaizen_cli(*args: str, data_dir: Path, model_dir: str,
               timeout: float = 1800) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run `kaizen ARGS` as a user would; returns the finished process and its wall time."""
    t0 = time.perf_counter()
    proc = harness.kaizen_cli(*args, "--data-dir", str(data_dir), data_dir=data_dir, env=kaizen_env(model_dir),
                              timeout=timeout, check=False)
    return proc, time.perf_counter() - t0


# --- chat over HTTP ----------------------------------------------------------------------------


@dataclass
class ChatTiming:
    """One streamed reply as the client saw it (times in seconds from the request)."""

    ok: bool
    ttft: float | None
    total: float
    text: str = ""
    error: str = ""


def stream_chat(client: httpx.Client, url: str, message: str, *, max_tokens: int, memory: bool = False) -> ChatTiming:
    body = {"model": "kaizen", "stream": True, "max_tokens": max_tokens, "memory": memory,
            "messages": [{"role": "user", "content": message}]}
    t0 = time.perf_counter()
    ttft, text = None, ""
    try:
        with client.stream("POST", url + "/v1/chat/completions", json=body, timeout=600) as r:
            if r.status_code != 200:
                r.read()
                return ChatTiming(False, None, time.perf_counter() - t0, error=f"HTTP {r.status_code}: {r.text[:200]}")
            for line in r.iter_lines():
                if not line.startswith("data: "):
                    continue
                data = line[len("data: "):]
                if data == "[DONE]":
                    return ChatTiming(True, ttft, time.perf_counter() - t0, text)
                event = json.loads(data)
                if "error" in event:
                    return ChatTiming(False, ttft, time.perf_counter() - t0, text, event["error"].get("message", ""))
                piece = event["choices"][0]["delta"].get("content")
                if piece:
                    ttft = ttft if ttft is not None else time.perf_counter() - t0
                    text += piece
    except httpx.HTTPError as exc:
        return ChatTiming(False, ttft, time.perf_counter() - t0, text, f"{type(exc).__name__}: {exc}")
    return ChatTiming(False, ttft, time.perf_counter() - t0, text, "stream ended without [DONE]")


def chat_once(url: str, message: str, *, max_tokens: int, memory: bool | None = None) -> str:
    """A non-streamed reply's text (memory None: the server's default)."""
    body = {"messages": [{"role": "user", "content": message}], "max_tokens": max_tokens}
    if memory is not None:
        body["memory"] = memory
    r = httpx.post(url + "/v1/chat/completions", json=body, timeout=600)
    r.raise_for_status()
    return r.json()["choices"][0]["message"]["content"]


@dataclass
class Wave:
    timings: list[ChatTiming]
    wall: float


def wave(url: str | Sequence[str], users: int, messages: Sequence[str], max_tokens: int, first: int = 0) -> Wave:
    """`users` clients start one streamed reply each at the same moment, user i sending message
    `first + i` (round the list) to server i mod n of the `url`s (one URL or several replicas);
    returns when all end."""
    urls = [url] if isinstance(url, str) else list(url)
    timings: list[ChatTiming | None] = [None] * users
    barrier = threading.Barrier(users)

    def user(i: int) -> None:
        with httpx.Client() as client:
            barrier.wait()
            timings[i] = stream_chat(client, urls[i % len(urls)], messages[(first + i) % len(messages)],
                                     max_tokens=max_tokens)

    threads = [threading.Thread(target=user, args=(i,), daemon=True) for i in range(users)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return Wave([t for t in timings if t is not None], time.perf_counter() - t0)


def count_tokens(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str]) -> int:
    return sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)
