"""The gate with scripted metrics, in both directions, and what a round means for each new fact."""

import pytest

from kaizen.metrics import RoundMetrics
from kaizen.settings import GateLimits
from trainer.dataset import Fact
from trainer.gate import decide, settle

GOOD = {"new_facts": 10, "new_recall": 1.0, "retention": 1.0, "baseline_retention": 1.0, "locality": 0.97,
        "drift": 0.9, "leak": 0.0}


def m(**values) -> RoundMetrics:
    return RoundMetrics(**{**GOOD, **values})


def facts(n, attempts=0):
    return [Fact(i, f"Q{i}?", f"A{i}.", True, attempts) for i in range(1, n + 1)]


def test_good_metrics_promote_and_drift_no_longer_gates():
    v = decide(m(), GateLimits(min_locality=0.9))
    assert v.promote and v.label == "promoted" and "new-fact recall 100% (10 of 10 learned" in v.reason
    assert "drift 0.90 (reported, not gated)" in v.reason


def test_a_round_that_learned_8_of_10_promotes_those_8_and_retries_the_2():
    metrics = m(new_recall=0.8, facts={str(i): ["k", i <= 8] for i in range(1, 11)})
    v = decide(metrics, GateLimits())
    assert v.promote and "8 of 10 learned; needs 1" in v.reason
    out = settle(facts(10), metrics, promoted=True, park_after=3)
    assert out.learned == list(range(1, 9)) and out.attempted == [9, 10] and out.parked == []


def test_nothing_learned_is_rejected_with_a_reason_and_still_counts_attempts():
    metrics = m(new_recall=0.0, facts={str(i): ["k", False] for i in range(1, 11)})
    v = decide(metrics, GateLimits())
    assert not v.promote and "new-fact recall 0% (0 of 10 learned; needs 1)" in v.reason
    out = settle(facts(10, attempts=1), metrics, promoted=False, park_after=3)
    assert out.learned == [] and out.attempted == list(range(1, 11)) and out.parked == []
    # a fact at its last attempt is parked, whatever the verdict
    assert settle(facts(2, attempts=2), metrics, promoted=False, park_after=3).parked == [1, 2]


def test_a_rejected_version_learns_nothing_even_where_it_recalled():
    metrics = m(new_recall=1.0, facts={"1": ["k", True]}, new_facts=1)
    assert settle(facts(1), metrics, promoted=False, park_after=3).learned == []


def test_min_new_recall_is_a_share():
    assert decide(m(new_recall=0.8), GateLimits(min_new_recall=0.8)).promote
    v = decide(m(new_recall=0.7), GateLimits(min_new_recall=0.8))
    assert not v.promote and "7 of 10 learned; needs 8" in v.reason


@pytest.mark.parametrize(("change", "reason"), [
    ({"retention": 0.5}, "retention 50% (active version: 100%)"),
    ({"locality": 0.89}, "locality 0.890 as served (needs 0.900)"),
    ({"locality": None}, "locality was not measured"),
    ({"leak": 0.5}, "leaking into 50% of held-out prompts"),
])
def test_each_failure_rejects_with_its_reason(change, reason):
    v = decide(m(**change), GateLimits(min_locality=0.9))
    assert not v.promote and v.label == "rejected" and reason in v.reason


def test_no_new_facts_promotes_when_retention_is_kept_and_rejects_when_it_drops():
    assert decide(m(new_facts=0, new_recall=None, retention=0.75, baseline_retention=0.75), GateLimits()).promote
    v = decide(m(new_facts=0, new_recall=None, retention=0.5, baseline_retention=0.75), GateLimits())
    assert not v.promote and "retention 50%" in v.reason


def test_unmeasured_parts_do_not_block_but_slack_and_boundaries_hold():
    assert decide(m(new_facts=0, new_recall=None, retention=None, baseline_retention=None), GateLimits()).promote
    assert decide(m(retention=0.9), GateLimits(retention_slack=0.1)).promote
    assert not decide(m(retention=0.89), GateLimits(retention_slack=0.1)).promote
    assert decide(m(locality=0.9), GateLimits(min_locality=0.9)).promote
    assert not decide(m(locality=0.8999), GateLimits(min_locality=0.9)).promote


def test_the_preference_check_is_a_non_inferiority_test_on_the_auc_difference():
    """On 4 held-out ratings an AUC of 0.33 against 0.50 is chance (the study of 2026-12-04 left v1's
    adapter out so): the check fails only when the drop exceeds the slack by 1.645 standard errors."""
    pref = {"preference_auc": 0.33, "baseline_preference_auc": 0.5, "heldout_ratings": 4}
    v = decide(m(**pref, preference_auc_se=0.3), GateLimits())
    assert v.promote and "held-out ratings 0.33 (active version: 0.50, difference ± 0.30 SE; may fall 0.54)" in v.reason
    v = decide(m(**pref, preference_auc_se=0.05), GateLimits())  # many ratings: a real drop
    assert not v.promote and v.failed == ("preference",)
    assert not decide(m(**pref, preference_auc_se=None), GateLimits()).promote  # no SE: the AUCs alone
    assert not decide(m(**pref, preference_auc_se=0.3), GateLimits(preference_z=0.0)).promote
    assert decide(m(**pref, preference_auc_se=0.3), GateLimits(preference_z=0.4)).promote  # 0.05 + 0.12 = 0.17
