"""The gate with scripted metrics, in both directions."""

import pytest

from kaizen.metrics import RoundMetrics
from kaizen.settings import GateLimits
from trainer.gate import decide

GOOD = {"new_recall": 1.0, "retention": 1.0, "baseline_retention": 1.0, "drift": 0.1}


def m(**values) -> RoundMetrics:
    return RoundMetrics(**values)


def test_good_metrics_promote():
    v = decide(m(**GOOD), GateLimits())
    assert v.promote and v.label == "promoted" and "new-fact recall 100%" in v.reason


@pytest.mark.parametrize(("change", "reason"), [
    ({"new_recall": 0.5}, "new-fact recall 50%"),
    ({"retention": 0.5}, "retention 50% (active adapter: 100%)"),
    ({"drift": 0.9}, "drift 0.90"),
    ({"drift": None}, "drift was not measured"),
    ({"leak": 0.5}, "leaking into 50% of held-out prompts"),
])
def test_each_failure_rejects_with_its_reason(change, reason):
    v = decide(m(**{**GOOD, **change}), GateLimits(max_drift=0.5))
    assert not v.promote and v.label == "rejected" and reason in v.reason


def test_unmeasured_parts_do_not_block():
    assert decide(m(new_recall=None, retention=None, baseline_retention=None, drift=0.0),
                  GateLimits()).promote
    # retention equal to a weak active adapter's is fine; the slack allows a small drop
    assert decide(m(**{**GOOD, "retention": 0.5, "baseline_retention": 0.5}), GateLimits()).promote
    assert decide(m(**{**GOOD, "retention": 0.9}), GateLimits(retention_slack=0.2)).promote


def test_limits_are_respected_at_the_boundary():
    assert decide(m(**{**GOOD, "drift": 0.5}), GateLimits(max_drift=0.5)).promote
    assert not decide(m(**{**GOOD, "drift": 0.5001}), GateLimits(max_drift=0.5)).promote
