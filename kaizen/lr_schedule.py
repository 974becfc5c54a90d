"""The learning rate of the next round: the per-round decay, adjusted by how the last rounds ended.

Our brief's learning rate "decays round by round" and "adjusts based on the results of each
iteration". The decay is `TrainConfig.round_lr` (lr0 · gamma^k towards a floor). On top of it a
scale in (0, 1] listens to results, after PyTorch's `ReduceLROnPlateau` (a factor, a floor on the
scale), with one difference: a round is an edit, not an epoch, so the scale also recovers.

Walking the earlier versions in order, the scale starts at 1 and
- a round that **hurt** (the gate found retention, leak or locality worse: the step was too big)
  multiplies it by `lr_feedback_factor`, down to `lr_feedback_min_scale`;
- a promoted round, or one rejected **only** because it did not learn its new facts (a smaller step
  would learn even less), divides it by the factor again, up to 1.

The preference adapter (KTO) has its own scale by the same rule, on its own outcome: a round whose
new preference adapter failed the gate's preference check, or was left out of the version because it
hurt, counts as one that hurt. Failed and no-data runs made no version and do not count.

The outcome of a version is read from its metrics' `failed_checks` (the gate's check names, see
`trainer.gate.decide`); versions stored before those were recorded are read from their reason text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kaizen.settings import TrainConfig

# The gate's checks (trainer.gate.decide) and which of them mean "the step was too big".
HARM_CHECKS = ("retention", "leak", "locality")
PREFERENCE_CHECK = "preference"
RECALL_CHECK = "new_recall"
# How an older version's reason names each failed check ("rejected: <failures>; passed: ...").
_REASON_WORDS = {"retention": "retention", "leak": "leaking", "locality": "locality",
                 "preference": "held-out ratings", "new_recall": "new-fact recall"}


@dataclass(frozen=True)
class PastRound:
    """What the rate needs to know of one earlier version (an `adapter_versions` row)."""

    version: str
    round_index: int
    verdict: str  # promoted | passed | rejected
    failed_checks: tuple[str, ...] = ()  # the gate's failed check names
    preference_hurt: bool = False  # the new preference adapter failed its check or was left out

    @classmethod
    def from_row(cls, *, version: str, round_index: int, verdict: str, reason: str,
                 metrics: dict[str, Any] | None) -> PastRound:
        """Read a stored version; `failed_checks` from its metrics, else from the reason's wording."""
        metrics = metrics or {}
        failed = metrics.get("failed_checks")
        if failed is None:  # stored before the checks were recorded
            failures = reason.split("; passed:")[0] if reason.startswith("rejected:") else ""
            failed = [name for name, word in _REASON_WORDS.items() if word in failures]
        # A new preference adapter is left out whenever its version fails; it hurt if its own check failed
        # then, or if the version passed once it was left out.
        dropped = str(metrics.get("preference_dropped") or "")
        hurt = PREFERENCE_CHECK in failed or (bool(dropped) and verdict != "rejected") or (
            _REASON_WORDS[PREFERENCE_CHECK] in dropped.split("; passed:")[0])
        return cls(version=version, round_index=round_index, verdict=verdict, failed_checks=tuple(failed),
                   preference_hurt=hurt)


@dataclass(frozen=True)
class LrPlan:
    """The next round's peak learning rates and why. `lr` = `decayed` · `scale` (and the same for KTO)."""

    round_index: int
    decayed: float  # TrainConfig.round_lr(round_index)
    scale: float  # (0, 1], from the results so far
    lr: float  # peak learning rate of the knowledge adapter
    kto_scale: float
    kto_lr: float  # peak learning rate of the preference adapter (KTO)
    reason: str  # one line for the admin tab and the run row

    def to_dict(self) -> dict[str, Any]:
        return {"round_index": self.round_index, "decayed": self.decayed, "scale": self.scale, "lr": self.lr,
                "kto_scale": self.kto_scale, "kto_lr": self.kto_lr, "reason": self.reason}


def past_rounds(rows: Sequence[Any]) -> list[PastRound]:
    """`PastRound`s of stored versions (objects with version, round_index, verdict, reason and
    metrics, such as `adapter_versions` rows), in the order given (oldest first)."""
    return [PastRound.from_row(version=r.version, round_index=r.round_index, verdict=r.verdict, reason=r.reason,
                               metrics=r.metrics) for r in rows]


def _walk(history: Sequence[PastRound], hurt: Any, cfg: TrainConfig) -> tuple[float, str]:
    """The scale after `history` (oldest first) and what its last change was."""
    scale, why = 1.0, ""
    for past in history:
        if hurt(past):
            new = max(cfg.lr_feedback_min_scale, scale * cfg.lr_feedback_factor)
            checks = ", ".join(c for c in past.failed_checks if c in HARM_CHECKS) or "preference"
            why = f"{past.version} hurt ({checks})" + ("" if new < scale else ", already at the lowest scale")
        elif past.verdict == "promoted" or set(past.failed_checks) <= {RECALL_CHECK}:
            new = min(1.0, scale / cfg.lr_feedback_factor)
            if new > scale:
                why = f"{past.version} was {'promoted' if past.verdict == 'promoted' else 'rejected for recall only'}"
        else:
            new = scale
        scale = new
    return scale, why


def plan_lr(cfg: TrainConfig, round_index: int, history: Sequence[PastRound]) -> LrPlan:
    """The peak learning rates of round `round_index` after the versions in `history` (oldest first).

    Raises ValueError if `round_index` is negative (as `TrainConfig.round_lr`)."""
    decayed = cfg.round_lr(round_index)
    base = f"decay lr0 × gamma^{round_index}, never below lr0 × {cfg.min_lr_ratio:g}"
    last = f"; last round {_outcome(history[-1])}" if history else ""
    if not cfg.lr_feedback:
        return LrPlan(round_index, decayed, 1.0, decayed, 1.0, cfg.kto_lr,
                      f"{base}{last} (adjustment by results is off)")
    scale, why = _walk(history, lambda p: any(c in HARM_CHECKS for c in p.failed_checks), cfg)
    kto_scale, kto_why = _walk(history, lambda p: p.preference_hurt, cfg)
    parts = [base + last]
    if scale < 1.0:
        parts.append(f"× {scale:g} since {why}")
    elif history:
        parts.append(f"full rate ({why})" if why else "full rate")
    if kto_scale < 1.0:
        parts.append(f"KTO × {kto_scale:g} since {kto_why}")
    return LrPlan(round_index, decayed, scale, decayed * scale, kto_scale, cfg.kto_lr * kto_scale, "; ".join(parts))


def _outcome(past: PastRound) -> str:
    """"v3 promoted", "v4 rejected (locality, new_recall)"."""
    failed = f" ({', '.join(past.failed_checks)})" if past.failed_checks else ""
    return f"{past.version} {past.verdict}{failed}"
