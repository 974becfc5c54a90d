"""Question variants for training: each seed Q&A row becomes n rows with the same answer.

The brief's recipe: 100 seed rows become 1,000 rows by wrapping each question in phrasing
templates ("Xin hỏi, {q}", "Could you tell me {q}", ...), so a fine-tuned adapter learns the
fact rather than one exact wording. ``HELDOUT_TEMPLATES`` are phrasings that never appear in
training; the evaluation asks them (``heldout_questions``) to measure paraphrase recall.

Besides the templates, a Vietnamese question also gets one casual variant without diacritics,
in lower case and without the question mark ("gio mo cua la may gio"), because many users type
that way.

``clean_question`` decides what counts as a question: text that already ends in "?" or that
reads as one (an English question word first, or a Vietnamese question particle such as
"không", "gì", "bao nhiêu") ends in exactly one "?". Anything else, such as "Xin chào" or
"Cảm ơn!", keeps its own ending, because adding "?" would change its meaning.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

from kaizen.text import fold

TRAIN_TEMPLATES: tuple[str, ...] = (
    "Xin hỏi, {q}",
    "Ê ad ơi, {q}",
    "Tư vấn giúp mình: {q}",
    "Cho mình hỏi {q}",
    "Bạn ơi, {q}",
    "Cho tôi hỏi {q}",
    "Shop ơi, {q}",
    "Bạn có thể cho mình biết {q}",
    "Mình cần hỏi: {q}",
    "Admin ơi cho hỏi {q}",
    "Làm ơn cho biết {q}",
    "Could you tell me {q}",
    "Please tell me: {q}",
    "I'd like to know {q}",
    "Hi, {q}",
    "Quick question: {q}",
    "Can you help me with this: {q}",
    "Excuse me, {q}",
)

# Never used for training: disjoint wordings that measure whether a fact generalizes.
HELDOUT_TEMPLATES: tuple[str, ...] = (
    "Mình muốn biết {q}",
    "Anh/chị cho em hỏi {q}",
    "Hỏi chút nha, {q}",
    "Ad cho em hỏi với, {q}",
    "Hey, quick question: {q}",
    "Do you know {q}",
    "Sorry to bother you, {q}",
)

_NUMBERING = re.compile(
    r"""^\s*(?:
        (?:câu|cau|question|q)\s*\d+\s*[:.)\-–]   # "Câu 3:", "Q4:", "Question 5."
      | \(?\d+\s*[.):](?=\s)                        # "1. ", "2) ", "(3) "
      | [-*•]\s                                    # bullets
    )\s*""",
    re.IGNORECASE | re.VERBOSE,
)
_TRAILING = re.compile(r"[\s?？!.。…]+$")
_FIRST_QUESTION_WORDS = frozenset(
    "what who whom whose where when why how which is are am was were do does did can could "
    "will would should may ai".split()
)
# Not "nhé" or "ạ": they end polite statements too ("Cảm ơn nhé").
_VI_FINAL_PARTICLES = frozenset("không chưa gì nào đâu sao mấy à hả nhỉ hở vậy chứ".split())
_VI_PHRASES = (
    "bao nhiêu",
    "bao giờ",
    "thế nào",
    "tại sao",
    "vì sao",
    "ở đâu",
    "là gì",
    "là ai",
    "mấy giờ",
)
# Pronoun-like first words that stay capitalized inside a sentence.
_KEEP_CAPITAL = frozenset({"I", "I'm", "I'd", "I've", "I'll"})


def clean_question(q: str) -> str:
    """Strip list numbering, collapse whitespace, capitalize, and end a question with one "?"
    (see the module docstring for what counts as a question)."""
    text = " ".join(_NUMBERING.sub("", q, count=1).split())
    if not text:
        return ""
    if not any(c.isupper() for c in text.split()[0][1:]):  # leave "iPhone", "eBay" alone
        text = text[0].upper() + text[1:]
    ending = _TRAILING.search(text)
    core = text[: ending.start()] if ending else text
    if not core:
        return text
    asked = ending is not None and any(c in "?？" for c in ending.group())
    if asked or _reads_as_question(core):
        return core + "?"
    return text


def variants(
    question: str,
    n: int = 10,
    *,
    seed: int = 0,
    templates: Sequence[str] = TRAIN_TEMPLATES,
    casual: bool = True,
) -> list[str]:
    """Up to n distinct phrasings: the cleaned question, then (with ``casual``, for text with
    diacritics) its diacritics-free lower-case form, then templates in an order set by ``seed``.
    """
    return _variants(question, n, random.Random(seed), templates, casual)


def heldout_questions(question: str) -> list[str]:
    """The question in every held-out phrasing (for evaluation only; never train on these), those in
    the question's own language first: "Do you know who founded X?", not "Mình muốn biết who founded X?"."""
    cleaned = clean_question(question)
    if not cleaned:
        return []
    vietnamese = fold(cleaned) != cleaned
    own = sorted(HELDOUT_TEMPLATES, key=lambda t: (fold(t) != t) != vietnamese)  # stable: template order kept
    return [t.format(q=_embeddable(cleaned)) for t in own]


def augment_rows(
    rows: Sequence[tuple[str, str]], n: int = 10, *, seed: int = 0
) -> list[tuple[str, str]]:
    """n (question variant, same answer) pairs for every row: 100 rows x 10 give 1,000."""
    rng = random.Random(seed)
    return [
        (variant, answer)
        for question, answer in rows
        for variant in _variants(question, n, rng, TRAIN_TEMPLATES, casual=True)
    ]


def _variants(
    question: str, n: int, rng: random.Random, templates: Sequence[str], casual: bool
) -> list[str]:
    cleaned = clean_question(question)
    if n <= 0 or not cleaned:
        return []
    embedded = _embeddable(cleaned)
    candidates = [t.format(q=embedded) for t in templates]
    rng.shuffle(candidates)
    plain = fold(cleaned)
    if casual and plain != cleaned:
        # Ahead of the templates so that it is always kept.
        candidates.insert(0, _TRAILING.sub("", plain).lower())
    chosen = [cleaned]
    seen = {cleaned.casefold()}
    for candidate in candidates:
        if len(chosen) == n:
            break
        if candidate.casefold() not in seen:
            seen.add(candidate.casefold())
            chosen.append(candidate)
    return chosen


def _reads_as_question(core: str) -> bool:
    words = core.casefold().split()
    if words[0] in _FIRST_QUESTION_WORDS or words[-1].strip(",") in _VI_FINAL_PARTICLES:
        return True
    lowered = " ".join(words)
    return any(phrase in lowered for phrase in _VI_PHRASES)


def _embeddable(cleaned: str) -> str:
    """The question as it reads after a template's lead-in: first letter lower-cased, unless
    the first word looks like an acronym or a name ("CHOREI", "BICweb", "I", "Hà Nội")."""
    words = cleaned.split()
    first = words[0]
    keep = (
        first in _KEEP_CAPITAL
        or any(c.isupper() for c in first[1:])
        or (len(words) > 1 and words[1][:1].isupper())
    )
    return cleaned if keep else cleaned[0].lower() + cleaned[1:]
