"""What the admin service returns: the response models of the admin REST API (bot/admin_api.py),
which the admin tab (bot/ui_admin.py) reads too.

Each model's JSON is exactly the field set the API has always answered with. Timestamps are
naive UTC datetimes in Python and ISO 8601 with a trailing "Z" in JSON. A round's metrics are a
`kaizen.metrics.RoundMetrics`.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, PlainSerializer

from kaizen.metrics import RoundMetrics
from kaizen.prompts import Persona


def _iso_z(value: dt.datetime) -> str:
    return value.isoformat() + "Z"


# Only in JSON: FastAPI dumps a returned model to Python and validates it again before it writes
# JSON, and a string with "Z" would come back as an aware datetime.
UtcTime = Annotated[dt.datetime, PlainSerializer(_iso_z, return_type=str, when_used="json")]


class _View(BaseModel):
    model_config = ConfigDict(frozen=True)


class RunView(_View):
    """One training run, as `GET /admin/api/runs/{id}` answers it."""

    id: int
    status: str
    trigger: str
    round_index: int
    phase: str
    step: int
    total_steps: int
    loss: float | None
    lr: float | None
    eta_s: float | None
    loss_curve: list[float]
    data_counts: dict[str, Any]
    adapter_version: str | None
    error: str | None
    started_at: UtcTime | None
    finished_at: UtcTime | None


class RunsView(_View):
    """Recent runs, newest first, and the id of the run going in this process (or None)."""

    running: int | None
    runs: list[RunView]


class RunProgress(_View):
    """What the progress panel follows: the run going in this process (`running`), and that run
    or, when none is going here, the latest run (`run`, None before the first)."""

    running: int | None
    run: RunView | None


class TrainStarted(_View):
    run_id: int


class AdapterVersionView(_View):
    version: str
    verdict: str
    reason: str
    metrics: RoundMetrics
    round_index: int
    run_id: int | None
    created_at: UtcTime | None
    active: bool


class AdaptersView(_View):
    """Every stored version, oldest first; `active` is what the database says should be served,
    `serving` what this process's engine serves, `follower_error` why they differ (or None),
    `pinned` the version an admin activated by hand, which rounds do not replace (or None)."""

    active: str
    serving: str
    follower_error: str | None
    versions: list[AdapterVersionView]
    pinned: str | None = None
    engine: str = "embedded"  # the configured engine, as in /healthz: embedded, or vllm (an external server)
    engine_serving: str = "embedded"  # the engine answering now (embedded while an external one fails)
    engine_error: str | None = None  # why the configured engine is not the one answering


class ActivateResult(_View):
    active: str
    swap_seconds: float | None
    pinned: str | None = None  # the pin after the call: activating by hand pins the version


class StatsView(_View):
    """The dashboard's totals and what is served."""

    conversations: int
    exchanges: int
    ratings: int
    thumbs_up: int
    thumbs_down: int
    pending_review: int
    knowledge_items: int
    adapters: int
    active_adapter: str
    serving: str
    running_run: int | None
    follower_error: str | None
    engine: str = "embedded"
    engine_serving: str = "embedded"
    engine_error: str | None = None


class ExchangeView(_View):
    id: str
    created_at: UtcTime
    question: str
    answer: str
    emotion: str
    source: str
    adapter_version: str
    latency_ms: float
    adapter_applied: bool | None = None  # whether the version's adapter produced it; None: stored before routing


class RatingGroup(_View):
    """The ratings of one version's replies from one source, with or without its adapter."""

    source: str  # memory (a taught answer, verbatim) | rag (the model with retrieved facts) | model (alone)
    adapter_applied: bool | None  # None: replies stored before routing existed
    ratings: int
    thumbs_up: int
    up_rate: float  # thumbs_up / ratings, to three decimals


class VersionRatings(_View):
    """The ratings of the replies one version served: in all, and per source and adapter_applied."""

    version: str
    ratings: int
    thumbs_up: int
    up_rate: float
    groups: list[RatingGroup]


class RatingsByVersion(_View):
    """`GET /admin/api/ratings/by-version`: the versions that have rated replies, in the order they
    were created ("base" first). Each exchange counts once, with its latest rating."""

    versions: list[VersionRatings]


class DashboardView(_View):
    """Everything the admin tab's dashboard draws (not served by the REST API)."""

    stats: StatsView
    rating_by_day: list[tuple[str, int, int]]  # (day, 👍, 👎)
    rating_by_adapter: list[tuple[str, int, int]]  # (version, 👍, 👎), in the order versions were created
    ratings_by_version: RatingsByVersion  # the same ratings per source and adapter_applied
    emotions: dict[str, int]
    sources: dict[str, int]
    recent: list[ExchangeView]  # newest first


class FeedbackView(_View):
    id: int
    exchange_id: str
    rating: str
    status: str
    correction: str | None
    question: str
    answer: str
    emotion: str
    adapter_version: str
    updated_at: UtcTime | None


class FeedbackList(_View):
    feedback: list[FeedbackView]


class KnowledgeView(_View):
    id: int
    question: str
    answer: str
    category: str
    origin: str
    verbatim: bool
    enabled: bool
    hit_count: int
    feedback_id: int | None
    updated_at: UtcTime | None
    train_attempts: int = 0  # rounds that trained it without learning it
    learned_version: str | None = None  # the version whose weights first recalled it exactly
    parked: bool = False  # not learned after park_after rounds: served by the memory only
    status: str = "approved"  # approved | pending (waiting for review: never served or trained)
    source_url: str | None = None  # where it came from (a Wikipedia article)


class KnowledgeList(_View):
    items: list[KnowledgeView]


class ParaphraseView(_View):
    id: int
    item_id: int
    question: str
    origin: str  # synthetic
    use: str  # train | check (never trained: measures generality)
    created_at: UtcTime | None


class ParaphraseList(_View):
    paraphrases: list[ParaphraseView]


class ParaphrasesWritten(_View):
    """What one request for synthetic paraphrases did."""

    items: int
    kept: int
    dropped: dict[str, int]  # reason -> lines the model wrote that were not kept
    paraphrases: list[ParaphraseView]  # the kept ones


class ToTeachView(_View):
    """One group of the "to teach" queue (bot/curiosity.py): `key` names it in answer/dismiss/wikipedia."""

    key: str
    question: str
    count: int  # times asked (0: a question Kaizen proposed)
    origin: str  # asked | proposed
    phrasings: list[str]
    reasons: dict[str, int]  # down | low_confidence | unsure -> exchanges
    last_asked: UtcTime | None
    from_item_id: int | None


class ToTeachList(_View):
    questions: list[ToTeachView]


class ProposedQuestions(_View):
    items: int  # taught items the model was asked about
    added: list[str]  # new questions in the queue
    dropped: dict[str, int] = {}  # reason -> lines (or items, for "the model wrote no question") not added


class KnowledgeDeleted(_View):
    deleted: int


class SkippedLine(_View):
    line: int
    reason: str


class ImportResult(_View):
    imported: int
    duplicates: int
    skipped: list[SkippedLine]


class PersonaPreview(_View):
    """The system prompt as served (neutral tone), its token count, the budget and a warning
    when it is over (or None)."""

    prompt: str
    tokens: int
    budget: int
    warning: str | None


class LrPlanView(_View):
    """The next round's peak learning rates and why (`kaizen.lr_schedule.plan_lr`): `lr` = `decayed` × `scale`."""

    round_index: int
    decayed: float
    scale: float
    lr: float
    kto_scale: float
    kto_lr: float
    reason: str


class ScheduleView(_View):
    enabled: bool
    minutes: int
    min_items: int


class SettingsView(_View):
    """`schedule` is None when this process has no scheduler (`--no-schedule`)."""

    auto_approve: bool
    schedule: ScheduleView | None
    persona: Persona
    persona_preview: PersonaPreview


class ExportResult(_View):
    """A written training set (the REST API sends the file itself)."""

    path: Path
    rows: int
