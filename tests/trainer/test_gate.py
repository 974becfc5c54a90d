"""The gate with scripted metrics, in both directions."""

import pytest

from trainer.gate import GateLimits, decide

GOOD = {"new_recall": 1.0, "retention": 1.0, "baseline_retention": 1.0, "drift": 0.1}


def test_good_metrics_promote():
    v = decide(GOOD, GateLimits())
    assert v.promote and v.label == "promoted" and "new-fact recall 100%" in v.reason


@pytest.mark.parametrize("change, reason", [
    ({"new_recall": 0.5}, "new-fact recall 50%"),
    ({"retention": 0.5}, "retention 50% (active adapter: 100%)"),
    ({"drift": 0.9}, "drift 0.90"),
    ({"drift": None}, "drift was not measured"),
    ({"leak": 0.5}, "leaking into 50% of held-out prompts"),
])
def test_each_failure_rejects_with_its_reason(change, reason):
    v = decide({**GOOD, **change}, GateLimits(max_drift=0.5))
    assert not v.promote and v.label == "rejected" and reason in v.reason


def test_unmeasured_parts_do_not_block():
    assert decide({"new_recall": None, "retention": None, "baseline_retention": None, "drift": 0.0},
                  GateLimits()).promote
    # retention equal to a weak active adapter's is fine; the slack allows a small drop
    assert decide({**GOOD, "retention": 0.5, "baseline_retention": 0.5}, GateLimits()).promote
    assert decide({**GOOD, "retention": 0.9}, GateLimits(retention_slack=0.2)).promote


def test_limits_are_respected_at_the_boundary():
    assert decide({**GOOD, "drift": 0.5}, GateLimits(max_drift=0.5)).promote
    assert not decide({**GOOD, "drift": 0.5001}, GateLimits(max_drift=0.5)).promote
