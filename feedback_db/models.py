"""SQLAlchemy 2.0 typed models for every table Kaizen stores.

The schema itself is created and changed only by the Alembic migrations in
`feedback_db/migrations`; these classes must match them (tests/feedback_db/test_migrate.py
checks the exact columns).
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Dialect, Float, ForeignKey, Integer, String, Text, TypeDecorator, false
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

CATEGORY_LENGTH = 64  # knowledge_items.category is VARCHAR(64); PostgreSQL enforces the length, SQLite does not
SOURCE_URL_LENGTH = 1000  # knowledge_items.source_url, likewise


class CleanText(TypeDecorator[str]):
    """TEXT without NUL characters (U+0000), removed as the value is written.

    PostgreSQL refuses NUL in text ("text fields cannot contain NUL (0x00) bytes") where SQLite
    stores it; a model can emit one (the tiny test model does) and a client can send one. Removing
    it on every database keeps what is stored, and so what is exported for training, the same on
    both. The column type in the schema is plain TEXT.
    """

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        return value.replace("\x00", "") if isinstance(value, str) else value


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def new_id() -> str:
    return uuid.uuid4().hex


class Base(DeclarativeBase):
    pass


class Conversation(Base):
    __tablename__ = "conversations"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    client: Mapped[str] = mapped_column(String(16), default="ui")  # ui | api | cli
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class Exchange(Base):
    """One user message and the bot's whole reply. Stored only once the reply is complete."""

    __tablename__ = "exchanges"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    conversation_id: Mapped[str] = mapped_column(ForeignKey("conversations.id"), index=True)
    user_text: Mapped[str] = mapped_column(CleanText)
    bot_text: Mapped[str] = mapped_column(CleanText)
    emotion_label: Mapped[str] = mapped_column(String(8))
    emotion_score: Mapped[float] = mapped_column(Float)
    adapter_version: Mapped[str] = mapped_column(String(32), default="base")  # the version being served
    # Whether that version's adapter produced the reply: routing by scope answers untaught questions with the
    # base model, and memory replies use no model. None: stored before routing existed (migration 0003).
    adapter_applied: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    source: Mapped[str] = mapped_column(String(8), default="model")  # model | memory | rag
    memory_item_ids: Mapped[list] = mapped_column(JSON, default=list)
    latency_ms: Mapped[float] = mapped_column(Float, default=0.0)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, index=True)
    # The model's mean log-probability per reply token (nats, <= 0; migration 0005): how sure it was. None for
    # a reply the model did not write (memory, a fallback) and for replies stored before it was measured.
    confidence: Mapped[float | None] = mapped_column(Float, nullable=True)


class Feedback(Base):
    """The rating of one exchange; rating again replaces it (one row per exchange)."""

    __tablename__ = "feedback"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    exchange_id: Mapped[str] = mapped_column(ForeignKey("exchanges.id"), unique=True)
    rating: Mapped[str] = mapped_column(String(4))  # up | down
    correction: Mapped[str | None] = mapped_column(CleanText, nullable=True)
    status: Mapped[str] = mapped_column(String(10), default="pending", index=True)  # pending | approved | rejected
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)
    reviewed_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)


class KnowledgeItem(Base):
    """A taught question and answer: imported knowledge, a `teach`, or an approved correction.

    The retrieval memory indexes the enabled items, and training rounds learn them. Learning state:
    `train_attempts` counts rounds that trained the fact without learning it, `learned_version` is
    the adapter version whose weights first recalled it exactly, and a `parked` fact (not learned
    after `park_after` attempts) is left to the memory and no longer queued for training. A new
    answer resets all three: it is a new fact.
    """

    __tablename__ = "knowledge_items"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    question: Mapped[str] = mapped_column(CleanText)
    answer: Mapped[str] = mapped_column(CleanText)
    category: Mapped[str] = mapped_column(String(CATEGORY_LENGTH), default="")
    origin: Mapped[str] = mapped_column(String(16), default="import")  # import | teach | correction
    feedback_id: Mapped[int | None] = mapped_column(ForeignKey("feedback.id"), nullable=True)
    verbatim: Mapped[bool] = mapped_column(Boolean, default=False)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    hit_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, index=True)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)
    train_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    learned_version: Mapped[str | None] = mapped_column(String(32), nullable=True)
    parked: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # approved: served and trained (when enabled); pending: waiting for the admin's review (a Wikipedia
    # summary, a synthetic paraphrase), stored disabled and never served, trained or exported until approved.
    status: Mapped[str] = mapped_column(String(10), default="approved", server_default="approved")
    source_url: Mapped[str | None] = mapped_column(String(SOURCE_URL_LENGTH), nullable=True)  # where it came from


class Paraphrase(Base):
    """A model-written phrasing of a taught question (`origin` "synthetic"), kept only when the memory maps
    it to its item and no other. `use` splits them: "train" ones are trained beside the item's template
    variants, "check" ones are never trained and measure generality (`RoundMetrics.synthetic_recall`).
    Deleted with its item."""

    __tablename__ = "paraphrases"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("knowledge_items.id", ondelete="CASCADE"), index=True)
    question: Mapped[str] = mapped_column(CleanText)
    origin: Mapped[str] = mapped_column(String(10), default="synthetic")
    use: Mapped[str] = mapped_column(String(8), default="train")  # train | check | deleted
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class CuriousQuestion(Base):
    """A question Kaizen wants taught that no exchange holds (`origin` "proposed": a follow-up the model
    proposed from taught knowledge `item_id`), or any question the admin dismissed from the "to teach"
    queue (`status` "dismissed", matched by `key`, `kaizen.text.question_key`). Questions users asked
    and Kaizen answered badly are read from the exchanges, not stored here."""

    __tablename__ = "curious_questions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    question: Mapped[str] = mapped_column(CleanText)
    key: Mapped[str] = mapped_column(String(500), index=True)
    origin: Mapped[str] = mapped_column(String(10))  # proposed | asked
    status: Mapped[str] = mapped_column(String(10))  # open | dismissed | answered
    item_id: Mapped[int | None] = mapped_column(ForeignKey("knowledge_items.id", ondelete="SET NULL"), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class Setting(Base):
    __tablename__ = "settings"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[object] = mapped_column(JSON)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)


class TrainingRun(Base):
    __tablename__ = "training_runs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    # queued | running | promoted | rejected | passed | failed | nodata | cancelled
    status: Mapped[str] = mapped_column(String(10), default="queued", index=True)
    trigger: Mapped[str] = mapped_column(String(16), default="cli")  # cli | admin | api | schedule | teach
    round_index: Mapped[int] = mapped_column(Integer, default=0)
    pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    step: Mapped[int] = mapped_column(Integer, default=0)
    total_steps: Mapped[int] = mapped_column(Integer, default=0)
    loss: Mapped[float | None] = mapped_column(Float, nullable=True)
    lr: Mapped[float | None] = mapped_column(Float, nullable=True)
    eta_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    loss_curve: Mapped[list] = mapped_column(JSON, default=list)
    phase: Mapped[str] = mapped_column(String(16), default="")  # dataset | train | evaluate | save
    config: Mapped[dict] = mapped_column(JSON, default=dict)
    data_counts: Mapped[dict] = mapped_column(JSON, default=dict)
    adapter_version: Mapped[str | None] = mapped_column(String(32), nullable=True)
    error: Mapped[str | None] = mapped_column(CleanText, nullable=True)
    started_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    heartbeat_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    # The machine of `pid` (migration 0004): a pid means nothing on another machine. None: this one.
    host: Mapped[str | None] = mapped_column(String(64), nullable=True)


class AdapterVersion(Base):
    __tablename__ = "adapter_versions"
    version: Mapped[str] = mapped_column(String(32), primary_key=True)  # v1, v2, ...
    run_id: Mapped[int | None] = mapped_column(ForeignKey("training_runs.id"), nullable=True)
    round_index: Mapped[int] = mapped_column(Integer, default=0)
    verdict: Mapped[str] = mapped_column(String(10))  # promoted | rejected
    reason: Mapped[str] = mapped_column(CleanText, default="")
    metrics: Mapped[dict] = mapped_column(JSON, default=dict)
    path: Mapped[str] = mapped_column(CleanText)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class Lock(Base):
    """A named lock row. Inserting the row takes the lock (the primary key makes it atomic; on
    PostgreSQL an advisory lock also serializes the check-and-take, see store.acquire_lock);
    `heartbeat_at`, and `pid` on the same `host`, let a later process recover a lock whose owner died."""

    __tablename__ = "locks"
    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner: Mapped[str] = mapped_column(String(64))
    pid: Mapped[int] = mapped_column(Integer)
    acquired_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    heartbeat_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    host: Mapped[str | None] = mapped_column(String(64), nullable=True)  # the machine of `pid`; None: this one
