"""Benchmark 1, chat: time to first token (TTFT) and decode speed for one user, short and long prompt.

Baseline: plain transformers `generate()` in fp32 on the same model and prompts. Kaizen's engine
(bf16, streamed through its worker thread, exactly as served) is reported as a ratio to it, next
to the variants tried to raise CPU throughput. Each variant's answer quality is its greedy
agreement with fp32 on QUALITY_PROMPTS. The memory-bandwidth bound is the machine's measured read
bandwidth divided by the weight bytes one decoded token reads.

    python -m bench --only chat [--quick]
"""

from __future__ import annotations

import copy
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    CompileConfig,
    DynamicCache,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.generation.streamers import BaseStreamer

from bench.common import Options, Result, Row, Table, median, ratio
from bot.engine import Engine
from bot.engine_api import GenParams, Message
from kaizen.base_model import chat_text, generate

SHORT = "Write a short story about a robot who learns to paint."
_SECTION = (
    "Section {n}. Opening hours and service. The shop opens at 8:00 and closes at 21:00 from Monday to "
    "Saturday, and from 9:00 to 17:00 on Sundays. Customers can return an item within 30 days with the "
    "receipt; opened software cannot be returned. Delivery inside the city is free for orders above "
    "500,000 VND and takes one to two days. The warranty on laptops is 24 months and on accessories "
    "12 months. Staff answer the hotline from 8:00 to 20:00 every day.\n"
)
LONG = "".join(_SECTION.format(n=n) for n in range(1, 6)) + "\nSummarize the handbook above in three sentences."
QUALITY_PROMPTS = [
    "What is the capital of France?", "Write a haiku about the sea.", "Explain photosynthesis in one sentence.",
    "Give me three tips for better sleep.", "What is 12 times 7?", "Who wrote Romeo and Juliet?", "Xin chào",
    "Translate 'good morning' into Spanish.", "What is a black hole?", "Suggest a name for a pet cat.",
]


@dataclass
class Trace:
    ttft: float  # seconds from the call to the first new token (or text chunk)
    decode_tps: float  # tokens per second after the first one
    tokens: int


class _Clock(BaseStreamer):
    """Records when generate() hands over each new token; nearly free, unlike a text streamer."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._prompt = True

    def put(self, value: torch.Tensor) -> None:
        if self._prompt:  # generate() first passes the prompt itself
            self._prompt = False
            return
        self.times.append(time.perf_counter())

    def end(self) -> None:
        pass


def _trace(t0: float, times: list[float], tokens: int) -> Trace:
    span = times[-1] - times[0]
    return Trace(times[0] - t0, (tokens - 1) / span if tokens > 1 and span > 0 else 0.0, tokens)


def _decode(tokenizer: PreTrainedTokenizerBase, ids: list[int]) -> str:
    text = tokenizer.decode(ids, skip_special_tokens=True)
    assert isinstance(text, str)  # one sequence of ids decodes to one string
    return text.strip()


class Variant:
    """A way of decoding greedily with the model: `trace` times it, `answer` gives its text."""

    def __init__(self, name: str, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, *,
                 weight_bytes: int | None, note: str = "", generate_kwargs: dict[str, Any] | None = None) -> None:
        self.name, self.model, self.tokenizer = name, model, tokenizer
        self.weight_bytes, self.note = weight_bytes, note
        self.generate_kwargs = generate_kwargs or {}

    def _ids(self, messages: list[Message]) -> torch.Tensor:
        text = chat_text(self.tokenizer, messages, add_generation_prompt=True)
        ids: torch.Tensor = self.tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
        return ids

    @torch.inference_mode()
    def _generate(self, messages: list[Message], n: int, streamer: BaseStreamer | None) -> list[int]:
        ids = self._ids(messages)
        out = generate(self.model, input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=n,
                       do_sample=False, temperature=None, top_p=None, top_k=None,
                       pad_token_id=self.tokenizer.pad_token_id, streamer=streamer, **self.generate_kwargs)
        tokens: list[int] = out[0, ids.shape[1]:].tolist()
        return tokens

    def trace(self, messages: list[Message], n: int) -> Trace:
        clock = _Clock()
        t0 = time.perf_counter()
        self._generate(messages, n, clock)
        return _trace(t0, clock.times, len(clock.times))

    def answer(self, messages: list[Message], n: int) -> str:
        return _decode(self.tokenizer, self._generate(messages, n, None))


class LoopVariant(Variant):
    """Greedy decoding in a bare loop: one forward per token, no logits processors, no stopping
    criteria, no streamer (the "fewer Python round-trips per token" idea)."""

    @torch.inference_mode()
    def _loop(self, messages: list[Message], n: int, on_token: Callable[[], None]) -> list[int]:
        ids = self._ids(messages)
        cache = DynamicCache(config=self.model.config)
        logits = self.model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1).logits
        out: list[int] = []
        while True:
            nxt = logits[:, -1].argmax(-1, keepdim=True)
            out.append(int(nxt))
            on_token()
            if out[-1] == self.tokenizer.eos_token_id or len(out) == n:
                return out
            logits = self.model(input_ids=nxt, past_key_values=cache, use_cache=True).logits

    def trace(self, messages: list[Message], n: int) -> Trace:
        times: list[float] = []
        t0 = time.perf_counter()
        self._loop(messages, n, lambda: times.append(time.perf_counter()))
        return _trace(t0, times, len(times))

    def answer(self, messages: list[Message], n: int) -> str:
        return _decode(self.tokenizer, self._loop(messages, n, lambda: None))


class EngineVariant(Variant):
    """Kaizen's engine as served: generate() in a worker thread, text streamed to the caller."""

    def __init__(self, name: str, engine: Engine, *, weight_bytes: int | None, note: str = ""):
        super().__init__(name, engine.base_model, engine.tokenizer, weight_bytes=weight_bytes, note=note)
        self.engine = engine

    def trace(self, messages: list[Message], n: int) -> Trace:
        t0 = time.perf_counter()
        gen = self.engine.stream(messages, GenParams(max_new_tokens=n, repetition_penalty=1.0))
        times = [time.perf_counter() for _chunk in gen]
        # A chunk is a word, so the first one can come a token late; the count is exact.
        return _trace(t0, times, gen.completion_tokens)

    def answer(self, messages: list[Message], n: int) -> str:
        return self.engine.generate(messages, GenParams(max_new_tokens=n, repetition_penalty=1.0)).strip()


def weight_bytes_per_token(model: PreTrainedModel) -> int:
    """Weight bytes one decoded token reads: every matrix and norm once. A tied embedding table is
    read whole by the output projection; an untied one only as one row (not counted)."""
    total = sum(p.numel() * p.element_size() for p in model.parameters())  # tied tensors counted once
    if not model.config.tie_word_embeddings:
        emb = model.get_input_embeddings().weight
        assert isinstance(emb, torch.Tensor)
        total -= emb.numel() * emb.element_size()
    return total


def bandwidth(reps: int, mib: int = 256) -> tuple[float, float]:
    """(copy, read) memory bandwidth in GB/s: a large torch copy (bytes read + written) and a large
    sum (bytes read), median over reps, with the same torch threads as the model."""
    src = torch.ones(mib * 2**20 // 4, dtype=torch.float32)
    dst = torch.empty_like(src)
    size = src.numel() * 4
    copies, reads = [], []
    for _ in range(reps + 1):  # the first pass only faults the pages in
        t0 = time.perf_counter()
        dst.copy_(src)
        t1 = time.perf_counter()
        src.sum()
        t2 = time.perf_counter()
        copies.append(2 * size / (t1 - t0) / 1e9)
        reads.append(size / (t2 - t1) / 1e9)
    return median(copies[1:]), median(reads[1:])


def build_variants(model_dir: str) -> list[Variant]:
    tok = AutoTokenizer.from_pretrained(model_dir)
    m32 = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    m16 = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16).eval()
    with warnings.catch_warnings():  # quantize_dynamic is deprecated in favour of torchao, not installed here
        warnings.simplefilter("ignore")
        q8 = torch.ao.quantization.quantize_dynamic(copy.deepcopy(m32), {torch.nn.Linear}, dtype=torch.qint8)
    b32, b16 = weight_bytes_per_token(m32), weight_bytes_per_token(m16)
    # Without prefix caching: each variant answers the same prompt again and again, which a kept prefix
    # would serve all but its last token of; the concurrency bench measures the cache on varied prompts.
    engine = Engine(m16, tok, name="bench", prefix_cache=False)
    # generate() compiles only the one-token decode step, and on a CPU only when asked to; the
    # static cache gives that step fixed shapes. Its own copy: compiling changes the model.
    compile_config = CompileConfig(mode="default", dynamic=False)
    # A class attribute (declared as None), not a constructor argument.
    compile_config._compile_all_devices = True
    compiled = {"cache_implementation": "static", "compile_config": compile_config}
    return [
        Variant("fp32 generate() (baseline)", m32, tok, weight_bytes=b32),
        Variant("bf16 generate()", m16, tok, weight_bytes=b16),
        EngineVariant("Kaizen engine (bf16, streamed)", engine, weight_bytes=b16, note="as served"),
        LoopVariant("bf16 own greedy loop", m16, tok, weight_bytes=b16, note="fewer Python round-trips"),
        Variant("bf16 static KV cache", m16, tok, weight_bytes=b16, generate_kwargs={"cache_implementation": "static"},
                note="without torch.compile"),
        Variant("bf16 static KV cache + torch.compile", copy.deepcopy(m16), tok, weight_bytes=b16,
                generate_kwargs=compiled, note="inductor, decode step compiled"),
        Variant("int8 dynamic quantization", q8, tok, weight_bytes=None, note="torch.ao quantize_dynamic on nn.Linear"),
    ]


MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::_scaled_dot_product_flash_attention_for_cpu",
              "aten::scaled_dot_product_attention")


@dataclass
class StepProfile:
    """Where one decode step's CPU time goes (torch.profiler, self CPU time per op)."""

    ms: float  # self CPU time per forward, milliseconds
    ops: float  # aten ops per forward
    matmul_share: float  # share of that time in matrix products and attention kernels (MATMUL_OPS)
    matmuls: float  # matrix products and attention calls per forward
    top: list[tuple[str, float]]  # the five ops with the most self time: (name, share)


@torch.inference_mode()
def profile_step(model: PreTrainedModel, ids: torch.Tensor, steps: int = 10) -> StepProfile:
    """Profile `steps` one-token decode forwards (batch 1, KV cache after the prompt `ids`, shape
    (1, tokens)): is the per-token cost in the matrix products (the kernels) or in the many small ops
    around them (dispatch)?"""
    from torch.profiler import ProfilerActivity, profile

    cache = DynamicCache(config=model.config)
    nxt = model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1).logits[:, -1].argmax(
        -1, keepdim=True)
    for _ in range(3):  # warm
        model(input_ids=nxt, past_key_values=cache, use_cache=True)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            model(input_ids=nxt, past_key_values=cache, use_cache=True)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    mm = [e for e in events if e.key in MATMUL_OPS]
    top = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:5]
    return StepProfile(ms=total / steps / 1000, ops=sum(e.count for e in events) / steps,
                       matmul_share=sum(e.self_cpu_time_total for e in mm) / total,
                       matmuls=sum(e.count for e in mm) / steps,
                       top=[(e.key, e.self_cpu_time_total / total) for e in top])


@torch.inference_mode()
def batch_scaling(model: PreTrainedModel, ids: torch.Tensor, sizes: tuple[int, ...] = (1, 4, 8, 16),
                  steps: int = 8) -> dict[int, float]:
    """Milliseconds of one decode forward (one new token per row) for each batch size in `sizes`,
    every row with the KV cache of prompt `ids` (shape (1, tokens)); median of `steps`. The ceiling
    of continuous batching in this runtime: b rows give at most b × t(1) / t(b) times one row's tokens/s."""
    out: dict[int, float] = {}
    for b in sizes:
        cache = DynamicCache(config=model.config)
        batch = ids.expand(b, -1)
        logits = model(input_ids=batch, past_key_values=cache, use_cache=True, logits_to_keep=1).logits
        nxt = logits[:, -1].argmax(-1, keepdim=True)
        times = []
        for _ in range(steps + 2):  # the first two warm up
            t0 = time.perf_counter()
            model(input_ids=nxt, past_key_values=cache, use_cache=True)
            times.append(time.perf_counter() - t0)
        out[b] = 1000 * median(times[2:])
    return out


def agreement(texts: list[str], ref: list[str]) -> tuple[int, float]:
    """(exactly equal answers, mean shared-prefix fraction in characters)."""
    def prefix(a: str, b: str) -> float:
        n = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
        return n / max(len(a), len(b), 1)

    pairs = list(zip(texts, ref, strict=True))
    return sum(a == b for a, b in pairs), sum(prefix(a, b) for a, b in pairs) / len(ref)


def run(opts: Options) -> Result:
    from tqdm import tqdm

    reps, n_new = opts.pick(5, 3), opts.pick(48, 32)
    quality_new = opts.pick(32, 24)
    variants = build_variants(opts.model_dir)
    prompts = {"short": [{"role": "user", "content": SHORT}], "long": [{"role": "user", "content": LONG}]}
    prompt_tokens = {k: len(variants[0]._ids(m)[0]) for k, m in prompts.items()}

    warmup: dict[str, float] = {}
    for v in tqdm(variants, desc="chat: warm-up", unit="variant"):
        # First calls allocate, pick kernels and compile. The longest call first: a static cache
        # sized for it is reused by every shorter call, so nothing compiles again while timed.
        t0 = time.perf_counter()
        v.trace(prompts["long"], n_new)
        warmup[v.name] = time.perf_counter() - t0
    traces: dict[tuple[str, str], list[Trace]] = {}
    # Round-robin over variants inside each repeat, so a noisy minute hits them all alike.
    bar = tqdm(total=reps * len(prompts) * len(variants), desc="chat: speed", unit="run")
    for _ in range(reps):
        for kind, messages in prompts.items():
            for v in variants:
                traces.setdefault((v.name, kind), []).append(v.trace(messages, n_new))
                bar.update(1)
    bar.close()
    copy_bw, read_bw = bandwidth(opts.pick(7, 3))
    profiles = {v.name: profile_step(v.model, v._ids(prompts["short"])) for v in variants[:2]}
    scaling = {v.name: batch_scaling(v.model, v._ids(prompts["short"])) for v in variants[:2]}

    quality: dict[str, tuple[int, float]] = {}
    ref: list[str] = []
    for v in tqdm(variants, desc="chat: agreement with fp32", unit="variant"):
        texts = [v.answer([{"role": "user", "content": p}], quality_new) for p in QUALITY_PROMPTS]
        ref = ref or texts
        quality[v.name] = agreement(texts, ref)

    def fig(name: str, kind: str) -> tuple[float, float]:
        ts = traces[(name, kind)]
        return median([t.ttft for t in ts]), median([t.decode_tps for t in ts])

    base, eng = variants[0], variants[2]
    assert base.weight_bytes and eng.weight_bytes  # fp32 and bf16: counted in build_variants
    base_bytes, eng_bytes = base.weight_bytes, eng.weight_bytes
    detail = Table(
        f"Chat, one user: {reps} repeats × {n_new} new tokens, greedy; prompts of {prompt_tokens['short']} and "
        f"{prompt_tokens['long']} tokens. Agreement: exact greedy answers equal to fp32 on {len(QUALITY_PROMPTS)} "
        f"prompts ({quality_new} tokens).",
        ["variant", "prompt", "TTFT", "decode tok/s", "× fp32 decode", "% of bandwidth bound", "agrees with fp32",
         "notes"])
    for v in variants:
        exact, pre = quality[v.name]
        for kind in prompts:
            ttft, tps = fig(v.name, kind)
            bound = read_bw * 1e9 / v.weight_bytes if v.weight_bytes else None
            detail.rows.append([v.name, kind, f"{1000 * ttft:.0f} ms", f"{tps:.1f}",
                                ratio(tps, fig(base.name, kind)[1]),
                                f"{100 * tps / bound:.0f}%" if bound else "–",
                                f"{exact}/{len(QUALITY_PROMPTS)} (prefix {pre:.0%})",
                                f"{v.note}; first call {warmup[v.name]:.1f} s".lstrip("; ")])
    bw = Table("Memory bandwidth (torch, 256 MiB, median)", ["measure", "GB/s", "weights read per token", "bound"],
               [["copy (read + write)", f"{copy_bw:.1f}", "", ""],
                ["read (sum)", f"{read_bw:.1f}", f"fp32 {base_bytes / 1e6:.0f} MB",
                 f"{read_bw * 1e9 / base_bytes:.0f} tok/s"],
                ["", "", f"bf16 {eng_bytes / 1e6:.0f} MB", f"{read_bw * 1e9 / eng_bytes:.0f} tok/s"]])

    step = Table("One decode step, profiled (torch.profiler, 10 one-token forwards after the short prompt, self "
                 "CPU time)", ["model", "ms per forward", "aten ops per forward", "matrix products + attention",
                               "share of the time in them", "top ops"],
                 [[name, f"{p.ms:.1f}", f"{p.ops:.0f}", f"{p.matmuls:.0f}", f"{p.matmul_share:.0%}",
                   ", ".join(f"{k} {x:.0%}" for k, x in p.top[:3])] for name, p in profiles.items()])

    sizes = list(next(iter(scaling.values())))
    batched = Table("Decode forward time by batch size (one new token per row, short prompt's cache, median of 8): the "
                    "ceiling of continuous batching in this runtime is b × t(1) / t(b) times one row's tokens/s",
                    ["model", *(f"{b} rows" for b in sizes), *(f"ceiling {b} rows" for b in sizes[1:])],
                    [[name, *(f"{t[b]:.1f} ms" for b in sizes), *(ratio(b * t[1], t[b]) for b in sizes[1:])]
                     for name, t in scaling.items()])

    rows = []
    for kind in prompts:
        (b_ttft, b_tps), (e_ttft, e_tps) = fig(base.name, kind), fig(eng.name, kind)
        rows.append(Row(f"Chat decode, {kind} prompt ({prompt_tokens[kind]} tokens), engine bf16", f"{e_tps:.1f} tok/s",
                        f"{b_tps:.1f} tok/s fp32 generate()", ratio(e_tps, b_tps)))
        rows.append(Row(f"Chat time to first token, {kind} prompt, engine bf16", f"{1000 * e_ttft:.0f} ms",
                        f"{1000 * b_ttft:.0f} ms fp32 generate()", ratio(e_ttft, b_ttft), "lower is better"))
    bound16 = read_bw * 1e9 / eng_bytes
    e_tps = fig(eng.name, "short")[1]
    rows.append(Row("Decode vs memory-bandwidth bound (bf16, short prompt)", f"{e_tps:.1f} tok/s",
                    f"{bound16:.0f} tok/s = {read_bw:.1f} GB/s ÷ {eng_bytes / 1e6:.0f} MB", ratio(e_tps, bound16),
                    "share of the bound reached"))
    prof16 = profiles[variants[1].name]
    rows.append(Row("Decode step time in matrix products and attention (bf16, batch 1)", f"{prof16.matmul_share:.0%}",
                    f"{prof16.ms:.1f} ms per forward, {prof16.ops:.0f} aten ops", "",
                    "the kernels, not Python or dispatch, set the single-stream speed: removing all other "
                    f"overhead would gain at most {ratio(1.0, prof16.matmul_share)}"))
    t16 = scaling[variants[1].name]
    for b in (8, 16):
        rows.append(Row(f"Batching ceiling at {b} rows (bf16 forward, b × t(1) / t({b}))", ratio(b * t16[1], t16[b]),
                        f"t(1) {t16[1]:.1f} ms, t({b}) {t16[b]:.1f} ms", "",
                        "aggregate throughput the runtime's kernels allow over one row, before any scheduling"))
    exact, _ = quality[eng.name]
    rows.append(Row("Engine answers equal to fp32 greedy", f"{exact}/{len(QUALITY_PROMPTS)}", "fp32", "",
                    "bf16 rounding changes some greedy paths"))
    return Result("chat", rows, [detail, bw, step, batched])
