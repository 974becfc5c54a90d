"""The promotion gate: a new version is served only if it is better than the active one on what
this round was asked to learn, and no worse elsewhere. It is built so that learning cannot stall.

Promote only if
  (a) the weights now recall exactly at least one of this round's new facts (and at least the share
      `min_new_recall` of them); a round with no new facts must keep what it replayed instead (b);
  (b) retention of the replayed, already learned facts is not below the active version's recall of
      those same facts (minus `retention_slack`);
  (c) few held-out prompts get a taught answer (the "say this to everything" failure, `max_leak`);
  (d) locality on held-out prompts as served (teacher-forced top-1 agreement with the base model's
      own answers, never trained on; a prompt that routing by scope sends to the base model agrees
      by construction, so this measures the router's false positives times the adapter's damage)
      is at least `min_locality`; `leak` is measured as served too.
  (e) with a new preference adapter (KTO on ratings, served on every reply), its agreement with the
      held-out ratings (reward AUC, `trainer.preference.reward_auc`) is not below the active version's
      (minus `preference_slack`), as a non-inferiority test: below only by more than `preference_z`
      standard errors of the difference (DeLong 1988, `trainer.preference.auc_difference_se`), since on
      a few held-out ratings the AUC moves in large steps; (d) then measures locality with it applied,
      as served. A failed (e) leaves the preference adapter out of the version, not the round.
Drift (shared greedy prefix with the base model) is still reported but no longer gates: measured
against the base while every round continues from the active version, it only grows, and gating
on it rejected every round after the second (FACTS.md, 2026-12-01). Paraphrase recall is reported
too: the memory serves paraphrases at once.

`settle` then says what happens to each new fact: learned (promoted and recalled), or one more
attempt, and parked once it has had `park_after` attempts, so a fact the weights cannot learn
never blocks later rounds (a rejected round counts attempts too).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from kaizen.metrics import RoundMetrics
from kaizen.settings import GateLimits
from trainer.dataset import Fact


@dataclass(frozen=True)
class Verdict:
    promote: bool
    reason: str
    held: bool = False  # passed the gate, but not activated: the admin pinned another version
    failed: tuple[str, ...] = ()  # the failed checks' names (kaizen.lr_schedule reads them)

    @property
    def label(self) -> str:
        """The run's status and the version's verdict: promoted, passed (held by a pin) or rejected."""
        return "promoted" if self.promote else "passed" if self.held else "rejected"

    def held_by(self, pinned: str | None) -> Verdict:
        """This verdict, or, if it would promote while `pinned` is set, a held one that says why."""
        if not self.promote or pinned is None:
            return self
        return Verdict(False, f"{self.reason}; passed the gate but not activated: the admin pinned {pinned} "
                              "(release the pin to serve new versions again)", held=True, failed=self.failed)


def decide(metrics: RoundMetrics, limits: GateLimits) -> Verdict:
    """Judge `metrics` (new_facts/new_recall, retention/baseline_retention, leak, locality; None = not measured)."""
    failures: list[str] = []
    passes: list[str] = []
    failed: list[str] = []

    def check(name: str, ok: bool, text: str) -> None:
        (passes if ok else failures).append(text)
        if not ok:
            failed.append(name)

    n, new = metrics.new_facts, metrics.new_recall
    if n and new is not None:
        learned = round(new * n)
        need = max(1, math.ceil(limits.min_new_recall * n - 1e-9))
        check("new_recall", learned >= need, f"new-fact recall {new:.0%} ({learned} of {n} learned; needs {need})")
    retention, baseline = metrics.retention, metrics.baseline_retention
    if retention is not None and baseline is not None:
        check("retention", retention >= baseline - limits.retention_slack - 1e-9,
              f"retention {retention:.0%} (active version: {baseline:.0%})")
    leak = metrics.leak
    if leak is not None:
        check("leak", leak <= limits.max_leak,
              f"taught answers leaking into {leak:.0%} of held-out prompts (limit {limits.max_leak:.0%})")
    loc = metrics.locality
    if loc is None:
        check("unmeasured", False, "locality was not measured")
    else:
        check("locality", loc >= limits.min_locality, f"locality {loc:.3f} as served (needs {limits.min_locality:.3f})")
    auc, base_auc = metrics.preference_auc, metrics.baseline_preference_auc
    if auc is not None and base_auc is not None:
        se = metrics.preference_auc_se
        margin = limits.preference_slack + (limits.preference_z * se if se is not None else 0.0)
        error = f", difference ± {se:.2f} SE" if se is not None else ""
        check("preference", auc >= base_auc - margin - 1e-9,
              f"agreement with {metrics.heldout_ratings} held-out ratings {auc:.2f} "
              f"(active version: {base_auc:.2f}{error}; may fall {margin:.2f})")
    notes = [f"drift {metrics.drift:.2f} (reported, not gated)"] if metrics.drift is not None else []
    if failures:
        return Verdict(False, "rejected: " + "; ".join(failures + notes) + (
            "; passed: " + "; ".join(passes) if passes else ""), failed=tuple(failed))
    return Verdict(True, "passed: " + "; ".join(passes + notes))


@dataclass(frozen=True)
class FactOutcome:
    learned: list[int]  # new facts the promoted version recalls exactly
    attempted: list[int]  # new facts trained without being learned: one more attempt each
    parked: list[int]  # of those, the ones that have now had park_after attempts


def settle(new_facts: Sequence[Fact], metrics: RoundMetrics, *, promoted: bool, park_after: int) -> FactOutcome:
    """What this round means for each new fact (see the module docstring). A fact counts as learned
    only when the version is promoted: a rejected version is never served, so nothing was learned."""
    learned, attempted, parked = [], [], []
    for fact in new_facts:
        check = metrics.facts.get(str(fact.item_id))
        if promoted and check is not None and bool(check[1]):
            learned.append(fact.item_id)
            continue
        attempted.append(fact.item_id)
        if fact.attempts + 1 >= park_after:
            parked.append(fact.item_id)
    return FactOutcome(learned=learned, attempted=attempted, parked=parked)
