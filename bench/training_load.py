"""Chat latency with and without a training round running (issue 4).

A real `kaizen serve` answers one streaming user, request after request: first with nothing else
running (the baseline), then while a round started through the admin API trains in the
TrainingSupervisor's child process (niced, KAIZEN_TRAIN_THREADS torch threads). Measuring starts
once the round reaches its training phase, and only replies that ended while it was still
running count. The round's end is not waited for (the teach and round benchmarks time rounds).

    python -m bench --only training [--quick]
"""

from __future__ import annotations

import time

import httpx

from bench.common import (
    ChatTiming,
    Options,
    Result,
    Row,
    Server,
    Table,
    median,
    p95,
    ratio,
    secs,
    stream_chat,
)
from feedback_db import store
from feedback_db.db import Database

MESSAGES = ["What is machine learning?", "Give me three tips for better sleep.", "How do I make a cup of tea?"]
FACTS = [
    ("What is CHOREI?", "CHOREI is the morning meeting where the whole team shares the day's goals."),
    ("Giờ mở cửa của cửa hàng là mấy giờ?", "Cửa hàng mở cửa từ 8 giờ sáng đến 9 giờ tối."),
    ("Who founded BICweb?", "BICweb was founded by Nguyen Van An in 2009."),
]
ACTIVE = ("queued", "running")


def _replies(server: Server, client: httpx.Client, n: int, max_tokens: int) -> list:
    return [stream_chat(client, server.url, MESSAGES[i % len(MESSAGES)], max_tokens=max_tokens) for i in range(n)]


def run(opts: Options) -> Result:
    n, max_tokens = opts.pick(6, 3), opts.pick(48, 32)
    data = opts.fresh_dir("training") / "data"
    db = Database(f"sqlite:///{data / 'kaizen.db'}")
    with db.write() as s:
        for q, a in FACTS:
            store.add_knowledge(session=s, question=q, answer=a, origin="bench", verbatim=True)
    db.close()
    during: list[ChatTiming] = []
    with Server(data, opts.model_dir) as server, httpx.Client() as client, server.admin() as admin:
        _replies(server, client, 1, 4)  # warm-up
        idle = _replies(server, client, n, max_tokens)
        run_id = admin.post("/admin/api/train").raise_for_status().json()["run_id"]
        deadline = time.monotonic() + 900
        while (run := admin.get(f"/admin/api/runs/{run_id}").raise_for_status().json())["phase"] != "train":
            if run["status"] not in ACTIVE or time.monotonic() > deadline:
                raise RuntimeError(f"Round {run_id} never reached training: {run['status']}, {run.get('error')}")
            time.sleep(1)
        while len(during) < n:
            timing = stream_chat(client, server.url, MESSAGES[len(during) % len(MESSAGES)], max_tokens=max_tokens)
            run = admin.get(f"/admin/api/runs/{run_id}").raise_for_status().json()
            if run["status"] not in ACTIVE:
                break
            during.append(timing)
        # Leaving the server stops the round (a daemon child): only its effect on chat is measured here.
    failed = sum(not t.ok for t in idle + during)
    idle, busy = [t for t in idle if t.ok], [t for t in during if t.ok]
    if not busy:
        raise RuntimeError(f"Round {run_id} ended ({run['status']}: {run.get('error')}) before any reply was measured.")
    table = Table(f"One streaming user, {max_tokens} tokens max per reply, replies one after another; round "
                  f"{run_id} in phase {run.get('phase')!r} at the end; {failed} failed requests",
                  ["", "replies", "latency p50", "latency p95", "TTFT p50"],
                  [["no training", len(idle), secs(median([t.total for t in idle])), secs(p95([t.total for t in idle])),
                    secs(median([t.ttft for t in idle if t.ttft is not None]))],
                   ["training in the child process", len(busy), secs(median([t.total for t in busy])),
                    secs(p95([t.total for t in busy])), secs(median([t.ttft for t in busy if t.ttft is not None]))]])
    idle50, busy50 = median([t.total for t in idle]), median([t.total for t in busy])
    rows = [Row("Chat latency p50 while a round trains (child process)", secs(busy50), f"{secs(idle50)} without",
                ratio(busy50, idle50),
                f"p95 {secs(p95([t.total for t in busy]))} vs {secs(p95([t.total for t in idle]))}")]
    return Result("training", rows, [table])
