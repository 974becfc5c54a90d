"""Benchmark 2, concurrency: throughput and p95 latency at 1, 4 and 16 concurrent streaming users
through the HTTP API of a real `kaizen serve` (bf16, memory off so every reply is generated).

Each level runs in waves: all users start one streamed reply at the same moment. Throughput is
the generated tokens of a wave over its wall time (median over waves); latency is each reply's
time to its last token, TTFT the time to its first text chunk (p95 over all replies of a level).
The baseline is one user. The engine generates one reply at a time, so throughput should stay
flat while latency grows with the queue.

    python -m bench --only concurrency [--quick]
"""

from __future__ import annotations

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
LEVELS = (1, 4, 16)


def run(opts: Options) -> Result:
    from tqdm import tqdm

    max_tokens = opts.pick(48, 32)
    waves = {1: opts.pick(6, 3), 4: opts.pick(3, 2), 16: opts.pick(2, 1)}
    tokenizer = AutoTokenizer.from_pretrained(opts.model_dir)
    stats: dict[int, dict] = {}
    with Server(opts.fresh_dir("concurrency") / "data", opts.model_dir) as server:
        wave(server.url, 1, MESSAGES, 4)  # warm-up
        bar = tqdm(total=sum(u * w for u, w in waves.items()), desc="concurrency: replies", unit="reply")
        for users in LEVELS:
            runs = []
            for _ in range(waves[users]):
                runs.append(wave(server.url, users, MESSAGES, max_tokens))
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
        bar.close()
    one = stats[1]
    table = Table(f"Streaming users through POST /v1/chat/completions ({max_tokens} tokens max per reply)",
                  ["users", "replies", "failed", "throughput tok/s", "× 1 user", "latency p50", "latency p95",
                   "TTFT p50", "TTFT p95"],
                  [[u, s["n"], s["failed"], f"{s['tps']:.1f}", ratio(s["tps"], one["tps"]), secs(s["p50"]),
                    secs(s["p95"]), secs(s["ttft50"]), secs(s["ttft95"])] for u, s in stats.items()])
    rows = []
    for users in LEVELS[1:]:
        s = stats[users]
        note = f"{s['failed']} failed" + (f": {s['errors'][0][:80]}" if s["errors"] else "")
        rows.append(Row(f"HTTP streaming, {users} users: throughput", f"{s['tps']:.1f} tok/s",
                        f"{one['tps']:.1f} tok/s, 1 user", ratio(s["tps"], one["tps"]), note))
        rows.append(Row(f"HTTP streaming, {users} users: p95 latency", secs(s["p95"]), f"{secs(one['p95'])}, 1 user",
                        ratio(s["p95"], one["p95"]), "one generation at a time: replies queue"))
    return Result("concurrency", rows, [table])
