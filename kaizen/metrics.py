"""What one training round measured: the typed seam between the trainer, the gate, the admin
tab, the command line and the database (stored as JSON in `adapter_versions.metrics` and in
each version's `meta.json`).

The names follow lifelong model editing (EasyEdit): reliability is `new_recall` (the taught
question is answered), generality is `paraphrase_recall` (phrasings never trained on are too),
locality is teacher-forced top-1 agreement with the base model's own greedy answers on held-out
prompts that were never trained on, as served: a prompt that routing by scope sends to the base
model agrees by construction (`locality`; `locality_adapter` is the figure with the adapter applied
to every prompt, `routed` the share the router sent to the adapter; `drift` and `leak` are reported
beside it).
Every figure is None when it was not measured (no new facts, no old ones, ...).

`facts` is what the version's lineage knows per fact: this round's checks, over the active version's
record for the replayed facts it did not check again (the baseline of the retention check).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

# A round's phases in order (the `phase` of its run row): the admin tab shows where a round is, also
# before its first training step (issue 13: "step 0/?" for 7 minutes of dataset, model and anchors).
ROUND_PHASES = ("dataset", "model", "anchors", "train", "preference", "evaluate", "save")
PHASE_LABELS = {"dataset": "dataset", "model": "load model", "anchors": "anchors", "train": "train",
                "preference": "preference (KTO)", "evaluate": "evaluate", "save": "save"}

@dataclass
class RoundMetrics:
    new_facts: int = 0  # taught facts that are new or changed since the active version
    old_facts: int = 0  # facts the active version was already checked on (replayed)
    new_recall: float | None = None  # reliability: share of new facts answered exactly (0..1)
    retention: float | None = None  # share of old facts still answered exactly (0..1)
    baseline_retention: float | None = None  # the active version's recall of those old facts (0..1)
    paraphrase_recall: float | None = None  # generality: held-out phrasings answered exactly (0..1)
    synthetic_recall: float | None = None  # model-written "check" phrasings (never trained) answered exactly (0..1)
    locality: float | None = None  # teacher-forced top-1 agreement with the base model on held-out prompts (0..1)
    locality_adapter: float | None = None  # the same with the adapter applied to every held-out prompt (0..1)
    routed: float | None = None  # share of held-out prompts routing by scope sends to the adapter (0..1)
    drift: float | None = None  # 1 - mean shared greedy prefix with the base model's answers, over routed prompts
    heldout_unchanged: int | None = None  # held-out answers (as served) whose first 20 tokens equal the base model's
    leak: float | None = None  # share of held-out prompts answered (as served) with a taught answer (0..1)
    heldout_total: int = 0  # number of held-out prompts
    facts: dict[str, list[Any]] = field(default_factory=dict)  # item id -> [answer key, recalled exactly]
    attempted_ids: list[int] = field(default_factory=list)  # new facts this round trained on
    learned_ids: list[int] = field(default_factory=list)  # new facts recorded as learned by this version
    parked_ids: list[int] = field(default_factory=list)  # facts parked after this round (memory only)
    learned: int = 0  # len(learned_ids)
    parked: int = 0  # len(parked_ids)
    preference_auc: float | None = None  # the preference adapter's reward AUC on held-out ratings (0..1, 0.5 = none)
    baseline_preference_auc: float | None = None  # the active version's on the same ratings (0.5: none)
    preference_auc_se: float | None = None  # standard error of their difference (DeLong 1988; None: < 2 of a label)
    heldout_ratings: int = 0  # held-out rated replies the preference check used
    kto_steps: int | None = None  # KTO optimizer steps of the preference adapter (None: not trained this round)
    kto_seconds: float | None = None
    preference_dropped: str | None = None  # why the round's new preference adapter was left out of the version
    eval_seconds: float | None = None
    steps: int | None = None  # optimizer steps taken
    train_seconds: float | None = None
    train_tokens: int | None = None
    tokens_per_s: float | None = None
    stopped_early: bool | None = None  # stopped at exact recall before max_steps
    lr: float | None = None  # the round's peak learning rate
    kto_lr: float | None = None  # the preference adapter's peak learning rate (KTO)
    lr_reason: str | None = None  # how the rates were set (kaizen.lr_schedule.LrPlan.reason)
    failed_checks: list[str] = field(default_factory=list)  # the gate's failed checks (trainer.gate.decide)
    seconds: float | None = None  # the whole round, wall time

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> RoundMetrics:
        """Read a stored row; keys this version does not know (older or newer rows) are ignored."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in (data or {}).items() if k in known})
