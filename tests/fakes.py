"""A chat engine without a model, for the many tests that need replies but not real weights.

`FakeEngine` implements `bot.engine_api.ChatEngine` (and its replies `ReplyStream`) after llm's
MockModel: `enqueue()` scripts the next replies (and the confidence each reports) and `history`
records every call.
`tests/bot/test_engine_api.py` checks that it behaves like the real engine where both can.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

from bot.engine_api import BASE, EngineStatus, FinishReason, GenParams, Message, cut_at_stop
from kaizen.errors import AdapterError, BusyError, InputError, ModelError

CONFIDENCE = -0.5  # the confidence (mean log-probability per token) a reply reports unless scripted otherwise


class FakeGeneration:
    """One scripted reply, a word per chunk (`bot.engine_api.ReplyStream`). Like the real one,
    creating it takes a place in the engine's queue, and reading it to the end or `close()` frees it."""

    def __init__(self, engine: FakeEngine, text: str, messages: list[Message], use_adapter: bool = True,
                 max_tokens: int | None = None, stop: tuple[str, ...] = (), confidence: float = CONFIDENCE) -> None:
        if engine.busy or engine.in_queue >= engine.max_queue:
            raise BusyError("The bot is answering too many people right now. Please try again in a moment.")
        self._engine = engine
        self._words = text.split(" ")
        self._reserved = True
        engine.in_queue += 1
        self.adapter_version = engine.adapter_version
        self._use_adapter = use_adapter
        self.adapter_applied = use_adapter and engine.adapter_version != BASE
        self.preference_applied = False  # the fake serves no preference adapter
        self.prompt_tokens = sum(engine.count_tokens(m["content"]) for m in messages)
        self.completion_tokens = 0
        self.finish_reason: FinishReason = "stop"
        self.confidence: float | None = None  # as the real one: set once read, if a token was generated
        self._confidence = confidence
        self._max_tokens = max_tokens
        self._stop = stop

    def __iter__(self) -> Iterator[str]:
        try:
            self.adapter_version = self._engine.adapter_version  # as the real one: fixed when it starts
            self.adapter_applied = self._use_adapter and self.adapter_version != BASE
            shown = ""
            for i, word in enumerate(self._words):
                if self._engine.fail_midway and i > 0:
                    raise ModelError("Generation failed: the model crashed")
                if self._max_tokens is not None and i >= self._max_tokens:  # as the real one: cut at the limit
                    self.finish_reason = "length"
                    break
                self.completion_tokens += 1
                piece = word + " " if i < len(self._words) - 1 else word
                kept, hit = cut_at_stop(shown + piece, self._stop)  # as the real one: end before a stop string
                if kept[len(shown):]:
                    yield kept[len(shown):]
                shown = kept
                if hit:
                    break
            self.confidence = self._confidence if self.completion_tokens else None
            self._engine.completed += 1
        finally:
            self.close()

    def close(self) -> None:
        if self._reserved:
            self._reserved = False
            self._engine.in_queue -= 1


class FakeEngine:
    """`bot.engine_api.ChatEngine` without a model. A token is a word; a reply is scripted with
    `enqueue()` or echoes the last message. `busy` refuses every new reply, `fail_midway` fails each
    reply after its first chunk (as the real engine reports a failed generation: ModelError)."""

    name = "fake"

    def __init__(self, max_queue: int = 32) -> None:
        self.queue: list[tuple[str, float]] = []  # (reply, its confidence)
        self.history: list[dict] = []
        self.adapter_version = BASE
        self.adapter_path: Path | None = None
        self.context_tokens = 2048
        self.refuse: set[str] = set()  # versions activate() refuses (AdapterError), as a broken adapter would be
        self.max_queue = max_queue
        self.in_queue = 0
        self.busy = False
        self.fail_midway = False
        self.completed = 0
        self.engine_status = EngineStatus()  # what status() reports; a test sets a failing external engine

    def enqueue(self, *texts: str, confidence: float = CONFIDENCE) -> None:
        """Script the next replies; each reports `confidence` once read."""
        self.queue.extend((text, confidence) for text in texts)

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def stream(self, messages: list[Message], params: GenParams = GenParams(), *,
               use_adapter: bool = True) -> FakeGeneration:
        if not messages:
            raise InputError("There is no message to answer.")
        room = self.context_tokens - self.count_tokens(messages[-1]["content"])
        if room < 1:
            raise InputError(f"The message is too long for the model's context window ({self.context_tokens} "
                             "tokens). Please shorten it.")
        if room < params.max_new_tokens:  # as Engine.stream: the reply's limit is lowered to the room left
            params = dataclasses.replace(params, max_new_tokens=room)
        self.history.append({"messages": messages, "params": params, "use_adapter": use_adapter})
        text, confidence = self.queue.pop(0) if self.queue else (f"Echo: {messages[-1]['content']}", CONFIDENCE)
        return FakeGeneration(self, text, messages, use_adapter, max_tokens=params.max_new_tokens, stop=params.stop,
                              confidence=confidence)

    def generate(self, messages: list[Message], params: GenParams = GenParams()) -> str:
        return "".join(self.stream(messages, params))

    def activate(self, version: str, path: Path | None) -> float:
        if version in self.refuse:  # as the real one refuses an adapter that does not fit the base model
            raise AdapterError(f"{version} does not fit the base model")
        self.adapter_version, self.adapter_path = (BASE, None) if path is None else (version, Path(path))
        return 0.0

    def status(self) -> EngineStatus:
        return self.engine_status
