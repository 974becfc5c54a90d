"""Benchmark 2, concurrency: throughput and p95 latency at 1, 4, 8 and 16 concurrent streaming
users through the HTTP API of a real `kaizen serve` (bf16, memory off so every reply is generated),
with continuous batching (`KAIZEN_MAX_BATCH=16`, the default) and with one reply at a time
(`KAIZEN_MAX_BATCH=1`, the engine before batching) in the same run.

Each level runs in waves: all users start one streamed reply at the same moment, and the waves
go round the messages (one user alone asks each in turn: a single prompt that the model answers
in five tokens would make a poor baseline). Throughput is
the generated tokens of a wave over its wall time (median over waves); latency is each reply's
time to its last token, TTFT the time to its first text chunk (p95 over all replies of a level).
The baseline is one user on the same engine; the one-at-a-time engine is the second baseline.

    python -m bench --only concurrency [--quick]
"""

from __future__ import annotations

from typing import Any

from transformers import AutoTokenizer

from bench.common import (
    Options,
    Result,
    Row,
    Server,
    Table,
    count_tokens,
    median,
    p95,
    ratio,
    secs,
    wave,
)

MESSAGES = [
    "Give me three tips for better sleep.", "What is machine learning?", "Write a short poem about the sea.",
    "How do I make a cup of tea?", "What is a black hole?", "Tell me about the history of Hanoi.",
]
LEVELS = (1, 4, 8, 16)
ENGINES = {"batched": "16", "one at a time": "1"}  # KAIZEN_MAX_BATCH


def _measure(opts: Options, max_batch: str, max_tokens: int, tokenizer: Any, bar: Any) -> dict[int, dict]:
    waves = {1: opts.pick(6, 3), 4: opts.pick(3, 2), 8: opts.pick(2, 1), 16: opts.pick(2, 1)}
    stats: dict[int, dict] = {}
    data = opts.fresh_dir(f"concurrency-{max_batch}") / "data"
    with Server(data, opts.model_dir, env={"KAIZEN_MAX_BATCH": max_batch}) as server:
        wave(server.url, 1, MESSAGES, 4)  # warm-up
        for users in LEVELS:
            runs = []
            for n in range(waves[users]):  # each wave starts further down the list: one user asks each in turn
                runs.append(wave(server.url, users, MESSAGES, max_tokens, first=n * users))
                bar.update(users)
            timings = [t for w in runs for t in w.timings]
            ok = [t for t in timings if t.ok]
            ttfts = [t.ttft for t in ok if t.ttft is not None]  # None: a reply without text
            stats[users] = {
                "tps": median([count_tokens(tokenizer, [t.text for t in w.timings if t.ok]) / w.wall for w in runs]),
                "p50": median([t.total for t in ok]), "p95": p95([t.total for t in ok]),
                "ttft50": median(ttfts), "ttft95": p95(ttfts),
                "n": len(timings), "failed": len(timings) - len(ok),
                "errors": sorted({t.error for t in timings if not t.ok}),
            }
    return stats


def run(opts: Options) -> Result:
    from tqdm import tqdm

    max_tokens = opts.pick(48, 32)
    tokenizer = AutoTokenizer.from_pretrained(opts.model_dir)
    total = sum(u * w for u, w in {1: opts.pick(6, 3), 4: opts.pick(3, 2), 8: opts.pick(2, 1),
                                   16: opts.pick(2, 1)}.items()) * len(ENGINES)
    bar = tqdm(total=total, desc="concurrency: replies", unit="reply")
    by_engine = {name: _measure(opts, mb, max_tokens, tokenizer, bar) for name, mb in ENGINES.items()}
    bar.close()
    tables = []
    for name, stats in by_engine.items():
        one = stats[1]
        tables.append(Table(
            f"{name}: streaming users through POST /v1/chat/completions ({max_tokens} tokens max per reply)",
            ["users", "replies", "failed", "throughput tok/s", "× 1 user", "latency p50", "latency p95",
             "p95 × 1 user", "TTFT p50", "TTFT p95"],
            [[u, s["n"], s["failed"], f"{s['tps']:.1f}", ratio(s["tps"], one["tps"]), secs(s["p50"]),
              secs(s["p95"]), ratio(s["p95"], one["p95"]), secs(s["ttft50"]), secs(s["ttft95"])]
             for u, s in stats.items()]))
    batched, serial = by_engine["batched"], by_engine["one at a time"]
    one = batched[1]
    rows = []
    for users in LEVELS[1:]:
        s, before = batched[users], serial[users]
        note = f"{s['failed']} failed" + (f": {s['errors'][0][:80]}" if s["errors"] else "")
        rows.append(Row(f"HTTP streaming, {users} users: throughput", f"{s['tps']:.1f} tok/s",
                        f"{one['tps']:.1f} tok/s, 1 user", ratio(s["tps"], one["tps"]),
                        f"{note}; one at a time: {before['tps']:.1f} tok/s"))
        rows.append(Row(f"HTTP streaming, {users} users: p95 latency", secs(s["p95"]), f"{secs(one['p95'])}, 1 user",
                        ratio(s["p95"], one["p95"]), f"one at a time: {secs(before['p95'])}"))
    return Result("concurrency", rows, tables)
