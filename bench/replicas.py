"""Benchmark: chat throughput of two web replicas against one, on the same cores, sharing one
PostgreSQL database (`kaizen serve --role web`, docs/deploy.md).

16 streaming users (memory off, so every reply is generated) in waves, as in the concurrency
benchmark; with two replicas, user i talks to replica i mod 2. The machine's cores are shared:
one replica uses all of them (KAIZEN_TORCH_THREADS=0), each of two uses half. The baseline is one
replica in the same run. On one machine no gain is expected (both replicas compete for the same
cores); replicas pay off when they run on more machines.

    python -m bench --only replicas [--quick]
"""

from __future__ import annotations

import os
from typing import Any

from transformers import AutoTokenizer

from bench.common import Options, Result, Row, Server, Table, count_tokens, median, p95, ratio, secs, wave
from bench.concurrency import MESSAGES

USERS = 16


def _measure(opts: Options, replicas: int, db_url: str, max_tokens: int, tokenizer: Any) -> dict:
    threads = str(max(1, (os.cpu_count() or 2) // replicas)) if replicas > 1 else "0"
    env = {"KAIZEN_DB_URL": db_url, "KAIZEN_TORCH_THREADS": threads}
    data = opts.fresh_dir(f"replicas-{replicas}") / "data"
    servers = [Server(data, opts.model_dir, env={**env, "KAIZEN_ROLE": "web"}) for _ in range(replicas)]
    servers[0].start(timeout=300)  # the first converts nothing (the model is given) but migrates the database
    try:
        for server in servers[1:]:
            server.start(timeout=300)
        urls = [s.url for s in servers]
        wave(urls, len(urls), MESSAGES, 4)  # warm-up, every replica
        runs = [wave(urls, USERS, MESSAGES, max_tokens, first=n * USERS) for n in range(opts.pick(3, 2))]
    finally:
        for server in servers:
            server.stop(timeout=30)
    ok = [t for w in runs for t in w.timings if t.ok]
    failed = [t for w in runs for t in w.timings if not t.ok]
    return {"tps": median([count_tokens(tokenizer, [t.text for t in w.timings if t.ok]) / w.wall for w in runs]),
            "p95": p95([t.total for t in ok]), "n": len(ok) + len(failed), "failed": len(failed),
            "threads": threads}


def run(opts: Options) -> Result:
    from tests.postgres import PostgresCluster

    bin_dir, why = PostgresCluster.find()
    if bin_dir is None:
        return Result("replicas", [Row("Two web replicas against one", "skipped", "", "", why)])
    max_tokens = opts.pick(48, 32)
    tokenizer = AutoTokenizer.from_pretrained(opts.model_dir)
    cluster = PostgresCluster(bin_dir)
    try:
        stats = {n: _measure(opts, n, cluster.create_database(), max_tokens, tokenizer) for n in (1, 2)}
    finally:
        cluster.stop()
    one, two = stats[1], stats[2]
    table = Table(f"{USERS} streaming users, {max_tokens} tokens max per reply, one PostgreSQL database",
                  ["replicas", "torch threads each", "replies", "failed", "throughput tok/s", "× 1 replica",
                   "latency p95", "p95 × 1 replica"],
                  [[n, s["threads"], s["n"], s["failed"], f"{s['tps']:.1f}", ratio(s["tps"], one["tps"]),
                    secs(s["p95"]), ratio(s["p95"], one["p95"])] for n, s in stats.items()])
    rows = [
        Row(f"Two web replicas, {USERS} users: throughput", f"{two['tps']:.1f} tok/s",
            f"{one['tps']:.1f} tok/s, 1 replica", ratio(two["tps"], one["tps"]),
            f"same {os.cpu_count()} cores; {two['failed']} failed; no gain is expected on one machine"),
        Row(f"Two web replicas, {USERS} users: p95 latency", secs(two["p95"]), f"{secs(one['p95'])}, 1 replica",
            ratio(two["p95"], one["p95"]), "lower is better"),
    ]
    return Result("replicas", rows, [table])
