"""The chat service: one user message in, a streamed reply out, the exchange stored at the end.

For each message it reads the emotion (which sets the tone), asks the retrieval memory for
taught answers, builds the system prompt from the persona, and streams the reply: either the
taught answer verbatim, or the model's answer with any retrieved facts in its prompt. The
exchange is stored once, when the reply is complete; a reply that fails or is abandoned half-way
is not stored, so the database never holds an exchange without its bot text.

The UI, the HTTP API and the command line all answer through `ChatService.start()`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from bot.emotion import Emotion, EmotionAnalyzer
from bot.engine_api import ChatEngine, GenParams
from feedback_db import store
from feedback_db.db import Database
from feedback_db.models import new_id, utcnow
from kaizen.errors import InputError
from kaizen.prompts import (
    INVALID_CHARS,
    build_system_prompt,
    load_persona,
    tone_instruction,
    with_context,
)
from kaizen.settings import Settings


def clean_message(message: object, max_chars: int) -> str:
    """The user's message, stripped, or a clear InputError. Empty messages are refused."""
    if not isinstance(message, str):
        raise InputError("The message must be text.")
    if len(message) > max_chars:
        raise InputError(f"The message is {len(message):,} characters; the limit is {max_chars:,}. Please shorten it.")
    if INVALID_CHARS.search(message):
        raise InputError("The message contains control characters (such as NUL) or invalid characters; "
                         "please remove them.")
    text = message.strip()
    if not text:
        raise InputError("The message is empty.")
    return text


def params_from(settings: Settings, **overrides) -> GenParams:
    values = dict(
        max_new_tokens=settings.max_new_tokens,
        temperature=settings.temperature,
        top_p=settings.top_p,
        repetition_penalty=settings.repetition_penalty,
    )
    values.update({k: v for k, v in overrides.items() if v is not None})
    return GenParams(**values)


def _word_chunks(text: str) -> Iterator[str]:
    """Stream a taught answer the way a model would: a word at a time."""
    yield from re.findall(r"\S+\s*|\s+", text)


@dataclass
class Reply:
    """A reply being streamed. Iterate it for chunks; after that, `exchange_id` is stored."""

    exchange_id: str
    conversation_id: str | None
    message: str
    emotion: Emotion
    source: str
    item_ids: list[int]
    _chunks: Iterator[str]
    _finish: object
    text: str = ""
    done: bool = False
    meta: dict = field(default_factory=dict)

    def __iter__(self) -> Iterator[str]:
        for chunk in self._chunks:
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
                 recall=None):  # noqa: ANN001 - recall is a bot.recall.KnowledgeRecall or None
        self.engine = engine
        self.db = db
        self.emotions = emotions
        self.settings = settings
        self.recall = recall

    def start(
        self,
        *,
        message: object,
        history: list[dict] | None = None,
        conversation_id: str | None = None,
        client: str = "ui",
        use_memory: bool | None = None,
        extra_system: str = "",
        **gen_overrides,
    ) -> Reply:
        """Validate and prepare a reply. Raises InputError or BusyError before anything streams."""
        text = clean_message(message, self.settings.max_message_chars)
        emotion = self.emotions.analyze(text)
        use_memory = self.settings.memory if use_memory is None else use_memory
        found = self.recall.recall(text) if (use_memory and self.recall is not None) else None
        source = found.source if found is not None else "model"
        item_ids = [h.item.id for h in found.hits] if found is not None else []
        started = time.perf_counter()
        started_at = utcnow()
        exchange_id = new_id()

        if source == "memory":
            answer = found.hits[0].item.answer
            chunks: Iterator[str] = _word_chunks(answer)
            counts = {"prompt_tokens": 0, "completion_tokens": self.engine.count_tokens(answer)}
            version = self.engine.adapter_version
            gen = None
        else:
            facts = [h.item.answer for h in found.hits] if source == "rag" else []
            system = build_system_prompt(load_persona(self.db), tone=tone_instruction(emotion.label),
                                         with_context=bool(facts))
            if extra_system:
                system += "\n\n" + extra_system
            messages = [{"role": "system", "content": system}, *(history or []),
                        {"role": "user", "content": with_context(text, facts)}]
            gen = self.engine.stream(messages, params_from(self.settings, **gen_overrides))
            chunks = iter(gen)
            counts = None
            version = None

        def finish(reply: Reply) -> None:
            if not reply.text.strip():
                reply.text = "…"  # a model that emits nothing still gets a stored, ratable reply
            with self.db.write() as s:
                ex = store.create_exchange(
                    session=s,
                    conversation_id=conversation_id,
                    user_text=text,
                    bot_text=reply.text,
                    emotion_label=emotion.label,
                    emotion_score=emotion.score,
                    adapter_version=version or gen.adapter_version,
                    source=source,
                    memory_item_ids=item_ids,
                    latency_ms=(time.perf_counter() - started) * 1000,
                    prompt_tokens=(counts or {}).get("prompt_tokens", gen.prompt_tokens if gen else 0),
                    completion_tokens=(counts or {}).get("completion_tokens", gen.completion_tokens if gen else 0),
                    started_at=started_at,
                    client=client,
                    exchange_id=exchange_id,
                )
                reply.conversation_id = ex.conversation_id
                reply.meta = {"adapter_version": ex.adapter_version, "prompt_tokens": ex.prompt_tokens,
                              "completion_tokens": ex.completion_tokens}
                if item_ids:
                    store.count_hits(session=s, item_ids=item_ids)

        return Reply(
            exchange_id=exchange_id,
            conversation_id=conversation_id,
            message=text,
            emotion=emotion,
            source=source,
            item_ids=item_ids,
            _chunks=chunks,
            _finish=finish,
        )

    def answer(self, message: str, **kw) -> Reply:
        """Start and read a whole reply (command line and non-streaming API)."""
        reply = self.start(message=message, **kw)
        reply.read()
        return reply
