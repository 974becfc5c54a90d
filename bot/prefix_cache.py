"""Prompt-prefix caching for the embedded engine: the keys and values of a prompt's start, kept
so that the next prompt that starts the same way skips computing them.

Every chat prompt starts with the same system prompt in the same chat template (the persona; the
tone sentence after it may change), so most of a short prompt's prefill is the same work each
time. vLLM's automatic prefix caching and SGLang's RadixAttention (Zheng et al. 2024) keep every
prompt's blocks in a tree; this keeps a few whole prefixes per adapter group, which covers the
system prompt, the case the engine meets on every request:

- A prompt that shares at least `min_tokens` tokens with a kept prefix reuses the longest such
  share (never its last token, whose logits the prefill must compute).
- A prompt that shares too little is prefilled whole, and its start (up to `max_tokens`) is kept
  as a new prefix, the least recently used one going when there are more than `entries`.
- A prefix used by a shorter share is cut to it: it converges to the part that prompts share.

Keys and values depend on the weights: the batcher clears the cache whenever adapters are swapped.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import torch


@dataclass(eq=False)
class Prefix:
    """A kept prompt start: its token ids (shape (tokens,)) and, per layer, its keys and values
    (shape (1, kv_heads, tokens, head_dim))."""

    ids: torch.Tensor
    keys: list[torch.Tensor]
    values: list[torch.Tensor]

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    @classmethod
    def head(cls, ids: torch.Tensor, keys: list[torch.Tensor], values: list[torch.Tensor], tokens: int) -> Prefix:
        """The first `tokens` of a prompt: copies, so that the longer tensors they are cut from can be freed."""
        return cls(ids[:tokens].clone(), [k[:, :, :tokens].clone() for k in keys],
                   [v[:, :, :tokens].clone() for v in values])

    def cut(self, tokens: int) -> None:
        """Keep only the first `tokens`."""
        if tokens < len(self):
            cut = Prefix.head(self.ids, self.keys, self.values, tokens)
            self.ids, self.keys, self.values = cut.ids, cut.keys, cut.values


class PrefixCache:
    """Kept prefixes per group key (the batcher's adapter group), most recently used first."""

    def __init__(self, *, entries: int = 4, min_tokens: int = 16, max_tokens: int = 512) -> None:
        self.entries = entries
        self.min_tokens = max(1, min_tokens)
        self.max_tokens = max_tokens
        self._kept: dict[Hashable, list[Prefix]] = {}
        self.hits = 0  # prompts that reused a prefix
        self.reused_tokens = 0  # prompt tokens not computed again thanks to one

    def clear(self) -> None:
        self._kept.clear()

    def kept(self, key: Hashable) -> list[Prefix]:
        return list(self._kept.get(key, ()))

    def match(self, key: Hashable, ids: Sequence[int]) -> tuple[Prefix | None, int]:
        """(the kept prefix `ids` shares the most tokens with, how many it may reuse: at most
        len(ids) - 1), or (None, 0) if no prefix shares `min_tokens`."""
        best: tuple[Prefix | None, int] = (None, 0)
        kept = self._kept.get(key, ())
        if len(ids) <= self.min_tokens or not kept:
            return best
        prompt = torch.tensor(ids[:-1])
        for prefix in kept:
            n = min(len(prefix), len(prompt))
            if n < self.min_tokens:
                continue
            differ = torch.nonzero(prefix.ids[:n] != prompt[:n])
            shared = int(differ[0]) if len(differ) else n
            if shared >= self.min_tokens and shared > best[1]:
                best = (prefix, shared)
        return best

    def used(self, key: Hashable, prefix: Prefix, tokens: int, prompts: int) -> None:
        """`prompts` prompts reused the first `tokens` of `prefix`: cut it there and move it first."""
        prefix.cut(tokens)
        kept = self._kept.setdefault(key, [])
        if prefix in kept:
            kept.remove(prefix)
        kept.insert(0, prefix)
        self.hits += prompts
        self.reused_tokens += tokens * prompts

    def add(self, key: Hashable, ids: Sequence[int], keys: list[torch.Tensor], values: list[torch.Tensor]) -> None:
        """Keep the start of a prompt prefilled whole: `ids` and, per layer, its keys and values
        (shape (1, kv_heads, ≥ len(ids), head_dim); copied). Not if it is too short, or if a kept
        prefix already shares `min_tokens` with it."""
        n = min(len(ids) - 1, self.max_tokens)
        if n < self.min_tokens or self.match(key, ids)[0] is not None:
            return
        prefix = Prefix.head(torch.tensor(ids[:n]), keys, values, n)
        kept = self._kept.setdefault(key, [])
        kept.insert(0, prefix)
        del kept[self.entries:]
