"""The engine's interface: what the chat service, the API and the adapter follower need from a
model that generates replies.

`bot.engine.Engine` (transformers + peft, in this process) implements it, and so does the fake
engine of the tests (`tests/conftest.py`), so both are checked against one definition (mypy
checks the structure; `tests/bot/test_engine_api.py` checks the behaviour both must share).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

from kaizen.prompts import Message

__all__ = ["BASE", "ChatEngine", "EngineStatus", "FinishReason", "GenParams", "Message", "ReplyStream", "ReplyLimits",
           "cut_at_stop", "stop_hold"]

BASE = "base"  # the adapter version name of the model without an adapter
FinishReason = Literal["stop", "length"]  # OpenAI's finish_reason values that Kaizen produces


@dataclass(frozen=True)
class GenParams:
    """How one reply is generated. Tokens are the model's tokens."""

    max_new_tokens: int = 256
    temperature: float = 0.0  # 0 (below 0.01): greedy decoding
    top_p: float = 1.0
    repetition_penalty: float = 1.0  # 1.0: off
    loop_guard: bool = True  # end the reply at the first copy of a loop (kaizen.repetition)
    stop: tuple[str, ...] = ()  # OpenAI's stop strings: the reply ends before the first one, which is not shown
    seed: int | None = None  # seeds sampling (temperature > 0) for a reproducible reply


def cut_at_stop(text: str, stops: tuple[str, ...]) -> tuple[str, bool]:
    """(`text` before the earliest stop string, whether one was found)."""
    found = [i for i in (text.find(s) for s in stops) if i >= 0]
    return (text[:min(found)], True) if found else (text, False)


@dataclass(frozen=True)
class ReplyLimits:
    """A request's limits on a reply that no model generated (a taught answer, a fallback): the
    client's own token limit (OpenAI `max_tokens`) and stop strings, counted with the engine's
    tokenizer. `max_new_tokens` None: the client set no limit, and the server's default cap on
    generation (`Settings.max_new_tokens`, there to bound a model's cost) does not cut an answer
    an admin approved."""

    count_tokens: Callable[[str], int]
    max_new_tokens: int | None
    stop: tuple[str, ...] = ()

    def apply(self, text: str) -> tuple[str, FinishReason]:
        """`text` ended before a stop string and cut to `max_new_tokens` tokens (at the last whole
        word that fits, or inside the first word if none does), with its finish_reason."""
        text, _ = cut_at_stop(text, self.stop)
        limit = self.max_new_tokens
        if limit is None or self.count_tokens(text) <= limit:
            return text, "stop"
        words = word_chunks(text)
        fits = _longest(len(words), lambda n: self.count_tokens("".join(words[:n])) <= limit)
        if fits:
            return "".join(words[:fits]).rstrip(), "length"
        return text[:_longest(len(text), lambda n: self.count_tokens(text[:n]) <= limit)], "length"


def word_chunks(text: str) -> list[str]:
    """`text` as words, each with the spaces after it: the pieces a reply is cut at and streamed in."""
    return re.findall(r"\S+\s*|\s+", text)


def _longest(n: int, fits: Callable[[int], bool]) -> int:
    """The largest k in [0, n] with fits(k), for a `fits` that holds up to some k and not after (binary search)."""
    low, high = 0, n
    while low < high:
        mid = (low + high + 1) // 2
        if fits(mid):
            low = mid
        else:
            high = mid - 1
    return low


def stop_hold(text: str, stops: tuple[str, ...]) -> int:
    """How many characters at the end of `text` to hold back while streaming: the longest end that
    is the start of a stop string ("…is Par" for stop "Paris"), which may yet complete it."""
    return max((k for s in stops for k in range(min(len(s) - 1, len(text)), 0, -1) if text.endswith(s[:k])),
               default=0)


@runtime_checkable
class ReplyStream(Protocol):
    """One reply being generated. Iterating yields text chunks; after the last one the counts are
    final. Creating it reserves a place in the engine's queue (BusyError when full)."""

    @property
    def adapter_version(self) -> str:
        """The version being served when this reply started."""
        ...

    @property
    def adapter_applied(self) -> bool:
        """Whether that version's adapter produced it (False: the base model, or no model)."""
        ...

    @property
    def preference_applied(self) -> bool:
        """Whether that version's preference adapter (KTO on ratings) was on for it."""
        ...

    @property
    def prompt_tokens(self) -> int: ...

    @property
    def finish_reason(self) -> FinishReason:
        """How the reply ended, once read: "length" if it ran into max_new_tokens, else "stop" (the
        model ended it, the loop guard cut it, or it is a taught or fallback text)."""
        ...

    @property
    def completion_tokens(self) -> int: ...

    @property
    def confidence(self) -> float | None:
        """Once read: the model's mean log-probability per reply token (nats, <= 0) under its raw
        distribution (before the repetition penalty, temperature and top-p), over the tokens counted
        in `completion_tokens`. None while unread, if no token was generated, or if the text is not
        the model's (a taught answer, a fallback, the taught fact put in its place)."""
        ...

    def __iter__(self) -> Iterator[str]: ...

    def close(self) -> None:
        """Give up the reply (and its place in the queue) without reading it."""
        ...


@dataclass(frozen=True)
class EngineStatus:
    """Which engine generates replies. `kind`: the configured one ("embedded", or "vllm": an external
    server); `serving`: the one answering now ("embedded" while an external one fails); `url`: the
    external server's; `problem`: why it is not answering (None when all is well)."""

    kind: str = "embedded"
    serving: str = "embedded"
    url: str | None = None
    problem: str | None = None


@runtime_checkable
class ChatEngine(Protocol):
    name: str  # the base model's name, shown in /v1/models
    adapter_version: str  # the version being served now ("base" or "vN")
    context_tokens: int  # prompt + reply budget, in tokens

    def count_tokens(self, text: str) -> int: ...

    def stream(self, messages: list[Message], params: GenParams = GenParams(), *,
               use_adapter: bool = True) -> ReplyStream:
        """Start a reply to `messages` (oldest turns dropped to fit the context), with the served
        adapter applied, or the base model alone when `use_adapter` is False (routing by scope).
        Raises InputError if the newest message alone does not fit, BusyError if the queue is full."""
        ...

    def generate(self, messages: list[Message], params: GenParams = GenParams()) -> str:
        """The whole reply as one string."""
        ...

    def activate(self, version: str, path: Path | None) -> float:
        """Serve the adapter in `path` as `version` (None: the base model), between two replies;
        returns the seconds the swap held the engine. Raises AdapterError and keeps the old one."""
        ...

    def status(self) -> EngineStatus:
        """Which engine answers now, and why not the configured one (shown in /healthz and the admin tab)."""
        ...
