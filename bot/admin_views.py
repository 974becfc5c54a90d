"""Pure formatting for the admin tab (bot/ui_admin.py): the admin service's models
(bot/admin_models.py) turned into HTML, Markdown and the tables' DataFrames. No I/O here.
"""

from __future__ import annotations

import datetime as dt
import html

import pandas as pd

from bot.admin_models import (
    AdaptersView,
    DashboardView,
    FeedbackList,
    FeedbackView,
    ImportResult,
    KnowledgeList,
    KnowledgeView,
    ParaphraseList,
    PersonaPreview,
    RatingsByVersion,
    RunsView,
    RunView,
    ScheduleView,
    ToTeachList,
    ToTeachView,
)
from kaizen.knowledge_files import ImportFileError
from kaizen.metrics import PHASE_LABELS, ROUND_PHASES

FEEDBACK_COLUMNS = ["id", "rating", "status", "question", "bot answer", "correction", "updated"]
KNOWLEDGE_COLUMNS = ["id", "question", "answer", "category", "origin", "status", "verbatim", "enabled", "hits",
                     "weights"]
PARAPHRASE_COLUMNS = ["id", "item", "paraphrase", "use", "created"]
TO_TEACH_COLUMNS = ["question", "asked", "why", "last asked", "other phrasings"]
REASON_LABELS = {"down": "👎", "low_confidence": "low confidence", "unsure": "said it did not know"}
RECENT_COLUMNS = ["time", "question", "answer", "emotion", "source", "adapter", "applied", "ms"]
RUN_COLUMNS = ["run", "status", "trigger", "round", "steps", "final loss", "adapter", "started", "error"]
# reliability = new facts recalled exactly, generality = unseen phrasings, locality = as served (routing by scope)
ADAPTER_COLUMNS = ["active", "version", "verdict", "reliability", "retention", "generality", "locality", "preference",
                   "drift", "learned", "parked", "steps", "seconds", "created", "reason"]
METRIC_KEYS = ("new_recall", "retention", "paraphrase_recall", "locality", "preference_auc", "drift", "learned",
               "parked", "steps", "seconds")  # ADAPTER_COLUMNS 3-12
ADAPTER_LEGEND = ("**reliability**: the round's new facts recalled exactly · **generality**: the same facts asked in "
                  "held-out phrasings · **locality**: as served (routing by scope), agreement with the base model on "
                  "unrelated prompts (1 = unchanged) · **preference**: the preference adapter (KTO on 👍/👎) "
                  "agrees with held-out ratings (AUC, 0.5 = chance) · all measured without the memory")
ACTIVE_STATUSES = ("queued", "running")
MAX_LISTED_LINES = 200


def short(text: str | None, n: int = 120) -> str:
    """`text` on one line, cut to `n` characters with an ellipsis."""
    text = " ".join((text or "").split())
    return text if len(text) <= n else text[: n - 1] + "…"


def when(value: dt.datetime | None) -> str:
    """A timestamp as `YYYY-MM-DD HH:MM:SS`, or "" for None."""
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else ""


def fmt(value: object) -> str:
    """A table cell: floats with three decimals, None as ""."""
    if isinstance(value, float):
        return f"{value:.3f}"
    return "" if value is None else str(value)


def is_going(run: RunView | None) -> bool:
    """Whether the run's row says it is still queued or running."""
    return run is not None and run.status in ACTIVE_STATUSES


def progress_html(run: RunView | None) -> str:
    """The progress bar and the numbers of a run (the running one, else the latest).

    The bar covers the whole round: each phase of `ROUND_PHASES` is an equal share, and a phase that
    counts steps (train, preference) fills its share step by step. Under the bar, the phases with the
    current one marked, then the current phase's step, loss, lr and an ETA (an upper bound: a round
    stops early once every taught answer is recalled)."""
    if run is None:
        return "<div class='kz-line'>No training run yet.</div>"
    total = run.total_steps or 0
    going = is_going(run)
    current = ROUND_PHASES.index(run.phase) if run.phase in ROUND_PHASES else -1
    if not going:
        pct = 100.0
    elif current < 0:
        pct = 0.0
    else:
        within = run.step / total if total else 0.0
        pct = 100.0 * (current + min(within, 1.0)) / len(ROUND_PHASES)
    parts = [f"Run #{run.id}", html.escape(run.status)]
    if going and run.status == "queued":
        parts.append("starting the training process")
    if going and current >= 0:
        marks = ["✓ " if i < current else "" for i in range(len(ROUND_PHASES))]
        parts.append(" › ".join(f"<b>{PHASE_LABELS[p]}</b>" if i == current else marks[i] + PHASE_LABELS[p]
                                for i, p in enumerate(ROUND_PHASES)))
    elif run.phase:
        parts.append(f"phase {html.escape(run.phase)}")
    if total:
        parts.append(f"step {run.step}/{total}")
    if run.loss is not None:
        parts.append(f"loss {run.loss:.4f}")
    if run.lr is not None:
        parts.append(f"lr {run.lr:.2e}")
    if going and run.eta_s is not None:
        parts.append(f"ETA ≤ {run.eta_s:.0f} s")
    if run.adapter_version:
        parts.append(f"adapter {html.escape(run.adapter_version)}")
    error = f"<div class='kz-error'>{html.escape(run.error)}</div>" if run.error else ""
    return (f"<div class='kz-bar' role='progressbar' aria-valuenow='{pct:.0f}' aria-valuemin='0' "
            f"aria-valuemax='100'><div class='kz-fill' style='width:{pct:.1f}%'></div></div>"
            f"<div class='kz-line'>{' · '.join(parts)}</div>{error}")


def totals_markdown(view: DashboardView) -> str:
    """The dashboard's one-row totals table, and the follower's error if there is one."""
    t = view.stats
    up_rate = f"{100 * t.thumbs_up / t.ratings:.0f}%" if t.ratings else "–"
    summary = (
        f"| exchanges | conversations | ratings | 👍 | 👎 | 👍 rate | pending review | knowledge items "
        f"| adapters | active version |\n|---|---|---|---|---|---|---|---|---|---|\n"
        f"| {t.exchanges} | {t.conversations} | {t.ratings} | {t.thumbs_up} "
        f"| {t.thumbs_down} | {up_rate} | {t.pending_review} | {t.knowledge_items} "
        f"| {t.adapters} | **{t.active_adapter}** (serving {t.serving}"
        f"{f' on {t.engine_serving}' if t.engine != 'embedded' else ''}) |"
    )
    if t.follower_error:
        summary += f"\n\n⚠️ {t.follower_error}"
    return summary + engine_warning(t.engine_serving, t.engine_error)


def engine_warning(serving: str, problem: str | None) -> str:
    """A warning paragraph when the configured external engine is not the one answering, else ""."""
    if not problem:
        return ""
    return f"\n\n⚠️ {problem} Replies come from the **{serving}** engine until it answers again."


def applied(value: bool | None) -> str:
    """Whether the adapter produced a reply: "yes", "no", or "" for replies stored before routing."""
    return "" if value is None else "yes" if value else "no"


def recent_frame(view: DashboardView) -> pd.DataFrame:
    """The recent exchanges, newest first."""
    return pd.DataFrame([[when(e.created_at), short(e.question, 80), short(e.answer, 120), e.emotion, e.source,
                          e.adapter_version, applied(e.adapter_applied), round(e.latency_ms)] for e in view.recent],
                        columns=RECENT_COLUMNS)


def rates_by_version_and_source(view: RatingsByVersion) -> list[tuple[str, str, int, int]]:
    """(version, source, ratings, 👍) per version and source, adapter_applied summed over, in version order:
    the points of plots.rating_by_version_and_source."""
    points = []
    for v in view.versions:
        by_source: dict[str, list[int]] = {}
        for g in v.groups:
            counts = by_source.setdefault(g.source, [0, 0])
            counts[0] += g.ratings
            counts[1] += g.thumbs_up
        points += [(v.version, source, n, up) for source, (n, up) in by_source.items()]
    return points


def feedback_frame(view: FeedbackList) -> pd.DataFrame:
    """The review table."""
    return pd.DataFrame([[f.id, f.rating, f.status, short(f.question), short(f.answer), short(f.correction),
                          when(f.updated_at)] for f in view.feedback], columns=FEEDBACK_COLUMNS)


def feedback_detail(fb: FeedbackView) -> str:
    """One rating in full, as Markdown with the user's and the bot's text escaped."""
    return (f"**#{fb.id}** · {'👍' if fb.rating == 'up' else '👎'} · {fb.status}\n\n"
            f"**User:** {html.escape(fb.question)}\n\n**Bot:** {html.escape(fb.answer)}")


def review_message(fb: FeedbackView) -> str:
    """What an approval or rejection did."""
    note = " It is served from memory now and will be trained in the next round." \
        if fb.status == "approved" and fb.correction else ""
    return f"Feedback #{fb.id} {fb.status}.{note}"


def weights_state(item: KnowledgeView) -> str:
    """Where the weights stand on an item: learned by a version, queued for training, or memory only (parked)."""
    if item.parked:
        return "memory only"
    if item.learned_version:
        return f"learned ({item.learned_version})"
    return f"queued ({item.train_attempts} tries)" if item.train_attempts else "queued"


def knowledge_frame(view: KnowledgeList) -> pd.DataFrame:
    """The knowledge table; parked items say "memory only" (the weights did not learn them)."""
    return pd.DataFrame([[i.id, short(i.question), short(i.answer), i.category,
                          f"{i.origin} · {i.source_url}" if i.source_url else i.origin,
                          "⏳ pending review" if i.status == "pending" else i.status, i.verbatim, i.enabled,
                          i.hit_count, weights_state(i)] for i in view.items], columns=KNOWLEDGE_COLUMNS)


def paraphrase_frame(view: ParaphraseList) -> pd.DataFrame:
    """Synthetic paraphrases: "train" ones are trained, "check" ones measure generality."""
    return pd.DataFrame([[p.id, p.item_id, p.question, p.use, when(p.created_at)] for p in view.paraphrases],
                        columns=PARAPHRASE_COLUMNS)


def to_teach_frame(view: ToTeachList) -> pd.DataFrame:
    """The "to teach" queue, most asked first; a question Kaizen proposed itself says so."""
    def why(q: ToTeachView) -> str:
        if q.origin == "proposed":
            return f"proposed by Kaizen (from item #{q.from_item_id})" if q.from_item_id else "proposed by Kaizen"
        return ", ".join(f"{REASON_LABELS.get(k, k)} ×{n}" for k, n in sorted(q.reasons.items()))

    return pd.DataFrame([[short(q.question), q.count, why(q), when(q.last_asked),
                          " · ".join(short(p, 60) for p in q.phrasings if p != q.question)]
                         for q in view.questions], columns=TO_TEACH_COLUMNS)


def import_message(filename: str, result: ImportResult) -> str:
    """What an import stored, and the lines it skipped (at most MAX_LISTED_LINES)."""
    skipped = "".join(f"\n- skipped line {e.line}: {html.escape(e.reason)}"
                      for e in result.skipped[:MAX_LISTED_LINES])
    return (f"✅ Imported {result.imported} item(s) from {html.escape(filename)}; "
            f"{result.duplicates} already known.{skipped}")


def import_error_message(filename: str, exc: ImportFileError) -> str:
    """Why a file was not imported, line by line (at most MAX_LISTED_LINES)."""
    lines = "\n".join(f"- {html.escape(str(e))}" for e in exc.errors[:MAX_LISTED_LINES])
    more = f"\n- … and {len(exc.errors) - MAX_LISTED_LINES} more" if len(exc.errors) > MAX_LISTED_LINES else ""
    return (f"❌ **{html.escape(filename)} was not imported** ({len(exc.errors)} problem(s)). "
            f"Fix these lines, or tick *skip invalid lines*:\n\n{lines}{more}")


def persona_info(preview: PersonaPreview) -> str:
    """The token count against the budget, and the warning when it is over."""
    info = f"**{preview.tokens} tokens** (budget {preview.budget})"
    if preview.warning:
        info += f"\n\n⚠️ {preview.warning}"
    return info


def schedule_message(cfg: ScheduleView) -> str:
    """The schedule in one sentence."""
    if not cfg.enabled:
        return "Scheduled training is off."
    return f"Every {cfg.minutes} min, a round trains if at least {cfg.min_items} new item(s) arrived."


def runs_frame(view: RunsView) -> pd.DataFrame:
    """The run history, newest first."""
    return pd.DataFrame([[r.id, r.status, r.trigger, r.round_index, f"{r.step}/{r.total_steps}", fmt(r.loss),
                          r.adapter_version or "", when(r.started_at), r.error or ""] for r in view.runs],
                        columns=RUN_COLUMNS)


def adapters_frame(view: AdaptersView) -> pd.DataFrame:
    """The versions table: base first, then every version with its round's metrics."""
    data = [["●" if view.active == "base" else "", "base", "", *[""] * len(METRIC_KEYS), "",
             "the model without an adapter"]]
    for v in view.versions:
        data.append(["●" if v.active else "", v.version, v.verdict,
                     *[fmt(getattr(v.metrics, key)) for key in METRIC_KEYS], when(v.created_at), v.reason])
    return pd.DataFrame(data, columns=ADAPTER_COLUMNS)


def adapters_note(view: AdaptersView) -> str:
    """What is active and served, and the follower's error if there is one."""
    where = f" on {view.engine_serving}" if view.engine != "embedded" else ""
    note = f"Active: **{view.active}** (serving {view.serving}{where})."
    if view.pinned:
        note += (f"\n\n📌 **{view.pinned}** is pinned: you chose it by hand, so rounds that pass the gate keep "
                 "their version as *passed* instead of activating it. Release the pin to let them.")
    if view.follower_error:
        note += f"\n\n⚠️ {view.follower_error}"
    return note + engine_warning(view.engine_serving, view.engine_error)
