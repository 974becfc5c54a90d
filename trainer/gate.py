"""The promotion gate: a new adapter is served only if it measurably does not get worse.

Promote only if
  (a) new-fact recall meets its threshold,
  (b) retention of earlier facts is not below what the active adapter recalled of them, and
  (d) drift on held-out general prompts (never trained on) is within its limit, and few of those
      prompts get a taught answer (the "say this to everything" failure).
Paraphrase recall (c) is measured and stored, and reported, but does not block: the retrieval
memory serves paraphrases at once, and the weights catch up over rounds.
"""

from __future__ import annotations

from dataclasses import dataclass

from kaizen.metrics import RoundMetrics
from kaizen.settings import GateLimits


@dataclass(frozen=True)
class Verdict:
    promote: bool
    reason: str

    @property
    def label(self) -> str:
        return "promoted" if self.promote else "rejected"


def decide(metrics: RoundMetrics, limits: GateLimits) -> Verdict:
    """Judge `metrics` (new_recall, retention, baseline_retention, drift; None = not measured)."""
    failures: list[str] = []
    passes: list[str] = []
    new = metrics.new_recall
    if new is not None:
        (passes if new >= limits.min_new_recall else failures).append(
            f"new-fact recall {new:.0%} (needs {limits.min_new_recall:.0%})")
    retention, baseline = metrics.retention, metrics.baseline_retention
    if retention is not None and baseline is not None:
        (passes if retention >= baseline - limits.retention_slack else failures).append(
            f"retention {retention:.0%} (active adapter: {baseline:.0%})")
    leak = metrics.leak
    if leak is not None:
        (passes if leak <= limits.max_leak else failures).append(
            f"taught answers leaking into {leak:.0%} of held-out prompts (limit {limits.max_leak:.0%})")
    drift = metrics.drift
    if drift is None:
        failures.append("drift was not measured")
    else:
        (passes if drift <= limits.max_drift else failures).append(f"drift {drift:.2f} (limit {limits.max_drift:.2f})")
    if failures:
        return Verdict(False, "rejected: " + "; ".join(failures))
    return Verdict(True, "passed: " + "; ".join(passes))
