"""The store: every read and write of Kaizen's data goes through these functions.

UI handlers, HTTP routes, the trainer and the scheduler call these and never build queries
themselves. Every function takes keyword-only arguments, the first being the `session`
(from `Database.session()` for reads or `Database.write()` for writes; the caller owns the
transaction, so several calls can commit together).
"""

from __future__ import annotations

import datetime as dt
import os
import socket
from collections.abc import Iterable
from typing import Any, NamedTuple

from sqlalchemy import ColumnElement, and_, case, delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from feedback_db.models import (
    CATEGORY_LENGTH,
    SOURCE_URL_LENGTH,
    AdapterVersion,
    Conversation,
    CuriousQuestion,
    Exchange,
    Feedback,
    KnowledgeItem,
    Lock,
    Paraphrase,
    Setting,
    TrainingRun,
    new_id,
    utcnow,
)

HOST = socket.gethostname()[:64]  # this machine, as recorded beside a pid (runs, locks, served reports)


def pid_alive(pid: int) -> bool:
    """True if a process with this pid exists on this machine (signal 0 checks without killing)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


RATINGS = ("up", "down")
REVIEW_ACTIONS = ("approve", "reject")
PINNED_ADAPTER_KEY = "pinned_adapter"
ACTIVE_ADAPTER_KEY = "active_adapter"
ACTIVATION_REQUEST_KEY = "activation_request"  # {"version", "at"}: an explicit activation, retried even after a failure
# "served_adapter:<host>:<pid>": {"version", "wanted", "error", "at", "pid", "host", "live"}, what each serving
# process reports (set_served_adapter); a live one re-reports every SERVED_REPORT_EVERY_S seconds.
SERVED_ADAPTER_PREFIX = "served_adapter:"
SERVED_REPORT_EVERY_S = 30.0
SERVED_REPORT_STALE_S = 3 * SERVED_REPORT_EVERY_S
BASE = "base"
SOURCE_ORDER = ("memory", "rag", "model")  # where a reply came from (exchanges.source)


class StoreError(Exception):
    """Base for store errors; the edges turn them into user messages."""


class NotFound(StoreError):
    pass


class Invalid(StoreError):
    pass


class Conflict(StoreError):
    """The request no longer fits the stored state (a correction already reviewed or withdrawn)."""


def _get(session: Session, model: type, key: Any, what: str) -> Any:
    try:
        row = session.get(model, key)
    except OverflowError:  # beyond SQLite's 64-bit integers: no such row can exist
        row = None
    if row is None:
        raise NotFound(f"No {what} with id {key!r}.")
    return row


# --- conversations and exchanges -------------------------------------------------------------


def ensure_conversation(*, session: Session, conversation_id: str | None, client: str = "ui") -> Conversation:
    if conversation_id:
        conv = session.get(Conversation, conversation_id)
        if conv is not None:
            return conv
    conv = Conversation(client=client) if not conversation_id else Conversation(id=conversation_id, client=client)
    session.add(conv)
    session.flush()
    return conv


def create_exchange(
    *,
    session: Session,
    conversation_id: str | None,
    user_text: str,
    bot_text: str,
    emotion_label: str,
    emotion_score: float,
    adapter_version: str = BASE,
    adapter_applied: bool = False,
    source: str = "model",
    memory_item_ids: Iterable[int] = (),
    latency_ms: float = 0.0,
    prompt_tokens: int = 0,
    completion_tokens: int = 0,
    started_at: dt.datetime | None = None,
    client: str = "ui",
    exchange_id: str | None = None,
    confidence: float | None = None,
) -> Exchange:
    """Store a finished exchange (called once the whole reply exists, never half-way). `confidence` is
    the model's mean log-probability per reply token (nats), None if the model did not write the reply."""
    if not bot_text:
        raise Invalid("An exchange needs the bot's reply.")
    conv = ensure_conversation(session=session, conversation_id=conversation_id, client=client)
    ex = Exchange(
        id=exchange_id or new_id(),
        conversation_id=conv.id,
        user_text=user_text,
        bot_text=bot_text,
        emotion_label=emotion_label,
        emotion_score=emotion_score,
        adapter_version=adapter_version,
        adapter_applied=adapter_applied,
        source=source,
        memory_item_ids=list(memory_item_ids),
        latency_ms=latency_ms,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        started_at=started_at or utcnow(),
        confidence=confidence,
    )
    session.add(ex)
    session.flush()
    return ex


def get_exchange(*, session: Session, exchange_id: str) -> Exchange:
    return _get(session, Exchange, exchange_id, "exchange")


def list_exchanges(*, session: Session, limit: int = 100, conversation_id: str | None = None) -> list[Exchange]:
    q = select(Exchange).order_by(Exchange.created_at.desc()).limit(limit)
    if conversation_id:
        q = q.where(Exchange.conversation_id == conversation_id)
    return list(session.scalars(q))


# --- feedback ---------------------------------------------------------------------------------


def rate_exchange(
    *,
    session: Session,
    exchange_id: str,
    rating: str,
    correction: str | None = None,
    auto_approve: bool = False,
) -> Feedback:
    """Rate an exchange; rating it again replaces the earlier rating (and correction).

    A plain rating is a signal and counts at once. A correction waits for review unless
    auto_approve is on, because it teaches the bot (guarding against poisoning).
    """
    if rating not in RATINGS:
        raise Invalid(f"rating must be 'up' or 'down', not {rating!r}")
    correction = (correction or "").strip() or None
    if correction is not None and rating != "down":
        raise Invalid("A correction goes with a 'down' rating: it is the answer the user wanted instead.")
    ex = get_exchange(session=session, exchange_id=exchange_id)
    fb = session.scalar(select(Feedback).where(Feedback.exchange_id == ex.id))
    if fb is None:
        fb = Feedback(exchange_id=ex.id, rating=rating)
        session.add(fb)
    previous_correction = fb.correction
    fb.rating = rating
    fb.correction = correction
    if correction is None:
        fb.status = "approved"
    elif auto_approve:
        fb.status = "approved"
        fb.reviewed_at = utcnow()
    elif correction != previous_correction or fb.status != "approved":
        fb.status = "pending"
    session.flush()
    _sync_correction_item(session, fb, ex)
    return fb


def withdraw_rating(*, session: Session, exchange_id: str) -> bool:
    """Take back the rating of an exchange (a 👍 or 👎 clicked again): the rating and its correction
    are deleted, with the knowledge item the correction became, so no round trains on them.
    Returns whether there was a rating; raises NotFound for an unknown exchange."""
    ex = get_exchange(session=session, exchange_id=exchange_id)
    fb = session.scalar(select(Feedback).where(Feedback.exchange_id == ex.id))
    if fb is None:
        return False
    item = session.scalar(select(KnowledgeItem).where(KnowledgeItem.feedback_id == fb.id))
    if item is not None:
        session.delete(item)
        session.flush()  # the item refers to the rating: it goes first
    session.delete(fb)
    session.flush()
    return True


def _sync_correction_item(session: Session, fb: Feedback, ex: Exchange) -> KnowledgeItem | None:
    """Keep the knowledge item of a correction in step with its review state."""
    item = session.scalar(select(KnowledgeItem).where(KnowledgeItem.feedback_id == fb.id))
    correction = fb.correction
    if correction is not None and fb.status == "approved":
        if item is None:
            item = KnowledgeItem(
                question=ex.user_text, answer=correction, origin="correction", feedback_id=fb.id, verbatim=True
            )
            session.add(item)
        _set_answer(item, correction)
        item.enabled = True
        item.updated_at = utcnow()
    elif item is not None:
        item.enabled = False
        item.updated_at = utcnow()
    session.flush()
    return item


def review_feedback(
    *, session: Session, feedback_id: int, action: str, correction: str | None = None
) -> Feedback:
    """Approve or reject a correction, optionally editing its text first. Raises Conflict when the
    rating has no correction (any more): a 👎 switched to 👍 or taken back leaves none to approve."""
    if action not in REVIEW_ACTIONS:
        raise Invalid(f"action must be 'approve' or 'reject', not {action!r}")
    fb = _get(session, Feedback, feedback_id, "feedback")
    if fb.correction is None:
        raise Conflict(f"Rating {feedback_id} has no correction to review: it was rated without one, or taken back.")
    if correction is not None and correction.strip():
        fb.correction = correction.strip()
    fb.status = "approved" if action == "approve" else "rejected"
    fb.reviewed_at = utcnow()
    session.flush()
    _sync_correction_item(session, fb, get_exchange(session=session, exchange_id=fb.exchange_id))
    return fb


def get_feedback(*, session: Session, feedback_id: int) -> Feedback:
    return _get(session, Feedback, feedback_id, "feedback")


def feedback_for_exchange(*, session: Session, exchange_id: str) -> Feedback | None:
    return session.scalar(select(Feedback).where(Feedback.exchange_id == exchange_id))


def list_feedback(
    *,
    session: Session,
    status: str | None = None,
    rating: str | None = None,
    with_correction: bool | None = None,
    limit: int = 200,
) -> list[tuple[Feedback, Exchange]]:
    q = select(Feedback, Exchange).join(Exchange, Feedback.exchange_id == Exchange.id)
    if status:
        q = q.where(Feedback.status == status)
    if rating:
        q = q.where(Feedback.rating == rating)
    if with_correction is True:
        q = q.where(Feedback.correction.is_not(None))
    elif with_correction is False:
        q = q.where(Feedback.correction.is_(None))
    q = q.order_by(Feedback.updated_at.desc()).limit(limit)
    return [(fb, ex) for fb, ex in session.execute(q)]


def _trainable_rating() -> ColumnElement[bool]:
    """A rating a round learns from: an approved plain rating, or the 👎 of a correction the admin approved (the
    reply was wrong, and an admin confirmed it). A pending or rejected correction's rating waits or is dropped."""
    return and_(Feedback.status == "approved", or_(Feedback.correction.is_(None), Feedback.rating == "down"))


def ratings_since(*, session: Session, since: dt.datetime | None) -> int:
    """Trainable ratings (`_trainable_rating`) given or changed after `since` (all of them if None)."""
    q = select(func.count()).select_from(Feedback).where(_trainable_rating())
    if since is not None:
        q = q.where(Feedback.updated_at > since)
    return session.scalar(q) or 0


def rated_exchanges(*, session: Session, since: dt.datetime | None = None, ids: Iterable[int] | None = None,
                    limit: int | None = None, newest_first: bool = False) -> list[tuple[Feedback, Exchange]]:
    """Trainable ratings (`_trainable_rating`) with their exchanges (KTO rows), oldest first unless
    `newest_first`; only those rated after `since`, or only the feedback ids in `ids`, if given."""
    q = (
        select(Feedback, Exchange)
        .join(Exchange, Feedback.exchange_id == Exchange.id)
        .where(_trainable_rating())
        .order_by(Feedback.id.desc() if newest_first else Feedback.id)
    )
    if since is not None:
        q = q.where(Feedback.updated_at > since)
    if ids is not None:
        q = q.where(Feedback.id.in_(list(ids)))
    if limit is not None:
        q = q.limit(limit)
    return [(fb, ex) for fb, ex in session.execute(q)]


def rated_feedback_ids(*, session: Session, until: dt.datetime | None = None) -> list[int]:
    """Ids of the trainable ratings given at or before `until` (all if None), oldest first: a cheap
    list to sample a round's replayed ratings from."""
    q = select(Feedback.id).where(_trainable_rating()).order_by(Feedback.id)
    if until is not None:
        q = q.where(Feedback.updated_at <= until)
    return list(session.scalars(q))


# --- knowledge --------------------------------------------------------------------------------

CATEGORY_MAX = CATEGORY_LENGTH


def add_knowledge(
    *,
    session: Session,
    question: str,
    answer: str,
    category: str = "",
    origin: str = "import",
    verbatim: bool = False,
    pending: bool = False,
    source_url: str | None = None,
) -> KnowledgeItem:
    """Add an item. A `pending` item (a Wikipedia summary, a synthetic paraphrase) waits for the admin's
    review: it is stored disabled with status "pending", so nothing serves, trains or exports it until
    `approve_knowledge`. `source_url` says where it came from."""
    question, answer, category = question.strip(), answer.strip(), category.replace("\x00", "").strip()
    if not question or not answer:
        raise Invalid("A knowledge item needs a question and an answer.")
    if len(category) > CATEGORY_MAX:
        raise Invalid(f"A category is at most {CATEGORY_MAX} characters; this one has {len(category)}.")
    if source_url is not None and len(source_url) > SOURCE_URL_LENGTH:
        raise Invalid(f"A source URL is at most {SOURCE_URL_LENGTH} characters; this one has {len(source_url)}.")
    item = KnowledgeItem(question=question, answer=answer, category=category, origin=origin, verbatim=verbatim,
                         status="pending" if pending else "approved", enabled=not pending, source_url=source_url)
    session.add(item)
    session.flush()
    return item


def import_knowledge(
    *, session: Session, rows: Iterable[tuple[str, str, str]], origin: str = "import", verbatim: bool = False
) -> tuple[list[KnowledgeItem], int]:
    """Add (question, answer, category) rows, skipping exact duplicates of enabled items.

    Returns the new items and how many rows were skipped as duplicates.
    """
    existing = {
        (q.strip().casefold(), a.strip())
        for q, a in session.execute(
            select(KnowledgeItem.question, KnowledgeItem.answer).where(KnowledgeItem.enabled.is_(True))
        )
    }
    added, skipped = [], 0
    for question, answer, category in rows:
        key = (question.strip().casefold(), answer.strip())
        if key in existing:
            skipped += 1
            continue
        existing.add(key)
        added.append(
            add_knowledge(
                session=session, question=question, answer=answer, category=category, origin=origin, verbatim=verbatim
            )
        )
    return added, skipped


def get_knowledge(*, session: Session, item_id: int) -> KnowledgeItem:
    return _get(session, KnowledgeItem, item_id, "knowledge item")


def list_knowledge(
    *, session: Session, enabled_only: bool = False, limit: int | None = None, offset: int = 0,
    status: str | None = None,
) -> list[KnowledgeItem]:
    q = select(KnowledgeItem).order_by(KnowledgeItem.id).offset(min(offset, 2**63 - 1))  # SQLite's largest integer
    if enabled_only:
        q = q.where(KnowledgeItem.enabled.is_(True))
    if status is not None:
        q = q.where(KnowledgeItem.status == status)
    if limit is not None:
        q = q.limit(limit)
    return list(session.scalars(q))


def _set_answer(item: KnowledgeItem, answer: str) -> None:
    """A different answer is a new fact: its learning state starts again (the weights learned the old one)."""
    if item.answer != answer:
        item.answer = answer
        item.train_attempts, item.learned_version, item.parked = 0, None, False


def set_knowledge_answer(*, session: Session, item_id: int, answer: str) -> KnowledgeItem:
    """Edit an item's answer; a changed answer resets its learning state (see _set_answer)."""
    answer = answer.strip()
    if not answer:
        raise Invalid("A knowledge item needs an answer.")
    item = get_knowledge(session=session, item_id=item_id)
    _set_answer(item, answer)
    item.updated_at = utcnow()
    session.flush()
    return item


def set_knowledge_verbatim(*, session: Session, item_id: int, verbatim: bool) -> KnowledgeItem:
    """Serve an item's answer word for word (or let the model phrase it with the answer as context).
    How it is served is not a new fact: the learning state is kept."""
    item = get_knowledge(session=session, item_id=item_id)
    item.verbatim = verbatim
    item.updated_at = utcnow()  # the memory re-indexes it
    session.flush()
    return item


def list_training_queue(*, session: Session, limit: int | None = None) -> list[KnowledgeItem]:
    """Enabled items not learned yet and not parked, oldest first: the facts rounds still have to learn.

    Two items with the same question are both listed; the trainer keeps the newer one.
    """
    q = (select(KnowledgeItem)
         .where(KnowledgeItem.enabled.is_(True), KnowledgeItem.learned_version.is_(None),
                KnowledgeItem.parked.is_(False))
         .order_by(KnowledgeItem.id))
    if limit is not None:
        q = q.limit(limit)
    return list(session.scalars(q))


def count_training_queue(*, session: Session, untried: bool = False) -> int:
    """Facts waiting to be learned (enabled, not learned, not parked); with `untried`, only those no
    round has trained yet."""
    q = select(func.count()).select_from(KnowledgeItem).where(
        KnowledgeItem.enabled.is_(True), KnowledgeItem.learned_version.is_(None), KnowledgeItem.parked.is_(False))
    if untried:
        q = q.where(KnowledgeItem.train_attempts == 0)
    return session.scalar(q) or 0


def list_parked(*, session: Session) -> list[KnowledgeItem]:
    """Items the weights failed to learn in `park_after` rounds: served by the memory only."""
    q = select(KnowledgeItem).where(KnowledgeItem.parked.is_(True)).order_by(KnowledgeItem.id)
    return list(session.scalars(q))


def record_fact_outcomes(*, session: Session, attempted: Iterable[int], learned: Iterable[int], version: str,
                         parked: Iterable[int] = ()) -> None:
    """A round's outcome per fact, in the caller's transaction (the one that records the adapter).

    `attempted`: facts the round trained on without learning them (one more attempt each);
    `learned`: facts whose weights in `version` recall them exactly (kept if learned before);
    `parked`: facts to leave to the memory from now on.
    """
    attempted_ids, learned_ids, parked_ids = list(attempted), list(learned), list(parked)
    # updated_at is kept: it says when the fact was taught (newest answer wins, the memory re-indexes),
    # and learning state is not a new fact.
    keep = {"updated_at": KnowledgeItem.updated_at}
    if attempted_ids:
        session.execute(update(KnowledgeItem).where(KnowledgeItem.id.in_(attempted_ids))
                        .values(train_attempts=KnowledgeItem.train_attempts + 1, **keep))
    if learned_ids:
        session.execute(update(KnowledgeItem)
                        .where(KnowledgeItem.id.in_(learned_ids), KnowledgeItem.learned_version.is_(None))
                        .values(learned_version=version, **keep))
    if parked_ids:
        session.execute(update(KnowledgeItem).where(KnowledgeItem.id.in_(parked_ids)).values(parked=True, **keep))
    session.expire_all()  # bulk updates bypass the identity map


def set_knowledge_enabled(*, session: Session, item_id: int, enabled: bool) -> KnowledgeItem:
    item = get_knowledge(session=session, item_id=item_id)
    if enabled and item.status == "pending":
        raise Conflict(f"Knowledge item {item_id} is waiting for review: approve it (or delete it) instead.")
    item.enabled = enabled
    item.updated_at = utcnow()
    session.flush()
    return item


def approve_knowledge(*, session: Session, item_id: int, answer: str | None = None) -> KnowledgeItem:
    """Approve a pending item (optionally with an edited answer): from now on it is served and trained.
    Raises NotFound, or Conflict if the item is not pending."""
    item = get_knowledge(session=session, item_id=item_id)
    if item.status != "pending":
        raise Conflict(f"Knowledge item {item_id} is not waiting for review.")
    if answer is not None:
        if not answer.strip():
            raise Invalid("The answer is empty.")
        _set_answer(item, answer.strip())
    item.status, item.enabled, item.updated_at = "approved", True, utcnow()
    session.flush()
    return item


def delete_knowledge(*, session: Session, item_id: int) -> None:
    item = get_knowledge(session=session, item_id=item_id)
    session.delete(item)
    session.flush()


def count_hits(*, session: Session, item_ids: Iterable[int]) -> None:
    ids = list(item_ids)
    if ids:
        session.execute(
            update(KnowledgeItem).where(KnowledgeItem.id.in_(ids)).values(hit_count=KnowledgeItem.hit_count + 1)
        )


def knowledge_changed_since(*, session: Session, since: dt.datetime | None) -> int:
    """How many enabled items were added or changed after `since` (all of them if None)."""
    q = select(func.count()).select_from(KnowledgeItem).where(KnowledgeItem.enabled.is_(True))
    if since is not None:
        q = q.where(KnowledgeItem.updated_at > since)
    return session.scalar(q) or 0


def admin_fingerprint(*, session: Session) -> dict[str, str]:
    """One short string per admin panel that changes whenever what the panel shows changes, in this
    process or another (a scheduled round, `kaizen import`, a rating over the API): the admin tab
    polls it and refreshes only the panels whose string changed."""
    fb = session.execute(select(func.count(), func.max(Feedback.id), func.max(Feedback.updated_at))).one()
    run = session.execute(select(TrainingRun.id, TrainingRun.status, TrainingRun.finished_at)
                          .order_by(TrainingRun.id.desc()).limit(1)).first()
    versions = session.execute(select(func.count(), func.max(AdapterVersion.created_at))).one()
    return {
        "feedback": repr(tuple(fb)),
        "knowledge": repr(knowledge_fingerprint(session=session)),
        "runs": repr(tuple(run) if run else None),
        "adapters": repr((tuple(versions), get_active_adapter(session=session), get_pinned_adapter(session=session))),
    }


def knowledge_fingerprint(*, session: Session) -> tuple[int, str | None]:
    """(count, newest update) of all items: a cheap way to tell if the memory must reload."""
    count, newest = session.execute(select(func.count(), func.max(KnowledgeItem.updated_at))).one()
    return count or 0, newest.isoformat() if newest else None


# --- settings ---------------------------------------------------------------------------------


def get_setting(*, session: Session, key: str, default: Any = None) -> Any:
    row = session.get(Setting, key)
    return default if row is None else row.value


def set_setting(*, session: Session, key: str, value: Any) -> None:
    row = session.get(Setting, key)
    if row is None:
        session.add(Setting(key=key, value=value))
    else:
        row.value = value
        row.updated_at = utcnow()
    session.flush()


def get_active_adapter(*, session: Session) -> str:
    return get_setting(session=session, key=ACTIVE_ADAPTER_KEY, default=BASE) or BASE


def set_active_adapter(*, session: Session, version: str) -> None:
    if version != BASE:
        _get(session, AdapterVersion, version, "adapter version")
    set_setting(session=session, key=ACTIVE_ADAPTER_KEY, value=version)


def request_activation(*, session: Session, version: str) -> str:
    """Make `version` active as an explicit request (`kaizen activate`, the admin tab): a serving process
    tries it again even if it failed to load before. Returns the request's time (ISO), to match the
    serving process's report (`get_served_adapter`) against."""
    set_active_adapter(session=session, version=version)
    at = utcnow().isoformat()
    set_setting(session=session, key=ACTIVATION_REQUEST_KEY, value={"version": version, "at": at})
    return at


def get_activation_request(*, session: Session) -> dict[str, str] | None:
    value = get_setting(session=session, key=ACTIVATION_REQUEST_KEY, default=None)
    return value if isinstance(value, dict) else None


def set_served_adapter(*, session: Session, version: str, wanted: str, error: str | None,
                       process: dict[str, Any] | None = None) -> None:
    """What one serving process serves, the version it was asked for, and why it could not (or None).
    `process` says who reports ({"pid", "host", "live"}: live = a server that keeps following the
    active version). Each process has its own report (several web replicas share one database); a
    report of a process on this machine that no longer runs is removed."""
    proc = {"pid": os.getpid(), "host": HOST, "live": False, **(process or {})}
    key = served_report_key(str(proc["host"]), int(proc["pid"]))
    set_setting(session=session, key=key,
                value={"version": version, "wanted": wanted, "error": error, "at": utcnow().isoformat(), **proc})
    for report in served_adapters(session=session):
        if report.get("host") == HOST and report.get("pid") != proc["pid"] and not pid_alive(int(report["pid"])):
            session.execute(delete(Setting).where(Setting.key == served_report_key(HOST, int(report["pid"]))))


def served_report_key(host: str, pid: int) -> str:
    """The settings key of one process's report (fits settings.key, VARCHAR(64))."""
    return f"{SERVED_ADAPTER_PREFIX}{host[:40]}:{pid}"


def served_adapters(*, session: Session) -> list[dict[str, Any]]:
    """Every serving process's latest report (set_served_adapter), newest first."""
    rows = session.scalars(select(Setting).where(Setting.key.startswith(SERVED_ADAPTER_PREFIX)))
    reports = [r.value for r in rows if isinstance(r.value, dict) and "pid" in r.value]
    return sorted(reports, key=lambda r: str(r.get("at", "")), reverse=True)


def live_servers(reports: list[dict[str, Any]], *, alive: Any = pid_alive,
                 stale_after_s: float = SERVED_REPORT_STALE_S) -> list[dict[str, Any]]:
    """The reports of servers still running: live ones whose pid exists, on this machine; on another
    machine, those that reported within stale_after_s seconds (a live server reports every
    SERVED_REPORT_EVERY_S seconds even with nothing new)."""
    now = utcnow()

    def running(r: dict[str, Any]) -> bool:
        if not r.get("live"):
            return False
        if r.get("host") == HOST:
            return bool(alive(int(r["pid"])))
        return (now - dt.datetime.fromisoformat(str(r["at"]))).total_seconds() <= stale_after_s

    return [r for r in reports if running(r)]


def get_served_adapter(*, session: Session) -> dict[str, Any] | None:
    """The newest report of any serving process (see served_adapters for all of them)."""
    reports = served_adapters(session=session)
    return reports[0] if reports else None


def get_pinned_adapter(*, session: Session) -> str | None:
    """The version an admin activated by hand (or rolled back to) and pinned, or None.

    While a version is pinned, a round that passes the gate records its version as "passed" but does
    not activate it: nobody's manual choice is replaced behind their back (issue 13)."""
    value = get_setting(session=session, key=PINNED_ADAPTER_KEY, default=None)
    return str(value) if value else None


def set_pinned_adapter(*, session: Session, version: str | None) -> None:
    """Pin `version` (normally the one just activated by hand), or release the pin with None."""
    set_setting(session=session, key=PINNED_ADAPTER_KEY, value=version)


# --- training runs and adapter versions -------------------------------------------------------


def create_run(*, session: Session, trigger: str, round_index: int, config: dict | None = None,
               status: str = "running", pid: int | None = None) -> TrainingRun:
    """A new run row. A running run (and a queued one given `pid`) belongs to a process on this
    machine; a queued run with no pid is a request that a worker claims (claim_requested_run)."""
    if pid is None and status == "running":
        pid = os.getpid()
    run = TrainingRun(trigger=trigger, round_index=round_index, status=status, config=config or {},
                      pid=pid, host=HOST if pid is not None else None)
    session.add(run)
    session.flush()
    return run


def update_run(*, session: Session, run_id: int, **values: Any) -> TrainingRun:
    run = _get(session, TrainingRun, run_id, "training run")
    for key, value in values.items():
        if not hasattr(TrainingRun, key):
            raise Invalid(f"training_runs has no column {key!r}")
        setattr(run, key, value)
    if values.get("pid") is not None and "host" not in values:
        run.host = HOST  # a pid is recorded by a process on this machine
    run.heartbeat_at = utcnow()
    session.flush()
    return run


def get_run(*, session: Session, run_id: int) -> TrainingRun:
    return _get(session, TrainingRun, run_id, "training run")


def list_runs(*, session: Session, limit: int = 50) -> list[TrainingRun]:
    return list(session.scalars(select(TrainingRun).order_by(TrainingRun.id.desc()).limit(limit)))


def last_finished_run(*, session: Session) -> TrainingRun | None:
    return session.scalar(
        select(TrainingRun)
        .where(TrainingRun.status.in_(("promoted", "passed", "rejected")))
        .order_by(TrainingRun.id.desc())
        .limit(1)
    )


def count_new_since_last_round(*, session: Session) -> int:
    """What is new for a round: queued facts no round has trained yet (new, or given a new answer,
    which resets `train_attempts`) plus ratings given since the last finished round started.

    A fact a round trained without learning it stays queued (until parked), but is not new: it is
    trained again when something new starts a round, never as the only reason for one (issue 13: a
    scheduled round retrained the same six items 40 s after the last one)."""
    last = last_finished_run(session=session)
    since = last.started_at if last else None
    return count_training_queue(session=session, untried=True) + ratings_since(session=session, since=since)


def completed_rounds(*, session: Session) -> int:
    """Rounds that produced an adapter; the next round's index (for the lr decay)."""
    return session.scalar(select(func.count()).select_from(AdapterVersion)) or 0


def next_version(*, session: Session) -> str:
    n = 0
    for (version,) in session.execute(select(AdapterVersion.version)):
        if version.startswith("v") and version[1:].isdigit():
            n = max(n, int(version[1:]))
    return f"v{n + 1}"


def record_adapter(
    *,
    session: Session,
    version: str,
    run_id: int | None,
    round_index: int,
    verdict: str,
    reason: str,
    metrics: dict,
    path: str,
) -> AdapterVersion:
    row = AdapterVersion(
        version=version, run_id=run_id, round_index=round_index, verdict=verdict, reason=reason, metrics=metrics,
        path=path,
    )
    session.add(row)
    session.flush()
    return row


def get_adapter(*, session: Session, version: str) -> AdapterVersion:
    return _get(session, AdapterVersion, version, "adapter version")


def list_adapters(*, session: Session) -> list[AdapterVersion]:
    return list(session.scalars(select(AdapterVersion).order_by(AdapterVersion.created_at, AdapterVersion.version)))


# --- the training lock ------------------------------------------------------------------------

TRAINING_LOCK = "training"  # the one lock row: only one training round runs at a time, anywhere
STALE_LOCK_S = 30 * 60  # a holder whose heartbeat is older than this is taken to be dead


def holder_alive(*, host: str | None, pid: int | None, heartbeat_at: dt.datetime,
                 stale_after_s: float = STALE_LOCK_S, alive: Any = pid_alive) -> bool:
    """Whether the process that holds a lock or a run still lives. A heartbeat older than
    stale_after_s seconds means dead anywhere; on this machine (`host` is HOST, or None for rows
    written before hosts were recorded) a pid that no longer exists means dead at once. A pid on
    another machine says nothing here, so only its heartbeat counts."""
    if (utcnow() - heartbeat_at).total_seconds() > stale_after_s:
        return False
    if host is None or host == HOST:
        return pid is not None and bool(alive(pid))
    return True


def fail_stale_runs(*, session: Session, alive: Any = pid_alive, exclude: int | None = None,
                    stale_after_s: float = STALE_LOCK_S) -> list[int]:
    """Mark unfinished runs whose process is gone (holder_alive) as failed. A round requested by a
    web replica and not yet claimed by a worker (queued, no pid) waits, unless no worker took it
    within stale_after_s seconds."""
    failed = []
    for run in session.scalars(select(TrainingRun).where(TrainingRun.status.in_(("queued", "running")))):
        if run.id == exclude:
            continue
        if run.status == "queued" and run.pid is None:
            if (utcnow() - run.heartbeat_at).total_seconds() <= stale_after_s:
                continue
            run.error = run.error or "No training worker took this round (is a `kaizen serve --role worker` running?)."
        elif holder_alive(host=run.host, pid=run.pid, heartbeat_at=run.heartbeat_at,
                          stale_after_s=stale_after_s, alive=alive):
            continue
        run.status = "failed"
        run.error = run.error or "The training process died (killed or crashed)."
        run.finished_at = utcnow()
        failed.append(run.id)
    session.flush()
    return failed


def request_run(*, session: Session, trigger: str, force: bool = True, requeued_from: int | None = None) -> TrainingRun:
    """Queue a round for a training worker (`kaizen serve --role web` never trains itself).
    Raises Conflict if a round is queued or running anywhere."""
    fail_stale_runs(session=session)
    busy = session.scalar(select(TrainingRun.id).where(TrainingRun.status.in_(("queued", "running"))).limit(1))
    if busy is not None:
        raise Conflict(f"Training run {busy} is queued or running; wait for it to finish.")
    requested: dict[str, Any] = {"force": force}
    if requeued_from is not None:
        requested["requeued_from"] = requeued_from
    run = create_run(session=session, trigger=trigger, round_index=completed_rounds(session=session),
                     status="queued", config={"requested": requested})
    return run


def requeue_run(*, session: Session, run_id: int, reason: str) -> TrainingRun | None:
    """End run `run_id`, interrupted because the process that trained it stopped (SIGTERM) or died,
    as failed with `reason`, free the training lock if that run's process held it, and queue the same
    round again (same trigger and force) for the next training worker: a round is a few minutes of
    work from the data in the database, so it is run again from the start rather than waited for
    (Celery's `acks_late` + `reject_on_worker_lost` semantics). Returns the new queued run, or None
    when the run had already ended or another round is queued or running."""
    run = _get(session, TrainingRun, run_id, "training run")
    if run.status not in ("queued", "running"):
        return None
    pid, host = run.pid, run.host
    run.status, run.finished_at = "failed", utcnow()
    run.error = reason
    release_lock_of(session=session, name=TRAINING_LOCK, pid=pid, host=host)
    session.flush()
    force = bool((run.config or {}).get("requested", {}).get("force", True))
    try:
        again = request_run(session=session, trigger=run.trigger, force=force, requeued_from=run_id)
    except Conflict:
        return None
    run.error = f"{reason} It was queued again as run {again.id}, for the next training worker."
    session.flush()
    return again


def cancel_run(*, session: Session, run_id: int) -> TrainingRun:
    """Cancel a round that is queued and not taken yet (no process claimed it): its status becomes
    "cancelled". Raises NotFound, or Conflict if a process took it or it has ended. The claim's
    compare-and-set on `pid IS NULL` makes a cancel and a claim exclude each other."""
    run = _get(session, TrainingRun, run_id, "training run")
    done = session.execute(update(TrainingRun).where(
        TrainingRun.id == run_id, TrainingRun.status == "queued", TrainingRun.pid.is_(None))
        .values(status="cancelled", finished_at=utcnow(), error="Cancelled by the admin before it started."))
    if getattr(done, "rowcount", 0) != 1:
        session.refresh(run)
        what = "has started" if run.status in ("queued", "running") else f"has already ended ({run.status})"
        raise Conflict(f"Training run {run_id} {what}: only a round still waiting for a worker can be cancelled.")
    session.refresh(run)
    return run


def run_in_progress(*, session: Session) -> int | None:
    """The id of the newest run that is queued or running (in any process), or None."""
    return session.scalar(select(TrainingRun.id).where(TrainingRun.status.in_(("queued", "running")))
                          .order_by(TrainingRun.id.desc()).limit(1))


def claim_requested_run(*, session: Session, pid: int) -> TrainingRun | None:
    """Claim the oldest round a web replica requested (queued, no pid yet) for process `pid` on this
    machine; None if there is none. Two workers never claim the same run: the row is read with
    `SELECT … FOR UPDATE SKIP LOCKED` on PostgreSQL, and the claim is a compare-and-set on
    `pid IS NULL` on every database."""
    q = (select(TrainingRun.id).where(TrainingRun.status == "queued", TrainingRun.pid.is_(None))
         .order_by(TrainingRun.id).limit(1).with_for_update(skip_locked=True))
    run_id = session.scalar(q)
    if run_id is None:
        return None
    claimed = session.execute(
        update(TrainingRun).where(TrainingRun.id == run_id, TrainingRun.pid.is_(None))
        .values(pid=pid, host=HOST, heartbeat_at=utcnow()))
    if getattr(claimed, "rowcount", 0) != 1:
        return None
    session.expire_all()
    return session.get(TrainingRun, run_id)


def acquire_lock(
    *, session: Session, name: str, owner: str, pid: int, stale_after_s: float = STALE_LOCK_S,
    alive: Any = pid_alive,
) -> bool:
    """Take the named lock. A lock whose holder died (holder_alive) is taken over (stale-lock
    recovery). Returns False if someone holds it.

    On PostgreSQL the check and the take run under a transaction-level advisory lock
    (`pg_advisory_xact_lock`), so two processes that both find a dead holder cannot both take over;
    SQLite has one writer at a time."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(func.pg_advisory_xact_lock(func.hashtext(f"kaizen:{name}"))))
    now = utcnow()
    row = session.get(Lock, name)
    if row is not None:
        session.refresh(row)  # what the holder wrote last, not what this session read before the advisory lock
        if holder_alive(host=row.host, pid=row.pid, heartbeat_at=row.heartbeat_at, stale_after_s=stale_after_s,
                        alive=alive):
            return False
        # Compare-and-delete: only the dead holder's row, as read; a row another process took over meanwhile stays.
        taken = session.execute(delete(Lock).where(Lock.name == name, Lock.owner == row.owner,
                                                   Lock.heartbeat_at == row.heartbeat_at))
        session.expunge(row)
        if getattr(taken, "rowcount", 0) != 1:
            return False
    try:
        with session.begin_nested():
            session.add(Lock(name=name, owner=owner, pid=pid, host=HOST, acquired_at=now, heartbeat_at=now))
    except IntegrityError:
        return False
    return True


def heartbeat_lock(*, session: Session, name: str, owner: str) -> None:
    session.execute(update(Lock).where(Lock.name == name, Lock.owner == owner).values(heartbeat_at=utcnow()))


def release_lock(*, session: Session, name: str, owner: str | None = None) -> None:
    q = delete(Lock).where(Lock.name == name)
    if owner is not None:
        q = q.where(Lock.owner == owner)
    session.execute(q)


def release_lock_of(*, session: Session, name: str, pid: int | None, host: str | None = HOST) -> None:
    """Release lock `name` only if process `pid` on `host` holds it (a row without a host is this machine's)."""
    held = get_lock(session=session, name=name)
    if held is not None and pid is not None and held.pid == pid and held.host in (None, host):
        release_lock(session=session, name=name)


def get_lock(*, session: Session, name: str) -> Lock | None:
    return session.get(Lock, name)


# --- dashboard --------------------------------------------------------------------------------


def totals(*, session: Session) -> dict[str, int]:
    fb = session.execute(
        select(
            func.count(),
            func.sum(case((Feedback.rating == "up", 1), else_=0)),
            func.sum(case((Feedback.rating == "down", 1), else_=0)),
            func.sum(case((Feedback.status == "pending", 1), else_=0)),
        )
    ).one()
    return {
        "conversations": session.scalar(select(func.count()).select_from(Conversation)) or 0,
        "exchanges": session.scalar(select(func.count()).select_from(Exchange)) or 0,
        "ratings": fb[0] or 0,
        "thumbs_up": fb[1] or 0,
        "thumbs_down": fb[2] or 0,
        "pending_review": fb[3] or 0,
        "knowledge_items": session.scalar(select(func.count()).select_from(KnowledgeItem)) or 0,
        "adapters": session.scalar(select(func.count()).select_from(AdapterVersion)) or 0,
    }


def rating_by_day(*, session: Session) -> list[tuple[str, int, int]]:
    """(day, ups, downs) for every day with ratings."""
    day = func.date(Exchange.created_at)
    q = (
        select(day, func.sum(case((Feedback.rating == "up", 1), else_=0)), func.count())
        .join(Exchange, Feedback.exchange_id == Exchange.id)
        .group_by(day)
        .order_by(day)
    )
    return [(str(d), int(up or 0), int(n) - int(up or 0)) for d, up, n in session.execute(q)]


def rating_by_adapter(*, session: Session) -> list[tuple[str, int, int]]:
    """(adapter version, ups, downs)."""
    q = (
        select(Exchange.adapter_version, func.sum(case((Feedback.rating == "up", 1), else_=0)), func.count())
        .join(Exchange, Feedback.exchange_id == Exchange.id)
        .group_by(Exchange.adapter_version)
        .order_by(Exchange.adapter_version)
    )
    return [(v, int(up or 0), int(n) - int(up or 0)) for v, up, n in session.execute(q)]


def emotion_counts(*, session: Session) -> dict[str, int]:
    q = select(Exchange.emotion_label, func.count()).group_by(Exchange.emotion_label)
    return dict(session.execute(q).tuples().all())


def source_counts(*, session: Session) -> dict[str, int]:
    q = select(Exchange.source, func.count()).group_by(Exchange.source)
    return dict(session.execute(q).tuples().all())


class RatingCount(NamedTuple):
    """Ratings of the replies one adapter version served from one source, with or without its adapter."""

    version: str  # exchanges.adapter_version: the version being served ("base" before any)
    source: str  # memory (a taught answer, verbatim) | rag (the model with retrieved facts) | model (alone)
    adapter_applied: bool | None  # whether the version's adapter produced the reply; None: stored before routing
    ratings: int
    thumbs_up: int

    @property
    def up_rate(self) -> float:
        return self.thumbs_up / self.ratings if self.ratings else 0.0


def _version_order(version: str, created: dict[str, int]) -> tuple[int, int, str]:
    """"base" first, then the versions in the order they were recorded, then versions with no row (by number)."""
    if version == BASE:
        return (0, 0, "")
    if version in created:
        return (1, created[version], "")
    number = int(version[1:]) if version[1:].isdigit() else 1 << 62
    return (2, number, version)


def ratings_by_version_and_source(*, session: Session) -> list[RatingCount]:
    """Rated replies per adapter version, answer source and adapter_applied, with their 👍 count.

    Versions come in the order they were created ("base" first; a version with no adapter_versions
    row, last); within a version, sources in SOURCE_ORDER then adapter_applied False, True, None.
    Every rated exchange counts once with its current rating (rating again replaces the feedback
    row), whatever the review status of a correction: the user's 👍/👎 stands either way.
    """
    up = func.sum(case((Feedback.rating == "up", 1), else_=0))
    q = (
        select(Exchange.adapter_version, Exchange.source, Exchange.adapter_applied, func.count(), up)
        .select_from(Feedback)
        .join(Exchange, Feedback.exchange_id == Exchange.id)
        .group_by(Exchange.adapter_version, Exchange.source, Exchange.adapter_applied)
    )
    versions = session.scalars(select(AdapterVersion.version).order_by(AdapterVersion.created_at,
                                                                        AdapterVersion.version))
    created = {version: i for i, version in enumerate(versions)}
    applied_order = {False: 0, True: 1, None: 2}
    sources = {s: i for i, s in enumerate(SOURCE_ORDER)}
    rows = [RatingCount(version, source, None if applied is None else bool(applied), int(n), int(ups or 0))
            for version, source, applied, n, ups in session.execute(q)]
    return sorted(rows, key=lambda r: (_version_order(r.version, created), sources.get(r.source, len(sources)),
                                       r.source, applied_order[r.adapter_applied]))


# --- curiosity: the "to teach" queue ------------------------------------------------------------

def curiosity_exchanges(*, session: Session, limit: int = 5000) -> list[tuple[Exchange, Feedback | None]]:
    """The newest `limit` exchanges the model answered itself (source model or rag, not memory), each
    with its rating if any: what the "to teach" queue is drawn from (bot/curiosity.py decides)."""
    q = (select(Exchange, Feedback).outerjoin(Feedback, Feedback.exchange_id == Exchange.id)
         .where(Exchange.source != "memory").order_by(Exchange.created_at.desc()).limit(limit))
    return [(ex, fb) for ex, fb in session.execute(q)]


def add_curious_question(*, session: Session, question: str, key: str, origin: str, status: str = "open",
                         item_id: int | None = None) -> CuriousQuestion:
    """Store a question Kaizen proposes (`origin` "proposed") or one the admin dismissed or answered."""
    question = question.strip()
    if not question:
        raise Invalid("A question is needed.")
    row = CuriousQuestion(question=question, key=key[:500], origin=origin, status=status, item_id=item_id)
    session.add(row)
    session.flush()
    return row


def list_curious_questions(*, session: Session, status: str | None = None,
                           origin: str | None = None) -> list[CuriousQuestion]:
    q = select(CuriousQuestion).order_by(CuriousQuestion.id)
    if status is not None:
        q = q.where(CuriousQuestion.status == status)
    if origin is not None:
        q = q.where(CuriousQuestion.origin == origin)
    return list(session.scalars(q))


def set_curious_status(*, session: Session, keys: Iterable[str], status: str, question: str = "",
                       item_id: int | None = None) -> None:
    """Mark every stored question with one of `keys` as `status` ("dismissed" or "answered"); a key no
    row holds yet (a question users asked) gets a row of origin "asked" with `question`."""
    keys = [k[:500] for k in keys]
    rows = list(session.scalars(select(CuriousQuestion).where(CuriousQuestion.key.in_(keys))))
    for row in rows:
        row.status = status
        row.item_id = item_id if item_id is not None else row.item_id
    for key in set(keys) - {r.key for r in rows}:
        session.add(CuriousQuestion(question=question or key, key=key, origin="asked", status=status,
                                    item_id=item_id))
    session.flush()


# --- synthetic paraphrases ----------------------------------------------------------------------

def add_paraphrase(*, session: Session, item_id: int, question: str, use: str,
                   origin: str = "synthetic") -> Paraphrase:
    """Store a phrasing of item `item_id`'s question ("train": trained; "check": measures generality).
    Raises NotFound for an unknown item, Invalid for an empty question or a bad `use`."""
    get_knowledge(session=session, item_id=item_id)
    question = question.strip()
    if not question:
        raise Invalid("A paraphrase needs a question.")
    if use not in ("train", "check"):
        raise Invalid(f"A paraphrase is used to train or to check, not {use!r}.")
    row = Paraphrase(item_id=item_id, question=question, use=use, origin=origin)
    session.add(row)
    session.flush()
    return row


def list_paraphrases(*, session: Session, item_ids: Iterable[int] | None = None,
                     deleted: bool = False) -> list[Paraphrase]:
    """Paraphrases, of `item_ids` only if given, in id order; with `deleted`, also those the admin
    deleted (kept as use "deleted" so that they are not written again)."""
    q = select(Paraphrase).order_by(Paraphrase.id)
    if not deleted:
        q = q.where(Paraphrase.use != "deleted")
    if item_ids is not None:
        q = q.where(Paraphrase.item_id.in_(list(item_ids)))
    return list(session.scalars(q))


def delete_paraphrase(*, session: Session, paraphrase_id: int) -> int:
    """Delete one: it is never trained or checked again, nor written again for its item (the row stays,
    as use "deleted"). Returns its item's id. Raises NotFound for an unknown or already deleted id."""
    row = _get(session, Paraphrase, paraphrase_id, "paraphrase")
    if row.use == "deleted":
        raise NotFound(f"There is no paraphrase {paraphrase_id}.")
    row.use = "deleted"
    session.flush()
    return row.item_id
