"""The chat service: one user message in, a streamed reply out, the exchange stored at the end.

For each message it reads the emotion (which sets the tone), asks the retrieval memory for
taught answers, builds the system prompt from the persona, and streams the reply: either the
taught answer verbatim, or the model's answer with any retrieved facts in its prompt. The
exchange is stored once, when the reply is complete; a reply that fails or is abandoned half-way
is not stored, so the database never holds an exchange without its bot text.

The UI, the HTTP API and the command line all answer through `ChatService.start()`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from bot.emotion import Emotion, EmotionAnalyzer
from bot.engine_api import ChatEngine, GenParams, Message, ReplyLimits, ReplyStream, word_chunks
from bot.fallback import CarriesFact, NoEcho
from bot.recall import KnowledgeRecall
from feedback_db import store
from feedback_db.db import Database
from feedback_db.models import new_id, utcnow
from kaizen.errors import ContextLengthError, InputError
from kaizen.prompts import (
    INVALID_CHARS,
    Persona,
    build_system_prompt,
    load_persona,
    tone_instruction,
    with_context,
)
from kaizen.repetition import is_degenerate
from kaizen.settings import Settings


def clean_message(message: object, max_chars: int) -> str:
    """The user's message, stripped, or a clear InputError. Empty messages are refused."""
    if not isinstance(message, str):
        raise InputError("The message must be text.")
    if len(message) > max_chars:  # too long to be worth tokenizing: the context limit, checked cheaply
        raise ContextLengthError(f"The message is {len(message):,} characters; the limit is {max_chars:,}. "
                                 "Please shorten it.")
    if INVALID_CHARS.search(message):
        raise InputError("The message contains control characters (such as NUL) or invalid characters; "
                         "please remove them.")
    text = message.strip()
    if not text:
        raise InputError("The message is empty.")
    return text


TEMPLATE_TOKENS = 16  # the chat template's role markers around the system prompt and the message


def too_long(tokens: int, limit: int) -> str:
    """The message for a message over the token limit, in the units that limit it."""
    return (f"The message is {tokens:,} tokens; the limit is {limit:,} tokens (about {limit * 3 // 4:,} English "
            "words, fewer in Vietnamese). Please shorten it.")


def without_degenerate(history: list[Message]) -> list[Message]:
    """`history` without the assistant turns that loop (`kaizen.repetition.is_degenerate`) and the
    user turns they answered: a model shown its own loop copies it into the next reply (issue 13)."""
    kept: list[Message] = []
    for m in history:
        if m["role"] == "assistant" and is_degenerate(m["content"]):
            if kept and kept[-1]["role"] == "user":
                kept.pop()
            continue
        kept.append(m)
    return kept


def params_from(settings: Settings, **overrides: Any) -> GenParams:
    """The settings' generation parameters, with any non-None override applied."""
    params = GenParams(max_new_tokens=settings.max_new_tokens, temperature=settings.temperature,
                       top_p=settings.top_p, repetition_penalty=settings.repetition_penalty,
                       loop_guard=settings.loop_guard)
    return dataclasses.replace(params, **{k: v for k, v in overrides.items() if v is not None})


class MemoryReplyStream:
    """A taught answer served verbatim by the retrieval memory, with the engine's ReplyStream
    shape (`bot.engine_api.ReplyStream`), so the chat service stores both paths the same way.

    It obeys the client's limit as the model path does: an answer over the `max_tokens` a client
    asked for is cut at the last whole word that fits, with finish_reason "length", and it ends
    before a stop string as a generated reply would. The server's default cap on generation does
    not cut it (`ReplyLimits`). `prompt_tokens` counts the
    message it answers (usage is accounted the same on every path)."""

    def __init__(self, answer: str, *, adapter_version: str, limits: ReplyLimits, message: str) -> None:
        self.adapter_version = adapter_version
        self.adapter_applied = False  # no model ran
        self.preference_applied = False
        self.confidence: float | None = None  # no model wrote it
        self.prompt_tokens = limits.count_tokens(message)
        self._answer, self.finish_reason = limits.apply(answer)
        self.completion_tokens = limits.count_tokens(self._answer)

    def __iter__(self) -> Iterator[str]:
        yield from word_chunks(self._answer)

    def close(self) -> None:
        pass


@dataclass
class Reply:
    """A reply being streamed. Iterate it for chunks; after the last one the exchange is stored
    and `conversation_id` and `meta` are set. A reply abandoned half-way is not stored."""

    exchange_id: str
    conversation_id: str | None
    message: str
    emotion: Emotion
    source: str  # "memory" (taught answer verbatim) | "rag" (model, with retrieved facts) | "model"
    item_ids: list[int]
    _stream: ReplyStream
    _finish: Callable[[Reply], None]
    text: str = ""
    done: bool = False
    meta: dict[str, Any] = field(default_factory=dict)  # adapter_version, prompt_tokens, completion_tokens

    @property
    def stream(self) -> ReplyStream:
        """The engine's (or the memory's) stream behind this reply: its counts are final once read."""
        return self._stream

    def __iter__(self) -> Iterator[str]:
        for chunk in self._stream:
            self.text += chunk
            yield chunk
        self._finish(self)
        self.done = True

    def read(self) -> str:
        for _ in self:
            pass
        return self.text


class ChatService:
    def __init__(self, *, engine: ChatEngine, db: Database, emotions: EmotionAnalyzer, settings: Settings,
                 recall: KnowledgeRecall | None = None) -> None:
        self.engine = engine
        self.db = db
        self.emotions = emotions
        self.settings = settings
        self.recall = recall
        self._system_tokens: dict[Persona, int] = {}  # the longest system prompt's tokens, for the current persona

    def start(
        self,
        *,
        message: object,
        history: list[Message] | None = None,
        conversation_id: str | None = None,
        client: str = "ui",
        use_memory: bool | None = None,
        extra_system: str = "",
        **gen_overrides: Any,
    ) -> Reply:
        """Validate and prepare a reply. Raises InputError or BusyError before anything streams.

        `gen_overrides` are GenParams fields (max_new_tokens, temperature, top_p,
        repetition_penalty); None means the setting's value.
        """
        text = clean_message(message, self.settings.max_message_chars)
        tokens, limit = self.message_budget(text)
        if tokens > limit:
            raise ContextLengthError(too_long(tokens, limit))
        emotion = self.emotions.analyze(text)
        use_memory = self.settings.memory if use_memory is None else use_memory
        # The memory's calibrated retrieval is also the scope test of routing: it runs with memory
        # replies turned off too, since the adapter's knowledge must stay within the taught scope.
        found = self.recall.recall(text) if self.recall is not None else None
        in_scope = found is not None and found.source != "model"  # = KnowledgeRecall.in_scope, one lookup
        source = found.source if (found is not None and use_memory) else "model"
        hits = found.hits if (found is not None and use_memory) else ()
        started, started_at = time.perf_counter(), utcnow()
        params = params_from(self.settings, **gen_overrides)
        limits = ReplyLimits(self.engine.count_tokens, gen_overrides.get("max_new_tokens"), params.stop)
        if source == "memory":
            stream: ReplyStream = self._memory_reply(hits[0].item.answer, text, limits)
        else:
            facts = [h.item.answer for h in hits] if source == "rag" else []
            use_adapter = self.settings.adapter_routing == "always" or in_scope
            stream = self._model_reply(text, emotion, facts, without_degenerate(history or []), extra_system,
                                       params, use_adapter, limits)
            if (self.settings.fact_check and source == "rag" and self.recall is not None
                    and hits[0].score >= self.recall.memory.thresholds.fact):
                # A strong match's fact is in the reply, within the request's limits.
                stream = CarriesFact(stream, hits[0].item.answer, text, limits)
        item_ids = [h.item.id for h in hits if h.item.id > 0]  # identity answers (< 0) are not rows

        def finish(reply: Reply) -> None:
            self._store(reply, client=client, started=started, started_at=started_at)

        return Reply(exchange_id=new_id(), conversation_id=conversation_id, message=text, emotion=emotion,
                     source=source, item_ids=item_ids, _stream=stream, _finish=finish)

    def message_budget(self, text: str) -> tuple[int, int]:
        """(tokens in `text`, the most tokens a message may have): what the model reads at a time
        (`context_tokens`), less the reply's `max_new_tokens`, the system prompt (persona and the
        longest tone) and the chat template's markers. Tokens, not characters, are what limits: 4,000
        Vietnamese characters are over 2,000 tokens (issue 13)."""
        persona = load_persona(self.db)
        if persona not in self._system_tokens:  # the same for every message until the persona changes
            self._system_tokens = {persona: max(
                self.engine.count_tokens(build_system_prompt(persona, tone=tone_instruction(label)))
                for label in ("negative", "positive", "neutral"))}
        system = self._system_tokens[persona]
        limit = self.engine.context_tokens - self.settings.max_new_tokens - system - TEMPLATE_TOKENS
        return self.engine.count_tokens(text), max(1, limit)

    def _memory_reply(self, answer: str, message: str, limits: ReplyLimits) -> ReplyStream:
        """The taught answer, word for word, as the version being served would be credited with it,
        within the client's token limit and stop strings."""
        return MemoryReplyStream(answer, adapter_version=self.engine.adapter_version, limits=limits, message=message)

    def _model_reply(self, text: str, emotion: Emotion, facts: list[str], history: list[Message],
                     extra_system: str, params: GenParams, use_adapter: bool, limits: ReplyLimits) -> ReplyStream:
        """The model's answer, with the persona, the tone for `emotion` and any retrieved facts;
        the served adapter applies only if `use_adapter` (routing by scope)."""
        system = build_system_prompt(load_persona(self.db), tone=tone_instruction(emotion.label),
                                     with_context=bool(facts))
        if extra_system:
            system += "\n\n" + extra_system
        messages = [{"role": "system", "content": system}, *history,
                    {"role": "user", "content": with_context(text, facts)}]
        return NoEcho(self.engine.stream(messages, params, use_adapter=use_adapter), text, limits)

    def _store(self, reply: Reply, *, client: str, started: float, started_at: dt.datetime) -> None:
        """Store the finished exchange once, and count the memory items it used."""
        # A reply of nothing (a model that emits nothing, max_tokens too small for one word) is stored
        # as "…" so it can be rated; the client is given what was streamed, nothing.
        bot_text = reply.text if reply.text.strip() else "…"
        stream = reply.stream
        with self.db.write() as s:
            ex = store.create_exchange(
                session=s,
                conversation_id=reply.conversation_id,
                user_text=reply.message,
                bot_text=bot_text,
                emotion_label=reply.emotion.label,
                emotion_score=reply.emotion.score,
                adapter_version=stream.adapter_version,
                adapter_applied=stream.adapter_applied,
                source=reply.source,
                memory_item_ids=reply.item_ids,
                latency_ms=(time.perf_counter() - started) * 1000,
                prompt_tokens=stream.prompt_tokens,
                completion_tokens=stream.completion_tokens,
                started_at=started_at,
                client=client,
                exchange_id=reply.exchange_id,
                confidence=stream.confidence,  # None unless the model wrote the text shown
            )
            reply.conversation_id = ex.conversation_id
            reply.meta = {"adapter_version": ex.adapter_version, "adapter_applied": bool(ex.adapter_applied),
                          "preference_applied": bool(stream.preference_applied),
                          "finish_reason": stream.finish_reason,
                          "prompt_tokens": ex.prompt_tokens,
                          "completion_tokens": ex.completion_tokens}
            if reply.item_ids:
                store.count_hits(session=s, item_ids=reply.item_ids)

    def answer(self, message: str, **kw: Any) -> Reply:
        """Start and read a whole reply (command line and non-streaming API)."""
        reply = self.start(message=message, **kw)
        reply.read()
        return reply
