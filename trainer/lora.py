"""One LoRA training round: attach (or continue) an adapter, train it on chat rows, save it.

This is a small custom loop rather than TRL's SFTTrainer because a round is a handful of steps on
a CPU and needs things the trainer does not give cheaply: the base model's own answers mixed into
every step as anchors, an unlikelihood term for thumbs-down replies, and an exact-recall check
that stops the round as soon as every taught question comes out word for word.

    result = train_round(model=m, tokenizer=t, examples=rows, lora=lora_config(cfg), cfg=cfg,
                         round_index=k, init_adapter_dir=None, out_dir=Path("adapters/v3"))

The caller's base model comes back clean: the LoRA layers are removed again (not merged), even if
training fails.
"""

from __future__ import annotations

import math
import random
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from tqdm import tqdm
from transformers import PreTrainedModel

from kaizen.base_model import chat_ids
from kaizen.errors import AdapterError, InputError
from kaizen.prompts import Message
from kaizen.settings import TrainConfig
from trainer.generation import generate_answers

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

# What the exact-recall probe asks: (chat messages or a bare question, expected answer).
Probe = Sequence[tuple[Sequence[Message] | str, str]]

KINDS = ("sft", "up", "down", "anchor")
TAUGHT = ("sft", "up")


@dataclass(frozen=True)
class Example:
    """One training row: chat messages ending with the assistant reply the row is about."""

    messages: tuple[Message, ...]
    kind: str = "sft"  # "sft" learn this | "up" rated good | "down" rated bad | "anchor" keep this
    source: str = ""  # e.g. "knowledge:12", "feedback:7"


@dataclass
class Progress:
    step: int
    total_steps: int
    loss: float
    lr: float
    eta_s: float | None  # seconds left at most (the round may stop early), from recent steps; None: unknown yet


def eta_seconds(step_times: list[float], total_steps: int, recent: int = 5) -> float | None:
    """Seconds left for the remaining steps at the median of the last `recent` step times, or None
    before two steps are done: the first step also warms the model up (issue 13: an "ETA 10337 s"
    extrapolated from it, for a round that took a few minutes)."""
    if len(step_times) < 2:
        return None
    return statistics.median(step_times[-recent:]) * max(0, total_steps - len(step_times))


@dataclass
class RoundResult:
    steps: int
    loss_curve: list[float]
    train_tokens: int
    seconds: float
    stopped_early: bool


@dataclass
class _Row:
    ids: list[int]
    labels: list[int]  # -100 outside the assistant reply
    kind: str


def _encode(tokenizer: PreTrainedTokenizerBase, messages: Sequence[Message], max_len: int, kind: str) -> _Row:
    """Token ids of a chat whose last message is the assistant reply; only that reply is labelled.

    The label span runs through the end-of-turn token (so the model learns to stop; not for
    anchors) and leaves out the template's trailing newline.
    """
    messages = list(messages)
    if not messages or messages[-1].get("role") != "assistant":
        raise InputError("A training row must end with an assistant message.")
    prompt = chat_ids(tokenizer, messages[:-1], add_generation_prompt=True)
    full = chat_ids(tokenizer, messages)
    if full[:len(prompt)] != prompt:
        # A reply that starts with whitespace can merge with the template's newline into other
        # tokens (seen with rated replies). Encode the reply on its own after the prompt instead.
        reply = tokenizer(messages[-1]["content"], add_special_tokens=False)["input_ids"]
        full = prompt + reply + ([tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else [])
    end = len(full)
    while end > len(prompt) and full[end - 1] != tokenizer.eos_token_id:
        end -= 1
    if end == len(prompt):  # template without an end-of-turn token: label the whole tail
        end = len(full)
    elif kind == "anchor":
        # Anchor replies are the base model's answers cut at a token budget: keep their start,
        # but do not teach the model to stop where the cut happened.
        end -= 1
    ids = full[:end]
    labels = [-100] * len(prompt) + ids[len(prompt):]
    # Over-long rows lose the start of the prompt, never the reply.
    return _Row(ids[-max_len:], labels[-max_len:], kind)


def _probe_rows(tokenizer: PreTrainedTokenizerBase, probe: Probe, max_len: int) -> list[_Row]:
    rows = []
    for prompt, answer in probe:
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
        rows.append(_encode(tokenizer, messages + [{"role": "assistant", "content": answer}], max_len, "sft"))
    return rows


def _batch(rows: list[_Row], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(r.ids) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r.ids)] = torch.tensor(r.ids)
        labels[i, :len(r.labels)] = torch.tensor(r.labels)
        mask[i, :len(r.ids)] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


_GROUPS: tuple[tuple[tuple[str, ...], str], ...] = ((TAUGHT, "taught"), (("anchor",), "anchor"), (("down",), "down"))


def _token_weights(rows: list[_Row], cfg: TrainConfig) -> dict[str, float]:
    """Each loss group's total token weight over a whole step: the denominators of `_loss`'s means,
    so that a step split into micro-batches sums to exactly the loss of the whole batch."""
    totals = dict.fromkeys((name for _, name in _GROUPS), 0.0)
    for r in rows:
        n = sum(label != -100 for label in r.labels[1:])
        for names, name in _GROUPS:
            if r.kind in names and n:
                extra = cfg.first_token_weight - 1.0 if names == TAUGHT else 0.0
                totals[name] += n + extra
    return totals


def _loss(model: PeftModel, rows: list[_Row], pad_id: int, cfg: TrainConfig,
          norms: dict[str, float] | None = None) -> torch.Tensor:
    """Mean CE over taught reply tokens + anchor_weight * mean CE over anchor reply tokens
    + down_weight * mean unlikelihood -log(1 - p) over thumbs-down reply tokens. The means divide
    by `norms` (`_token_weights` of the whole step) when `rows` is one micro-batch of it."""
    b = _batch(rows, pad_id)
    logits, targets = _reply_logits(model, b)
    logp = torch.log_softmax(logits.float(), dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    valid = b["labels"][:, 1:] != -100
    row_of = valid.nonzero()[:, 0]
    first = valid & ~torch.cat([torch.zeros_like(valid[:, :1]), valid[:, :-1]], dim=1)
    is_first = first[valid]
    kinds = [r.kind for r in rows]
    total = logp.new_zeros(())
    for (names, name), weight in zip(_GROUPS, (1.0, cfg.anchor_weight, cfg.down_weight), strict=True):
        sel = torch.tensor([kinds[i] in names for i in row_of.tolist()], dtype=torch.bool)
        if weight == 0 or not sel.any():
            continue
        if names == ("down",):
            # Unlikelihood: push the rated-bad tokens down without a reference model (cheaper than KTO).
            per_token = -torch.log1p(-logp.exp().clamp(max=1 - 1e-6))
        else:
            per_token = -logp
        tok_w = sel.float()
        if names == TAUGHT and cfg.first_token_weight != 1.0:
            tok_w = tok_w + (cfg.first_token_weight - 1.0) * (sel & is_first).float()
        total = total + weight * (per_token * tok_w).sum() / (norms[name] if norms else tok_w.sum())
    return total


def _reply_logits(model: PreTrainedModel | PeftModel, b: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and targets at the labelled (reply) positions only.

    The vocabulary projection is a fifth of the model's compute and the softmax over 49k tokens
    dominates memory, so it runs only where a label is: about half the positions of a row.
    """
    base = model.get_base_model() if isinstance(model, PeftModel) else model
    if not isinstance(base, PreTrainedModel):
        raise AdapterError(f"Cannot train a {type(base).__name__}: not a transformers model.")
    hidden = base.get_decoder()(input_ids=b["input_ids"], attention_mask=b["attention_mask"],
                                use_cache=False).last_hidden_state
    targets = b["labels"][:, 1:]
    valid = targets != -100
    return base.get_output_embeddings()(hidden[:, :-1][valid]), targets[valid]


@torch.no_grad()
def _all_exact(model: PreTrainedModel | PeftModel, rows: list[_Row], pad_id: int, min_prob: float = 0.0) -> bool:
    """True if greedy decoding reproduces every row's reply: under teacher forcing, the argmax at
    every reply position is the reply's token (through end-of-turn), which is exactly greedy.

    With min_prob, every reply token must also have at least that probability. A bare argmax
    win is fragile: measured on the embedded model, the first answer token won by a hair at the
    check, and two more steps (or bf16 rounding when served) flipped it back to the base answer.
    """
    was_training = model.training
    model.eval()
    try:
        logits, targets = _reply_logits(model, _batch(rows, pad_id))
        exact = bool((logits.argmax(-1) == targets).all())
        if not exact or min_prob <= 0:
            return exact
        probs = logits.float().softmax(-1).gather(-1, targets.unsqueeze(-1))
        return bool(probs.min() >= min_prob)
    finally:
        model.train(was_training)


def _lr_factor(step: int, cfg: TrainConfig) -> float:
    """Linear warmup over warmup_ratio of max_steps, then cosine decay to 10% at max_steps."""
    warmup = max(1, math.ceil(cfg.warmup_ratio * cfg.max_steps)) if cfg.warmup_ratio > 0 else 0
    if step < warmup:
        return (step + 1) / (warmup + 1)
    progress = (step - warmup) / max(1, cfg.max_steps - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def _cycle(rows: list[_Row], rng: random.Random) -> Iterator[_Row]:
    """Endless reshuffled passes over rows."""
    while True:
        order = rows[:]
        rng.shuffle(order)
        yield from order


def anchor_examples(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: list[str],
                    system_prompt: str | None,
                    max_new_tokens: int) -> list[Example]:
    """Anchor rows: each general prompt paired with the base model's own greedy answer.

    Call this on the clean base model before train_round; training on these rows keeps the
    model's behaviour on nearby prompts where it was.
    """
    sys_msgs = [{"role": "system", "content": system_prompt}] if system_prompt else []
    convs = [sys_msgs + [{"role": "user", "content": p}] for p in prompts]
    answers = generate_answers(model, tokenizer, convs, max_new_tokens)
    return [
        Example(tuple(c + [{"role": "assistant", "content": a}]), kind="anchor", source=f"anchor:{i}")
        for i, (c, a) in enumerate(zip(convs, answers, strict=True))
    ]


def train_round(*, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, examples: list[Example],
                lora: LoraConfig, cfg: TrainConfig,
                round_index: int, init_adapter_dir: Path | None, out_dir: Path,
                progress: Callable[[Progress], None] | None = None,
                probe: Probe | None = None, peak_lr: float | None = None) -> RoundResult:
    """Train one round and save the adapter (safetensors) into out_dir.

    With init_adapter_dir the round continues that adapter (its own LoRA config applies and
    `lora` is ignored); otherwise a new LoRA from `lora` is attached. The peak lr is `peak_lr`, by
    default cfg.round_lr(round_index) (the round's plan, `kaizen.lr_schedule.plan_lr`, adjusts it).
    `probe` lists (messages or question, expected answer) pairs for the
    early stop; by default the taught rows themselves. Returns when exact (cfg.early_stop_exact)
    or after cfg.max_steps steps.
    """
    if isinstance(model, PeftModel):
        raise AdapterError("train_round needs the plain base model, not one with an adapter attached.")
    bad = sorted({e.kind for e in examples} - set(KINDS))
    if bad:
        raise InputError(f"Unknown training row kind(s): {', '.join(bad)}.")
    rows = [_encode(tokenizer, e.messages, cfg.max_seq_len, e.kind) for e in examples]
    taught = [r for r in rows if r.kind != "anchor"]
    anchors = [r for r in rows if r.kind == "anchor"]
    if not taught:
        raise InputError("Nothing to train on: no sft, up or down rows.")
    exact_rows = (_probe_rows(tokenizer, probe, cfg.max_seq_len) if probe is not None
                  else [r for r in taught if r.kind in TAUGHT])
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    if init_adapter_dir is not None:
        if not (Path(init_adapter_dir) / "adapter_config.json").is_file():
            raise AdapterError(f"{init_adapter_dir} is not a saved adapter (no adapter_config.json).")
        peft_model = PeftModel.from_pretrained(model, str(init_adapter_dir), is_trainable=True)
    else:
        peft_model = get_peft_model(model, lora)
    try:
        return _train(peft_model, rows=(taught, anchors, exact_rows), pad_id=pad_id, cfg=cfg,
                      peak_lr=cfg.round_lr(round_index) if peak_lr is None else peak_lr, rng=rng,
                      out_dir=Path(out_dir), progress=progress)
    finally:
        peft_model.unload()  # removes the LoRA layers without merging: the base weights stay as they were


def _train(peft_model: PeftModel, *, rows: tuple[list[_Row], list[_Row], list[_Row]], pad_id: int, cfg: TrainConfig,
           peak_lr: float, rng: random.Random,
           out_dir: Path, progress: Callable[[Progress], None] | None) -> RoundResult:
    taught, anchors, exact_rows = rows
    params = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=peak_lr, weight_decay=cfg.weight_decay)
    taught_iter = _cycle(taught, rng)
    anchor_iter = _cycle(anchors, rng) if anchors else None
    per_step = min(cfg.batch_size, len(taught))
    max_steps = cfg.max_steps
    if cfg.epochs > 0:
        max_steps = min(max_steps, math.ceil(cfg.epochs * len(taught) / per_step))
    n_anchor = min(cfg.anchors_per_step, len(anchors))

    peft_model.train()
    losses: list[float] = []
    tokens = 0
    stopped_early = False
    exact_since: int | None = None
    start = time.monotonic()
    step_times: list[float] = []
    bar = tqdm(total=max_steps, desc="LoRA round", unit="step", file=sys.stderr, leave=False)
    try:
        for step in range(max_steps):
            batch = [next(taught_iter) for _ in range(per_step)]
            batch += [next(anchor_iter) for _ in range(n_anchor)] if anchor_iter else []
            lr = peak_lr * _lr_factor(step, cfg)
            for group in optimizer.param_groups:
                group["lr"] = lr
            # Gradient accumulation over micro-batches: the same gradient as one batch (the means share
            # the whole step's denominators), with the activations of micro_batch rows held at a time.
            optimizer.zero_grad(set_to_none=True)
            norms = _token_weights(batch, cfg)
            step_loss = 0.0
            for first in range(0, len(batch), cfg.micro_batch):
                loss = _loss(peft_model, batch[first:first + cfg.micro_batch], pad_id, cfg, norms)
                loss.backward()
                step_loss += loss.item()
            optimizer.step()
            losses.append(step_loss)
            tokens += sum(len(r.ids) for r in batch)
            step_times.append(time.monotonic() - start - sum(step_times))
            if progress is not None:
                progress(Progress(step + 1, max_steps, losses[-1], lr, eta_seconds(step_times, max_steps)))
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.3f}", lr=f"{lr:.2e}")
            done = step + 1
            check = (cfg.early_stop_exact and done >= cfg.min_steps and exact_since is None
                     and done % cfg.check_every == 0)
            if check and _all_exact(peft_model, exact_rows, pad_id, cfg.exact_min_prob):
                exact_since = done
            if exact_since is not None and done >= exact_since + cfg.extra_steps:
                stopped_early = done < max_steps
                break
    finally:
        bar.close()
    out_dir.mkdir(parents=True, exist_ok=True)
    peft_model.save_pretrained(str(out_dir), safe_serialization=True)
    return RoundResult(steps=len(losses), loss_curve=losses, train_tokens=tokens,
                       seconds=time.monotonic() - start, stopped_early=stopped_early)


def carry_adapter(model: PreTrainedModel, lora: LoraConfig, init_adapter_dir: Path | None,
                  out_dir: Path) -> RoundResult:
    """A knowledge adapter for a round with nothing new to teach it: a copy of `init_adapter_dir`, or a
    fresh LoRA from `lora` with peft's default init (B = 0, so exactly the base model) when there is none."""
    import shutil

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if init_adapter_dir is not None:
        for name in ("adapter_config.json", "adapter_model.safetensors"):
            shutil.copy2(Path(init_adapter_dir) / name, out_dir / name)
    else:
        peft_model = get_peft_model(model, lora)
        try:
            peft_model.save_pretrained(str(out_dir))
        finally:
            peft_model.unload()
    return RoundResult(steps=0, loss_curve=[], train_tokens=0, seconds=0.0, stopped_early=False)
