"""Loops in generated text: find them while a reply is generated, and in replies already written.

A small model under greedy decoding falls into loops ("bạn là ai, bạn là ai, bạn là ai, …" until
the token limit; Holtzman et al. 2020, "The Curious Case of Neural Text Degeneration", §3).
Penalties that push down every token already seen (`repetition_penalty`, Keskar et al. 2019) also
push down the words of a retrieved fact the reply should copy, so Kaizen does not change the
distribution; it watches the reply's own tokens (never the prompt's) and ends the reply at the end
of the first copy of a loop.

A sequence `s` of length n has a *periodic tail* of period p and run r when its last r items all
equal the item p places earlier, plus the first copy: s[n-r+p:] == s[n-r:n-p] with r >= p. The
tail is a *loop* when

    r >= LoopRule.min_copies * p  and  r >= LoopRule.min_span        (a short unit repeated), or
    p >= LoopRule.long_period    and  r >= 2 * p                       (a long unit said twice),

While generating, the items are the model's tokens in a canonical form (`canonical_tokens`: case
and a leading space ignored), so "…happy to help. It's a beautiful day, and I'm happy to help." is
the same unit after a sentence start capitalized it. On the 60-prompt loop bench, the only replies
the written-text check still called loops were that one and "[Your Company Name]\n[Your
Company's Name]…" (a 6-token unit said twice), hence long_period 6 for tokens; no other reply of
the set has a 6-token unit said twice in a row.

and the reply keeps s[:n - r + p], its first copy, cut where a sentence ends (`end_of_copy`): at
the last sentence mark inside the first copy, or else at the first one within the next p - 1
items (any rotation of the unit can start the periodic tail: the first copy of "Mai, a lễn. I am
a lễn. I am a lễn." is "a lễn. I am"). A streamed reply cannot take back what it showed, so there
the cut is never before the end of the text already given out. Checking every
period up to `max_period` costs O(max_period + run) list comparisons per new token.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

__all__ = ["SEPARATORS", "Echo", "Loop", "LoopRule", "canonical_tokens", "echo_of", "end_of_copy", "find_loop",
           "held_back", "is_degenerate", "text_units", "trim_loop"]


@dataclass(frozen=True)
class LoopRule:
    """When a periodic tail counts as a loop (see the module docstring). Units are the sequence's
    items: model tokens while generating, `text_units` in written text."""

    min_copies: int = 3
    min_span: int = 12
    long_period: int = 6
    max_period: int = 64


TOKENS = LoopRule()
# Words and punctuation marks of written text: a Vietnamese syllable is one unit where it is
# about two model tokens, so the spans are shorter.
WORDS = LoopRule(min_copies=3, min_span=6, long_period=5, max_period=48)


class Loop(NamedTuple):
    period: int  # items in one copy of the repeated unit
    run: int  # items in the periodic tail, the first copy included
    keep: int  # the sequence up to the end of the first copy: s[:keep]


def _run(seq: Sequence[Hashable], p: int) -> int:
    """The run of the periodic tail of period p (0 if the last item does not repeat)."""
    n = len(seq)
    i = n - 1
    while i - p >= 0 and seq[i] == seq[i - p]:
        i -= 1
    matched = n - 1 - i
    return matched + p if matched else 0


Echo = Callable[[Sequence[Hashable]], bool]


def find_loop(seq: Sequence[Hashable], rule: LoopRule = TOKENS, echo: Echo | None = None) -> Loop | None:
    """The loop `seq` ends in, with the shortest period, or None. A periodic tail that `echo` says
    was asked for (the user's message holds it: "Repeat exactly: 🎉🎉🎉🎉🎉🎉") is no loop; once
    the tail grows past what was asked, the loop keeps the copies that were (`Loop.keep`)."""
    n = len(seq)
    for p in range(1, min(rule.max_period, n // 2) + 1):
        r = _run(seq, p)
        if not r:
            continue
        if (r >= rule.min_copies * p and r >= rule.min_span) or (p >= rule.long_period and r >= 2 * p):
            if echo is None:
                return Loop(p, r, n - r + p)
            tail = seq[n - r:]
            if echo(tail):
                continue
            asked = next((m for m in range(r - p, p, -p) if echo(tail[:m])), p)
            return Loop(p, r, n - r + asked)
    return None


def echo_of(prompt: Sequence[int]) -> Echo:
    """An `Echo` for token sequences: True when the items occur in a row in `prompt` (the
    canonical tokens of what the model was asked); one substring search of C speed per call."""
    text = "".join(map(chr, prompt))
    return lambda items: "".join(map(chr, items)) in text  # type: ignore[arg-type]  # items are token ids


def canonical_tokens(tokens: Sequence[str | None]) -> list[int]:
    """For each token id, the smallest id with the same text up to case and a leading space marker
    ("Ġ" in byte-level BPE, "▁" in SentencePiece): `canonical[id]` compares "It" with " it".
    `tokens` is the vocabulary in id order (`tokenizer.convert_ids_to_tokens(range(len(tokenizer)))`;
    None for holes). 49,152 tokens take 0.06 s."""
    first: dict[str, int] = {}
    return [first.setdefault((t or f"\0{i}").lstrip("Ġ▁").lower() or (t or ""), i) for i, t in enumerate(tokens)]


def held_back(seq: Sequence[Hashable], rule: LoopRule = TOKENS, echo: Echo | None = None) -> int:
    """How many items at the end of `seq` to hold back from the reader: those past the first copy
    of any periodic tail. If the tail turns into a loop they are cut; if it breaks off, they are
    ordinary text and go out with the next item. Normal text holds back 0-2 items. A tail that
    `echo` says was asked for is not held: it streams as it comes."""
    n = len(seq)
    held = 0
    for p in range(1, min(rule.max_period, n - 1) + 1):
        r = _run(seq, p)
        if r > p and r - p > held and not (echo is not None and echo(seq[n - r:])):
            held = r - p
    return held


_UNIT = re.compile(r"\w+|[^\w\s]")
_SENTENCE_END = re.compile(r"[.!?…\n]")
SEPARATORS = " ,;:-–—\n\t"  # dropped from the end of a reply cut at a loop


def end_of_copy(text: str, end: int, start: int = 0) -> str:
    """`text` up to the end of a loop's first copy (`text[start:end]`; what follows is at most one
    copy less one item of the loop), cut where a sentence ends: at the last sentence mark inside the
    first copy ("Bien sûr, it's a beautiful day, and I'm happy to help. It's" -> "... to help."), else
    at the first one after it, else at `end`, but never inside a word (a token can be part of a word:
    "Bạn làm, b" becomes "Bạn làm"); trailing separators dropped."""
    inside = list(_SENTENCE_END.finditer(text, start, end))
    mark = inside[-1] if inside else _SENTENCE_END.search(text, max(0, end - 1))
    if mark:
        end = mark.end()
    elif 0 < end < len(text) and text[end - 1].isalnum() and text[end].isalnum():
        space = text.rfind(" ", 0, end)
        end = space if space > 0 else end
    return text[:end].rstrip(SEPARATORS)


def text_units(text: str) -> list[str]:
    """Written text as units for the `WORDS` rule: lower-cased words and single punctuation marks."""
    return _UNIT.findall(text.lower())


def trim_loop(text: str, rule: LoopRule = WORDS) -> str:
    """`text` without the loop it ends in (cut after the first copy, trailing separators dropped);
    unchanged if it does not end in one."""
    units = list(_UNIT.finditer(text.lower()))
    loop = find_loop([m.group() for m in units], rule)
    if loop is None:
        return text
    more = units[loop.keep + loop.period - 2].end()
    start = units[loop.keep - loop.period].start()
    return end_of_copy(text[:more], units[loop.keep - 1].end(), start)


def is_degenerate(text: str, rule: LoopRule = WORDS) -> bool:
    """True if `text` ends in a loop, or some span of it repeats in a row as a loop would: such a
    reply is kept out of the history the model sees again, which it would otherwise copy."""
    units = text_units(text)
    # A loop cut at the token limit ends in it; one cut by an earlier guard may sit mid-text.
    return any(find_loop(units[:end], rule) is not None for end in range(len(units), rule.min_span - 1, -1))
