"""Evaluation metrics for a trained adapter: greedy answers, exact recall, and drift from the base.

The gate compares a new adapter's answers with the base model's on held-out general prompts
(`trainer/data/general_prompts.json`, never trained on) and requires exact recall of the taught
answers. Everything here is plain functions over a model and tokenizer, so it runs the same on the
real model, a tiny random one, or lists of strings.
"""

from __future__ import annotations

import json
import re
import unicodedata
from importlib import resources

import torch

_SURROUNDING = " \t\r\n\"'`“”‘’«».,;:!?¡¿…()[]{}-–—*_"
_SPACE = re.compile(r"\s+")


def load_general_prompts() -> dict[str, list[str]]:
    """The fixed general prompts: {"anchor": [...], "heldout": [...]}."""
    text = resources.files("trainer.data").joinpath("general_prompts.json").read_text(encoding="utf-8")
    data = json.loads(text)
    return {"anchor": list(data["anchor"]), "heldout": list(data["heldout"])}


@torch.no_grad()
def generate_answers(model, tokenizer, conversations: list[list[dict]], max_new_tokens: int,
                     batch_size: int = 8) -> list[str]:
    """Greedy answers to each conversation (a list of chat messages ending with a user turn).

    Batched with left padding: on two CPU cores 8 prompts in one batch decode about 3-4x faster
    than one by one, and greedy outputs match the unbatched ones on the embedded model.
    """
    was_training = model.training
    model.eval()
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    answers: list[str] = []
    try:
        for start in range(0, len(conversations), batch_size):
            chunk = conversations[start:start + batch_size]
            texts = [tokenizer.apply_chat_template(c, add_generation_prompt=True, tokenize=False) for c in chunk]
            enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
            out = model.generate(
                **enc, max_new_tokens=max_new_tokens, do_sample=False,
                pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
            )
            new = out[:, enc["input_ids"].shape[1]:]
            answers.extend(tokenizer.batch_decode(new, skip_special_tokens=True))
    finally:
        tokenizer.padding_side = old_side
        model.train(was_training)
    return [a.strip() for a in answers]


def normalize_answer(s: str) -> str:
    """Casefold, NFC, collapse whitespace and strip surrounding punctuation and quotes."""
    s = unicodedata.normalize("NFC", s).casefold()
    s = _SPACE.sub(" ", s)
    return s.strip(_SURROUNDING)


def exact_recall(answers: list[str], expected: list[str]) -> float:
    """Fraction of answers equal to the expected answer after normalize_answer."""
    if len(answers) != len(expected):
        raise ValueError("answers and expected differ in length")
    if not expected:
        return 1.0
    hits = sum(normalize_answer(a) == normalize_answer(e) for a, e in zip(answers, expected))
    return hits / len(expected)


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def drift(base_answers: list[str], new_answers: list[str], tokenizer) -> float:
    """Token-level disagreement with the base answers: 1 - mean(common prefix / longer length).

    0 means every answer is identical to the base one; 1 means every answer differs from its
    first token. A prefix measure suits greedy decoding: once one token differs, the rest of the
    answer is a different continuation, so later chance matches mean nothing.
    """
    if len(base_answers) != len(new_answers):
        raise ValueError("base_answers and new_answers differ in length")
    if not base_answers:
        return 0.0
    total = 0.0
    for base, new in zip(base_answers, new_answers):
        a = tokenizer(base, add_special_tokens=False)["input_ids"]
        b = tokenizer(new, add_special_tokens=False)["input_ids"]
        longest = max(len(a), len(b))
        total += 1.0 if longest == 0 else _common_prefix(a, b) / longest
    return 1.0 - total / len(base_answers)


def same_prefix_count(base_answers: list[str], new_answers: list[str], tokenizer, tokens: int = 20) -> int:
    """How many answers share their first `tokens` tokens (or all of a shorter answer) with the base."""
    count = 0
    for base, new in zip(base_answers, new_answers, strict=True):
        a = tokenizer(base, add_special_tokens=False)["input_ids"][:tokens]
        b = tokenizer(new, add_special_tokens=False)["input_ids"][:tokens]
        count += a == b
    return count
