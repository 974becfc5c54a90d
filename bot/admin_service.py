"""The admin operations and reads, shared by the admin REST API (bot/admin_api.py) and the admin
tab (bot/ui_admin.py): one path to the store for everything an admin sees or changes.

    service = AdminService(kaizen)          # kaizen: bot.services.Kaizen
    service.adapters().versions[0].metrics.new_recall

Every method returns a response model from bot/admin_models.py. Errors are raised, not
formatted: `kaizen.errors.KaizenError` subclasses and `feedback_db.store.StoreError` (NotFound,
Invalid); `USER_ERRORS` lists them for the edges that turn them into messages.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot.admin_models import (
    ActivateResult,
    AdaptersView,
    AdapterVersionView,
    DashboardView,
    ExchangeView,
    ExportResult,
    FeedbackList,
    FeedbackView,
    ImportResult,
    KnowledgeDeleted,
    KnowledgeList,
    KnowledgeView,
    LrPlanView,
    ParaphraseList,
    ParaphrasesWritten,
    ParaphraseView,
    PersonaPreview,
    ProposedQuestions,
    RatingGroup,
    RatingsByVersion,
    RunProgress,
    RunsView,
    RunView,
    ScheduleView,
    SettingsView,
    SkippedLine,
    StatsView,
    ToTeachList,
    ToTeachView,
    VersionRatings,
)
from bot.curiosity import Curiosity, ToTeach, known_by
from bot.engine_api import GenParams
from bot.services import AUTO_APPROVE_KEY
from bot.synthetic import Paraphraser
from feedback_db import store
from feedback_db.models import AdapterVersion, Exchange, Feedback, KnowledgeItem, Paraphrase, TrainingRun
from kaizen import adapters
from kaizen.errors import AdapterError, BusyError, ConflictError, InputError, KaizenError, NotFoundError
from kaizen.knowledge_files import validate_import
from kaizen.lr_schedule import past_rounds, plan_lr
from kaizen.metrics import RoundMetrics
from kaizen.prompts import SETTING_KEY as PERSONA_KEY
from kaizen.prompts import (
    Persona,
    budget_warning,
    build_system_prompt,
    check_correction,
    load_persona,
    tone_instruction,
)
from kaizen.settings import TrainConfig
from kaizen.text import question_key
from kaizen.wikipedia import NoSummaryError, SourceUnavailable, WikipediaClient, default_user_agent

if TYPE_CHECKING:
    from bot.services import Kaizen

FOLLOW_UP_TOKENS = 96  # room for three short questions
PARAPHRASE_TOKENS = 160  # room for five short questions
LOOKUP_LOCK = "wikipedia"  # the lock row that keeps scheduled lookups to one replica at a time

# What the service raises for the caller to show as a message (not a bug).
USER_ERRORS: tuple[type[Exception], ...] = (KaizenError, store.StoreError)

def _run_view(run: TrainingRun) -> RunView:
    return RunView(
        id=run.id, status=run.status, trigger=run.trigger, round_index=run.round_index, phase=run.phase,
        step=run.step, total_steps=run.total_steps, loss=run.loss, lr=run.lr, eta_s=run.eta_s,
        loss_curve=run.loss_curve or [], data_counts=run.data_counts or {}, adapter_version=run.adapter_version,
        error=run.error, started_at=run.started_at, finished_at=run.finished_at)


def _feedback_view(fb: Feedback, ex: Exchange) -> FeedbackView:
    return FeedbackView(
        id=fb.id, exchange_id=ex.id, rating=fb.rating, status=fb.status, correction=fb.correction,
        question=ex.user_text, answer=ex.bot_text, emotion=ex.emotion_label, adapter_version=ex.adapter_version,
        updated_at=fb.updated_at)


def _knowledge_view(item: KnowledgeItem) -> KnowledgeView:
    return KnowledgeView(
        id=item.id, question=item.question, answer=item.answer, category=item.category, origin=item.origin,
        verbatim=item.verbatim, enabled=item.enabled, hit_count=item.hit_count, feedback_id=item.feedback_id,
        updated_at=item.updated_at, train_attempts=item.train_attempts, learned_version=item.learned_version,
        parked=item.parked, status=item.status, source_url=item.source_url)


def _paraphrase_view(p: Paraphrase) -> ParaphraseView:
    return ParaphraseView(id=p.id, item_id=p.item_id, question=p.question, origin=p.origin, use=p.use,
                          created_at=p.created_at)


def _to_teach_view(group: ToTeach) -> ToTeachView:
    return ToTeachView(key=group.key, question=group.question, count=group.count, origin=group.origin,
                       phrasings=group.phrasings, reasons=group.reasons, last_asked=group.last_asked,
                       from_item_id=group.from_item_id)


def _exchange_view(ex: Exchange) -> ExchangeView:
    return ExchangeView(
        id=ex.id, created_at=ex.created_at, question=ex.user_text, answer=ex.bot_text, emotion=ex.emotion_label,
        source=ex.source, adapter_version=ex.adapter_version, latency_ms=ex.latency_ms,
        adapter_applied=ex.adapter_applied)


def _up_rate(thumbs_up: int, ratings: int) -> float:
    return round(thumbs_up / ratings, 3) if ratings else 0.0


def _ratings_view(rows: list[store.RatingCount]) -> RatingsByVersion:
    """The store's rows (in version order) grouped per version, with each version's totals."""
    by_version: dict[str, list[store.RatingCount]] = {}
    for row in rows:
        by_version.setdefault(row.version, []).append(row)
    versions = []
    for version, group in by_version.items():
        ratings, ups = sum(r.ratings for r in group), sum(r.thumbs_up for r in group)
        versions.append(VersionRatings(
            version=version, ratings=ratings, thumbs_up=ups, up_rate=_up_rate(ups, ratings),
            groups=[RatingGroup(source=r.source, adapter_applied=r.adapter_applied, ratings=r.ratings,
                                thumbs_up=r.thumbs_up, up_rate=_up_rate(r.thumbs_up, r.ratings)) for r in group]))
    return RatingsByVersion(versions=versions)


def _version_view(row: AdapterVersion, active: str) -> AdapterVersionView:
    return AdapterVersionView(
        version=row.version, verdict=row.verdict, reason=row.reason, metrics=RoundMetrics.from_dict(row.metrics),
        round_index=row.round_index, run_id=row.run_id, created_at=row.created_at, active=row.version == active)


class AdminService:
    """Everything the admin can see and do, over one `bot.services.Kaizen`."""

    def __init__(self, kaizen: Kaizen) -> None:
        self._kaizen = kaizen

    # --- training runs ----------------------------------------------------------------------

    def running_run(self) -> int | None:
        """The id of the run in progress in this process, or None (also when nothing here can train)."""
        training = self._kaizen.training
        return training.running() if training is not None else None

    def start_training(self) -> int:
        """Start a round in the background; returns its run id.

        Raises ConflictError if a round is running or this process has no training supervisor.
        """
        if self._kaizen.training is None:
            raise ConflictError("Training cannot be started from this process (no training supervisor).")
        return self._kaizen.training.start(trigger="admin", force=True)

    def panel_stamps(self) -> dict[str, str]:
        """A string per admin panel ("feedback", "knowledge", "runs", "adapters") that changes when
        the panel's data changes, whoever changed it (`store.admin_fingerprint`)."""
        with self._kaizen.db.session() as s:
            stamps = store.admin_fingerprint(session=s)
        engine = self._kaizen.engine.status()
        stamps["adapters"] += f" serving {self._kaizen.engine.adapter_version} on {engine.serving} {engine.problem}"
        return stamps

    def runs(self, limit: int = 50) -> RunsView:
        """The latest `limit` runs, newest first, and the run in progress here."""
        running = self.running_run()
        with self._kaizen.db.session() as s:
            return RunsView(running=running, runs=[_run_view(r) for r in store.list_runs(session=s, limit=limit)])

    def run(self, run_id: int) -> RunView:
        """One run; raises store.NotFound for an unknown id."""
        with self._kaizen.db.session() as s:
            return _run_view(store.get_run(session=s, run_id=run_id))

    def progress(self) -> RunProgress:
        """The run in progress in this process, else the latest run (a run started elsewhere,
        by `kaizen train`, shows up here as the latest)."""
        running = self.running_run()
        with self._kaizen.db.session() as s:
            if running is not None:
                row: TrainingRun | None = store.get_run(session=s, run_id=running)
            else:
                latest = store.list_runs(session=s, limit=1)
                row = latest[0] if latest else None
            return RunProgress(running=running, run=_run_view(row) if row is not None else None)

    def cancel_run(self, run_id: int) -> RunView:
        """Cancel a round still waiting for a worker. Raises store.NotFound, store.Conflict."""
        with self._kaizen.db.write() as s:
            return _run_view(store.cancel_run(session=s, run_id=run_id))

    def next_round(self) -> int:
        """The index of the next training round (the number of completed rounds)."""
        with self._kaizen.db.session() as s:
            return store.completed_rounds(session=s)

    def train_config(self) -> TrainConfig:
        """The trainer's knobs this server's rounds use (defaults where training is not wired)."""
        return self._kaizen.train_config or TrainConfig.model_construct()

    def lr_plan(self) -> LrPlanView:
        """The next round's learning rates: the per-round decay adjusted by the results so far."""
        with self._kaizen.db.session() as s:
            rows = store.list_adapters(session=s)
            plan = plan_lr(self.train_config(), store.completed_rounds(session=s), past_rounds(rows))
        return LrPlanView(**plan.to_dict())

    # --- adapters -----------------------------------------------------------------------------

    def adapters(self) -> AdaptersView:
        """Every stored version with its metrics, and what is active and served."""
        with self._kaizen.db.session() as s:
            active = store.get_active_adapter(session=s)
            pinned = store.get_pinned_adapter(session=s)
            versions = [_version_view(r, active) for r in store.list_adapters(session=s)]
        engine = self._kaizen.engine.status()
        return AdaptersView(active=active, serving=self._kaizen.engine.adapter_version,
                            follower_error=self._kaizen.follower.last_error, versions=versions, pinned=pinned,
                            engine=engine.kind, engine_serving=engine.serving, engine_error=engine.problem)

    def release_pin(self) -> AdaptersView:
        """Let rounds that pass the gate activate their version again."""
        with self._kaizen.db.write() as s:
            store.set_pinned_adapter(session=s, version=None)
        return self.adapters()

    def activate(self, version: str, *, pin: bool = True) -> ActivateResult:
        """Make `version` (or "base") the active adapter and swap it in now; returns what is served.
        An admin's choice is pinned (`pin`): rounds that pass the gate no longer replace it until the
        pin is released (`release_pin`).

        Raises InputError for a malformed name, store.NotFound for an unknown version,
        AdapterError for a corrupt one or one the engine refuses (the old version stays active).
        """
        k = self._kaizen
        version = adapters.check_version_name(version)
        with k.db.session() as s:
            previous = store.get_active_adapter(session=s)
            if version != adapters.BASE:
                store.get_adapter(session=s, version=version)
        if version != adapters.BASE:
            adapters.verify(adapters.version_dir(k.settings.adapters_dir, version))
        with k.db.write() as s:
            store.request_activation(session=s, version=version)
        served = k.follower.sync(force=True)
        if served != version:
            # The engine refused it and kept serving the old version: keep the database truthful.
            with k.db.write() as s:
                store.set_active_adapter(session=s, version=previous)
            raise AdapterError(k.follower.last_error or f"Could not activate {version}.")
        with k.db.write() as s:
            if pin:
                store.set_pinned_adapter(session=s, version=version)
            pinned = store.get_pinned_adapter(session=s)
        return ActivateResult(active=served, swap_seconds=k.follower.last_swap_s, pinned=pinned)

    def zip_adapter(self, version: str) -> Path:
        """The verified adapter folder as a zip in the exports directory; returns its path.

        Raises InputError for "base" or a malformed name, store.NotFound for an unknown version,
        AdapterError for a corrupt one.
        """
        k = self._kaizen
        version = adapters.check_version_name(version)
        if version == adapters.BASE:
            raise InputError("The base model has no adapter to download.")
        with k.db.session() as s:
            store.get_adapter(session=s, version=version)
        folder = adapters.version_dir(k.settings.adapters_dir, version)
        adapters.verify(folder)
        k.settings.exports_dir.mkdir(parents=True, exist_ok=True)
        base = k.settings.exports_dir / f"kaizen-adapter-{version}"
        return Path(shutil.make_archive(str(base), "zip", root_dir=folder.parent, base_dir=version))

    # --- dataset export -----------------------------------------------------------------------

    def export_dataset(self) -> ExportResult:
        """Write the training set as chat JSONL into the exports directory; returns path and rows.

        Raises ConflictError when this process has no dataset exporter wired.
        """
        k = self._kaizen
        if k.export_dataset is None:
            raise ConflictError("Exporting the dataset is not available in this process.")
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        path = k.settings.exports_dir / f"kaizen-dataset-{stamp}.jsonl"
        return ExportResult(path=path, rows=k.export_dataset(db=k.db, path=path))

    # --- dashboard ----------------------------------------------------------------------------

    def stats(self) -> StatsView:
        """The totals, the active and served versions, and the run in progress here."""
        with self._kaizen.db.session() as s:
            totals = store.totals(session=s)
            active = store.get_active_adapter(session=s)
        return self._stats(totals, active)

    def _stats(self, totals: dict[str, int], active: str) -> StatsView:
        engine = self._kaizen.engine.status()
        return StatsView(**totals, active_adapter=active, serving=self._kaizen.engine.adapter_version,
                         running_run=self.running_run(), follower_error=self._kaizen.follower.last_error,
                         engine=engine.kind, engine_serving=engine.serving, engine_error=engine.problem)

    def ratings_by_version(self) -> RatingsByVersion:
        """Rated replies, 👍 count and 👍 rate per adapter version (in the order versions were created,
        "base" first), split by answer source and by whether the adapter was applied."""
        with self._kaizen.db.session() as s:
            return _ratings_view(store.ratings_by_version_and_source(session=s))

    def dashboard(self, recent: int = 25) -> DashboardView:
        """The stats, the rating and emotion breakdowns and the `recent` latest exchanges."""
        with self._kaizen.db.session() as s:
            totals = store.totals(session=s)
            active = store.get_active_adapter(session=s)
            by_version = _ratings_view(store.ratings_by_version_and_source(session=s))
            view = DashboardView(
                stats=self._stats(totals, active), rating_by_day=store.rating_by_day(session=s),
                rating_by_adapter=[(v.version, v.thumbs_up, v.ratings - v.thumbs_up) for v in by_version.versions],
                ratings_by_version=by_version,
                emotions=store.emotion_counts(session=s), sources=store.source_counts(session=s),
                recent=[_exchange_view(e) for e in store.list_exchanges(session=s, limit=recent)])
        return view

    # --- feedback review ----------------------------------------------------------------------

    def feedback_list(self, status: str | None = None, rating: str | None = None, limit: int = 200) -> FeedbackList:
        """Ratings and corrections, most recently changed first, filtered by status (pending,
        approved, rejected) and rating (up, down) when given; an unknown value matches nothing."""
        with self._kaizen.db.session() as s:
            rows = store.list_feedback(session=s, status=status, rating=rating, limit=limit)
            return FeedbackList(feedback=[_feedback_view(fb, ex) for fb, ex in rows])

    def feedback(self, feedback_id: int) -> FeedbackView:
        """One rating with its exchange; raises store.NotFound for an unknown id."""
        with self._kaizen.db.session() as s:
            fb = store.get_feedback(session=s, feedback_id=feedback_id)
            return _feedback_view(fb, store.get_exchange(session=s, exchange_id=fb.exchange_id))

    def review(self, feedback_id: int, action: str, correction: str | None = None) -> FeedbackView:
        """Approve or reject a rating, with an edited correction if given; returns it as stored.

        Raises InputError for a correction that check_correction refuses, store.Invalid for an
        unknown action, store.NotFound for an unknown id.
        """
        if correction is not None and correction.strip():
            correction = check_correction(correction)
        with self._kaizen.db.write() as s:
            fb = store.review_feedback(session=s, feedback_id=feedback_id, action=action, correction=correction)
            return _feedback_view(fb, store.get_exchange(session=s, exchange_id=fb.exchange_id))

    # --- knowledge ----------------------------------------------------------------------------

    def knowledge_list(self, limit: int | None = None, offset: int = 0, status: str | None = None) -> KnowledgeList:
        """Knowledge items in id order (all of them when `limit` is None; only `status` ones if given)."""
        with self._kaizen.db.session() as s:
            items = store.list_knowledge(session=s, limit=limit, offset=offset, status=status)
            return KnowledgeList(items=[_knowledge_view(k) for k in items])

    def parked_knowledge(self) -> KnowledgeList:
        """Items the weights failed to learn in park_after rounds: served by the memory only."""
        with self._kaizen.db.session() as s:
            return KnowledgeList(items=[_knowledge_view(k) for k in store.list_parked(session=s)])

    def import_knowledge(self, data: bytes, filename: str, *, skip_invalid: bool = False,
                         verbatim: bool = False) -> ImportResult:
        """Validate a knowledge file as `kaizen import` does and store its rows.

        Raises ImportFileError (listing the bad lines) unless `skip_invalid`, and then nothing is stored.
        """
        result = validate_import(data, filename, skip_invalid=skip_invalid)
        with self._kaizen.db.write() as s:
            added, duplicates = store.import_knowledge(
                session=s, rows=[(r.question, r.answer, r.category) for r in result.rows], verbatim=verbatim)
        return ImportResult(imported=len(added), duplicates=duplicates,
                            skipped=[SkippedLine(line=e.line, reason=e.reason) for e in result.errors])

    def delete_knowledge(self, item_id: int) -> KnowledgeDeleted:
        """Delete one item; raises store.NotFound for an unknown id."""
        with self._kaizen.db.write() as s:
            store.delete_knowledge(session=s, item_id=item_id)
        return KnowledgeDeleted(deleted=item_id)

    def edit_knowledge(self, item_id: int, *, answer: str | None = None, verbatim: bool | None = None) -> KnowledgeView:
        """Change an item's answer (checked as corrections are; a new answer is a new fact to learn)
        and/or whether it is served word for word; returns it. Raises InputError for a bad answer,
        store.NotFound for an unknown id."""
        with self._kaizen.db.write() as s:
            item = store.get_knowledge(session=s, item_id=item_id)
            if answer is not None and answer.strip() != item.answer:
                item = store.set_knowledge_answer(session=s, item_id=item_id, answer=check_correction(answer))
            if verbatim is not None and verbatim != item.verbatim:
                item = store.set_knowledge_verbatim(session=s, item_id=item_id, verbatim=verbatim)
            return _knowledge_view(item)

    def set_knowledge_enabled(self, item_id: int, enabled: bool) -> KnowledgeView:
        """Enable or disable one item; returns it. Raises store.NotFound for an unknown id."""
        with self._kaizen.db.write() as s:
            return _knowledge_view(store.set_knowledge_enabled(session=s, item_id=item_id, enabled=enabled))

    def approve_knowledge(self, item_id: int, answer: str | None = None) -> KnowledgeView:
        """Approve a pending item (a Wikipedia summary), optionally with an edited answer (checked as
        corrections are): the memory serves it at once. Raises store.NotFound, store.Conflict, InputError."""
        with self._kaizen.db.write() as s:
            checked = check_correction(answer) if answer is not None and answer.strip() else None
            return _knowledge_view(store.approve_knowledge(session=s, item_id=item_id, answer=checked))

    # --- synthetic paraphrases -----------------------------------------------------------------

    def paraphrases(self, item_id: int | None = None) -> ParaphraseList:
        """The stored synthetic paraphrases (of one item if given)."""
        with self._kaizen.db.session() as s:
            rows = store.list_paraphrases(session=s, item_ids=None if item_id is None else [item_id])
            return ParaphraseList(paraphrases=[_paraphrase_view(p) for p in rows])

    def write_paraphrases(self, item_ids: list[int] | None = None, per_item: int = 5) -> ParaphrasesWritten:
        """Have a model paraphrase the taught questions `item_ids` (default: the approved items that have
        none yet), keep what the memory maps back to each item alone, and store it. Raises InputError
        without a memory, store.NotFound for an unknown id, store.Conflict for an item not approved."""
        kz = self._kaizen
        if kz.recall is None:
            raise InputError("The retrieval memory is off in this server: it is what checks each paraphrase.")
        with kz.db.session() as s:
            if item_ids:
                items = [store.get_knowledge(session=s, item_id=i) for i in item_ids]
                if bad := [i.id for i in items if not i.enabled]:
                    raise store.Conflict(f"Only approved, enabled items are paraphrased (not #{bad[0]}).")
            else:
                done = {p.item_id for p in store.list_paraphrases(session=s)}
                items = [i for i in store.list_knowledge(session=s, enabled_only=True) if i.id not in done]
            for item in items:
                s.expunge(item)
        report = Paraphraser(kz.db, generate=self._paraphrase_model(), memory=kz.recall).write(items,
                                                                                               per_item=per_item)
        with kz.db.session() as s:
            kept = [_paraphrase_view(p) for p in store.list_paraphrases(session=s, item_ids=list(report.kept))
                    if p.question in report.kept.get(p.item_id, [])]
        return ParaphrasesWritten(items=report.items, kept=report.total, dropped=report.dropped, paraphrases=kept)

    def _paraphrase_model(self) -> Callable[[list[dict[str, str]]], str]:
        """The serving model's greedy completion, or the configured OpenAI-compatible server's."""
        settings, engine = self._kaizen.settings, self._kaizen.engine
        if not settings.paraphrase_url:
            return lambda messages: engine.generate(messages, GenParams(max_new_tokens=PARAPHRASE_TOKENS))
        from openai import OpenAI, OpenAIError

        client = OpenAI(base_url=settings.paraphrase_url, api_key="unused", timeout=120, max_retries=0)

        def remote(messages: list[dict[str, str]]) -> str:
            try:
                reply = client.chat.completions.create(
                    model=settings.paraphrase_model or "default", messages=messages,  # type: ignore[arg-type]
                    max_tokens=PARAPHRASE_TOKENS, temperature=0)
            except OpenAIError as exc:
                raise BusyError(f"The paraphrase model at {settings.paraphrase_url} failed: {exc}") from exc
            return reply.choices[0].message.content or ""
        return remote

    def delete_paraphrase(self, paraphrase_id: int) -> ParaphraseList:
        """Delete one; the item's remaining paraphrases. Raises store.NotFound."""
        with self._kaizen.db.write() as s:
            item_id = store.delete_paraphrase(session=s, paraphrase_id=paraphrase_id)
        return self.paraphrases(item_id)

    # --- curiosity: the "to teach" queue ------------------------------------------------------

    def curiosity(self) -> Curiosity:
        """The queue over this server's database, memory and model."""
        kz = self._kaizen
        recall = kz.recall
        return Curiosity(
            kz.db, min_confidence=kz.settings.curiosity_min_confidence,
            known=known_by(recall) if recall is not None else None,
            embedder=recall.memory.cross if recall is not None else None,
            generate=lambda messages: kz.engine.generate(messages, GenParams(max_new_tokens=FOLLOW_UP_TOKENS)))

    def to_teach(self, limit: int = 50) -> ToTeachList:
        """The ranked "to teach" queue."""
        return ToTeachList(questions=[_to_teach_view(g) for g in self.curiosity().queue(limit)])

    def teach_question(self, key: str, answer: str, question: str | None = None) -> KnowledgeView:
        """Answer a queued question: approved knowledge, served by the memory at once. Raises
        NotFoundError for a key not in the queue, InputError for a bad answer."""
        item = self.curiosity().answer(key, check_correction(answer), question=question)
        with self._kaizen.db.session() as s:
            return _knowledge_view(store.get_knowledge(session=s, item_id=item.id))

    def dismiss_question(self, key: str) -> ToTeachView:
        """Take a question off the queue for good. Raises NotFoundError."""
        return _to_teach_view(self.curiosity().dismiss(key))

    def propose_questions(self, items: int = 5, per_item: int = 3,
                          item_ids: list[int] | None = None) -> ProposedQuestions:
        """Ask the model for follow-up questions to `item_ids`, or to the `items` newest approved items.
        Raises store.NotFound for an unknown id."""
        with self._kaizen.db.session() as s:
            chosen = ([store.get_knowledge(session=s, item_id=i) for i in item_ids] if item_ids
                      else list(store.list_knowledge(session=s, enabled_only=True))[-items:])
            for item in chosen:
                s.expunge(item)
        added, dropped = self.curiosity().propose(chosen, per_item=per_item)
        return ProposedQuestions(items=len(chosen), added=added, dropped=dropped)

    def wikipedia(self, key: str | None = None, question: str | None = None) -> KnowledgeView:
        """Look a queued question (or any `question`) up on Wikipedia (vi or en, by its language) and store
        the summary as PENDING knowledge with its source URL, for review. Raises NotFoundError (no
        such key, no article), kaizen.wikipedia.SourceUnavailable (no network, timeout, bad reply)."""
        if key is not None:
            question = self.curiosity().find(key).question
        if not question or not question.strip():
            raise InputError("Give the key of a queued question or a question.")
        question = question.strip()
        with self._kaizen.db.session() as s:
            before = next((i for i in store.list_knowledge(session=s) if i.origin == "wikipedia"
                           and question_key(i.question) == question_key(question)), None)
        if before is not None:
            state = "waiting for review" if before.status == "pending" else "approved"
            raise ConflictError(f"This question was looked up already: knowledge item #{before.id} ({state}). "
                                "Review or delete it first.")
        settings = self._kaizen.settings
        client = WikipediaClient(base_url=settings.wikipedia_url, timeout_s=settings.wikipedia_timeout_s,
                                 user_agent=default_user_agent(settings.wikipedia_contact or None))
        found = client.summary(question)
        with self._kaizen.db.write() as s:
            item = store.add_knowledge(session=s, question=question.strip(), answer=found.extract,
                                       category=f"wikipedia:{found.lang}", origin="wikipedia", pending=True,
                                       source_url=found.url)
            return _knowledge_view(item)

    def auto_lookups(self, n: int) -> dict[str, int]:
        """Look up the `n` most asked "to teach" questions not looked up before on Wikipedia, as pending
        items (Settings.wikipedia_lookups, every schedule_minutes). One process at a time across
        replicas (a lock row); stops at the first network failure, to try again next time. Returns
        counts: pending (items made), nothing (no article or summary), skipped (another process holds
        the lock: 1)."""
        counts = {"pending": 0, "nothing": 0, "skipped": 0}
        owner = f"{store.HOST}:{os.getpid()}:lookups"
        with self._kaizen.db.write() as s:
            if not store.acquire_lock(session=s, name=LOOKUP_LOCK, owner=owner, pid=os.getpid()):
                counts["skipped"] = 1
                return counts
        try:
            curiosity = self.curiosity()
            done = curiosity.looked_up()
            todo = [g for g in curiosity.queue(limit=200) if g.origin == "asked" and not set(g.keys) & done][:n]
            for group in todo:
                try:
                    item = self.wikipedia(question=group.question)
                except SourceUnavailable:
                    break  # no network now: these questions are tried again next time
                except (NotFoundError, NoSummaryError, ConflictError, store.NotFound):
                    curiosity.mark_looked_up(group, None)
                    counts["nothing"] += 1
                else:
                    curiosity.mark_looked_up(group, item.id)
                    counts["pending"] += 1
        finally:
            with self._kaizen.db.write() as s:
                store.release_lock(session=s, name=LOOKUP_LOCK, owner=owner)
        return counts

    # --- settings -----------------------------------------------------------------------------

    def auto_approve(self) -> bool:
        """Whether new corrections teach the bot without review."""
        return self._kaizen.auto_approve()

    def persona(self) -> Persona:
        """The stored persona, or the default one."""
        return load_persona(self._kaizen.db)

    def schedule(self) -> ScheduleView | None:
        """The scheduled-training settings, or None when this process has no scheduler."""
        scheduler = self._kaizen.scheduler
        return ScheduleView(**scheduler.config()) if scheduler is not None else None

    def persona_preview(self, persona: Persona) -> PersonaPreview:
        """The system prompt as served (with the neutral tone), its token count and any budget warning."""
        engine = self._kaizen.engine
        prompt = build_system_prompt(persona, tone=tone_instruction("neutral"))
        budget = self._kaizen.settings.persona_token_budget
        return PersonaPreview(prompt=prompt, tokens=engine.count_tokens(prompt), budget=budget,
                              warning=budget_warning(prompt, engine.count_tokens, budget))

    def settings(self) -> SettingsView:
        """Auto-approve, the schedule and the persona with its preview."""
        persona = self.persona()
        return SettingsView(auto_approve=self.auto_approve(), schedule=self.schedule(), persona=persona,
                            persona_preview=self.persona_preview(persona))

    def update_settings(self, *, auto_approve: bool | None = None, schedule: dict[str, Any] | None = None,
                        persona: dict[str, str] | None = None) -> SettingsView:
        """Change any of the settings (a partial persona is merged into the stored one); returns them all.

        Everything is validated before anything is written: InputError for a bad persona, a bad
        schedule or a schedule change in a process without a scheduler.
        """
        k = self._kaizen
        new_persona = None
        if persona is not None:
            new_persona = Persona.from_dict({**self.persona().to_dict(), **persona}).validated()
        if schedule is not None:
            if k.scheduler is None:
                raise InputError("Scheduled training is off in this server (started with --no-schedule).")
            k.scheduler.update(**schedule)  # validates, persists and reschedules
        with k.db.write() as s:
            if auto_approve is not None:
                store.set_setting(session=s, key=AUTO_APPROVE_KEY, value=bool(auto_approve))
            if new_persona is not None:
                store.set_setting(session=s, key=PERSONA_KEY, value=new_persona.to_dict())
        return self.settings()
