"""Anchor rows: general prompts paired with the base model's own greedy answers.

Training on them beside the taught rows keeps the model's behaviour on nearby prompts where it
was (FACTS.md: without anchors every held-out prompt answered the taught sentence). The base
model's answers depend only on the model, the prompts, the system prompt and the length, so they
are computed once and cached on disk. Anchors that share most words with a taught question are
left out: they would hold the old answer in place against the new one.
"""

from __future__ import annotations

from pathlib import Path

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from kaizen.text import fold
from trainer.cache import cached
from trainer.dataset import Fact
from trainer.lora import Example, anchor_examples


def _words(text: str) -> set[str]:
    return set(fold(text).casefold().replace("?", " ").replace("!", " ").split())


def _overlaps(prompt: str, facts: list[Fact]) -> bool:
    """An anchor prompt that shares most words of a taught question ("Xin chào buổi sáng" vs the
    taught "Xin chào") would hold the old answer in place against the new one: leave it out."""
    words = _words(prompt)
    return any(len(words & q) >= max(1, len(q) / 2) for q in (_words(f.question) for f in facts))


def build_anchors(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, *, model_path: str,
                  prompts: list[str], system_prompt: str, max_new_tokens: int, facts: list[Fact],
                  cache_dir: Path) -> list[Example]:
    """Anchor examples for `prompts` (cached per model/prompts/system/length), without those that
    overlap a taught question in `facts`."""
    key = {"model": model_path, "prompts": prompts, "system": system_prompt, "n": max_new_tokens, "kind": "anchors"}
    rows = cached(cache_dir, key, lambda: [list(e.messages) for e in anchor_examples(
        model, tokenizer, prompts, system_prompt, max_new_tokens)])
    return [Example(tuple(m), kind="anchor", source=f"anchor:{i}") for i, m in enumerate(rows)
            if not _overlaps(m[-2]["content"], facts)]
