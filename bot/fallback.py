"""Fallbacks for replies the model gets wrong in ways that can be checked as they stream.

- `NoEcho`: a 135M model that has no answer often gives the question back ("Bạn tên gì?" →
  "Bạn tên gì?"), and a reply cut at a loop's first copy (`kaizen.repetition`) is often just that
  echo. While the reply's letters are still a prefix of the question's the chunks are held back (so
  an echo is never shown); if the whole reply is empty, or the question given back once or more (the
  last copy perhaps cut by the token limit), it says briefly, in the user's language, that it has no
  good answer. A reply after whole copies of the question is shown without them.
- `CarriesFact`: a 135M model does not copy facts reliably from its prompt (issue 13: "Số điện thoại
  Sương Mai Travel?" → "Số điện thoại thố línềm Sương Mai Travel." with no number). When the memory
  matched a taught item strongly, the reply must carry that item's checkable facts (`fact_keys`:
  numbers, times, prices, phone numbers, names); the reply is held back until it has them, and if
  it ends without them the item's own text is the reply.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator

from bot.engine_api import FinishReason, ReplyLimits, ReplyStream
from kaizen.text import fold

NO_ANSWER = {
    "vi": "Xin lỗi, mình chưa có câu trả lời tốt cho câu hỏi này.",
    "en": "Sorry, I don't have a good answer to that yet.",
}


def letters(text: str) -> str:
    """The letters and digits of `text`, folded and lower-cased: "Bạn tên gì?" -> "bantengi"."""
    return "".join(ch for ch in fold(text).casefold() if ch.isalnum())


def _symbols(text: str) -> bool:
    """Whether `text` has a symbol (Unicode category S: emoji, math, currency): "🎉🎉🎉" is an
    answer though it has no letters; "..." is not."""
    return any(unicodedata.category(ch)[0] == "S" for ch in text)


def language(text: str) -> str:
    """"vi" if `text` carries Vietnamese diacritics (or đ), else "en"."""
    return "vi" if fold(text) != text else "en"


class _Wrapper:
    """A `ReplyStream` over another one: the same version, flags, counts and confidence; subclasses
    change the text (and once their own text replaced the model's, its counts and no confidence)."""

    def __init__(self, stream: ReplyStream, limits: ReplyLimits | None = None) -> None:
        self._stream = stream
        self._limits = limits
        self.replaced = False  # the text is the wrapper's own (a fallback or the taught fact), not the model's
        self._own: tuple[int, FinishReason] = (0, "stop")  # (completion tokens, finish_reason) of that text

    def _replace(self, text: str) -> str:
        """`text` in place of the model's reply, within the request's limits (`ReplyLimits`)."""
        self.replaced = True
        if self._limits is None:
            return text
        text, finish = self._limits.apply(text)
        self._own = (self._limits.count_tokens(text), finish)
        return text

    @property
    def adapter_version(self) -> str:
        return self._stream.adapter_version

    @property
    def adapter_applied(self) -> bool:
        return self._stream.adapter_applied

    @property
    def preference_applied(self) -> bool:
        return self._stream.preference_applied

    @property
    def prompt_tokens(self) -> int:
        return self._stream.prompt_tokens

    @property
    def completion_tokens(self) -> int:
        return self._own[0] if self.replaced and self._limits is not None else self._stream.completion_tokens

    @property
    def finish_reason(self) -> FinishReason:
        return self._own[1] if self.replaced else self._stream.finish_reason

    @property
    def confidence(self) -> float | None:
        """The model's confidence in the text shown: None once the wrapper's own text replaced it."""
        return None if self.replaced else self._stream.confidence

    @property
    def model_confidence(self) -> float | None:
        """The model's confidence in the reply it wrote, even if a wrapper's text replaced it (calibration)."""
        inner = self._stream
        return inner.model_confidence if isinstance(inner, _Wrapper) else inner.confidence

    def close(self) -> None:
        self._stream.close()


class NoEcho(_Wrapper):
    """A `ReplyStream` that replaces an empty or echoed reply with `NO_ANSWER` (see the module)."""

    def __init__(self, stream: ReplyStream, question: str, limits: ReplyLimits | None = None) -> None:
        super().__init__(stream, limits)
        # A greeting given back ("Xin chào" -> "Xin chào!") is a reply; a question given back is not.
        asks = question.rstrip().endswith("?") or len(question.split()) >= 3
        self._question = letters(question) if asks else ""
        self._language = language(question)

    def __iter__(self) -> Iterator[str]:
        held: list[str] | None = []
        text = ""
        for chunk in self._stream:
            if held is None:
                yield chunk
                continue
            held.append(chunk)
            text += chunk
            rest = self._after_echoes(text)
            # Still (a copy of) the question, letter for letter: hold on. A symbol, such as an emoji, is in
            # no question. Past whole copies of the question, only what follows them is the reply.
            if _symbols(text) or not self._question.startswith(letters(text if rest is None else rest)):
                if rest:
                    yield rest
                else:
                    yield from held
                held = None
        if held is None:
            return
        rest = self._after_echoes(text)
        if not (letters(text) or _symbols(text)) or rest is not None:
            # Nothing; the question given back; or given back, then again up to where the token limit cut it.
            yield self._replace(NO_ANSWER[self._language])
        else:  # a part of the question only ("Xin chào" to "Xin chào, bạn là ai?"): a reply of its own
            yield from held

    def _after_echoes(self, text: str) -> str | None:
        """What follows one or more complete copies of the question at the start of `text` ("Đà Lạt có
        gì vui? Bien sûr, ..." -> "Bien sûr, ..."; "" if nothing does), or None if `text` does not start
        with one."""
        rest = None
        while self._question:
            seen = ""
            for i, ch in enumerate(text):
                seen += letters(ch)
                if seen == self._question:
                    text = rest = text[i + 1:].lstrip(" \t\n?!.,:;")
                    break
                if not self._question.startswith(seen):
                    return rest
            else:
                return rest
        return rest


_NUMBER = re.compile(r"\d(?:[\d.,:/ -]*\d)?")
_SENTENCE_START = re.compile(r"(?:^|[.!?]\s+)(\w+)")


def _digits(text: str) -> str:
    """`text` with the separators inside numbers removed: "150.000 VND, 0243 826 1234" -> "150000 VND, 02438261234"."""
    return _NUMBER.sub(lambda m: re.sub(r"\D", "", m.group()), text)


def fact_keys(fact: str, question: str) -> list[str]:
    """What a reply must contain to carry `fact`: each number, as digits only ("150.000" -> "150000",
    "8:00" -> "800"); a fact without numbers, each name the question does not already contain (a
    capitalized word, not the first of a sentence, not an all-caps unit like VND, not hyphenated),
    folded and lower-cased. No keys: nothing to check."""
    numbers = [re.sub(r"\D", "", m.group()) for m in _NUMBER.finditer(fact)]
    if numbers:
        return list(dict.fromkeys(numbers))
    asked = set(letters_words(question))
    starts = {m.group(1) for m in _SENTENCE_START.finditer(fact)}
    names = [letters(w) for w in re.findall(r"[\w-]+", fact)
             if w[:1].isupper() and w not in starts and not w.isupper() and "-" not in w]
    return list(dict.fromkeys(n for n in names if n and n not in asked))


def letters_words(text: str) -> list[str]:
    return [letters(w) for w in text.split() if letters(w)]


def carries(reply: str, keys: list[str]) -> bool:
    """Whether `reply` contains every key of `fact_keys` (numbers compared as digits)."""
    digits, words = _digits(reply), set(letters_words(reply))
    found = set(re.findall(r"\d+", digits))
    return all((k in found or k in digits) if k.isdigit() else k in words for k in keys)


class CarriesFact(_Wrapper):
    """A `ReplyStream` that holds the model's reply back until it carries `fact_keys(fact, question)`,
    and replaces it with `fact` (the matched item's text) if it ends without them (see the module)."""

    def __init__(self, stream: ReplyStream, fact: str, question: str, limits: ReplyLimits | None = None) -> None:
        super().__init__(stream, limits)
        self._fact = fact
        self._keys = fact_keys(fact, question)

    def __iter__(self) -> Iterator[str]:
        if not self._keys:  # nothing checkable: the model's reply as it comes
            yield from self._stream
            return
        held: list[str] | None = []
        text = ""
        for chunk in self._stream:
            if held is None:
                yield chunk
                continue
            held.append(chunk)
            text += chunk
            if carries(text, self._keys):
                yield from held
                held = None
        if held is not None:
            yield self._replace(self._fact)

