"""The next round's learning rate: the decay, adjusted by scripted round outcomes (issue 17, part 4)."""

from types import SimpleNamespace

import pytest

from kaizen.lr_schedule import PastRound, past_rounds, plan_lr
from kaizen.metrics import RoundMetrics
from kaizen.settings import GateLimits, TrainConfig
from trainer.gate import decide

CFG = TrainConfig.model_construct()  # the defaults: factor 0.5, lowest scale 0.25


def promoted(v: str) -> PastRound:
    return PastRound(version=v, round_index=int(v[1:]) - 1, verdict="promoted")


def hurt(v: str, *checks: str) -> PastRound:
    return PastRound(version=v, round_index=int(v[1:]) - 1, verdict="rejected", failed_checks=checks or ("locality",))


def test_with_no_history_the_rate_is_the_decay():
    plan = plan_lr(CFG, 0, [])
    assert plan.lr == pytest.approx(CFG.round_lr(0)) and plan.scale == 1.0
    assert plan.kto_lr == pytest.approx(CFG.kto_lr)
    assert plan.reason == "decay lr0 × gamma^0, never below lr0 × 0.5"


def test_a_round_that_hurt_halves_the_next_rate_and_says_why():
    plan = plan_lr(CFG, 2, [promoted("v1"), hurt("v2", "locality", "new_recall")])
    assert plan.scale == 0.5
    assert plan.lr == pytest.approx(CFG.round_lr(2) * 0.5)
    assert "× 0.5 since v2 hurt (locality)" in plan.reason
    assert plan.kto_scale == 1.0  # the knowledge adapter's step was too big, not the preference adapter's


def test_harm_accumulates_to_a_floor_and_a_promoted_round_recovers_one_step():
    history = [hurt("v1", "retention"), hurt("v2", "leak"), hurt("v3", "locality")]
    assert plan_lr(CFG, 3, history).scale == CFG.lr_feedback_min_scale == 0.25
    assert "already at the lowest scale" in plan_lr(CFG, 3, history).reason
    after = plan_lr(CFG, 4, [*history, promoted("v4")])
    assert after.scale == 0.5 and "full rate" not in after.reason
    back = plan_lr(CFG, 5, [*history, promoted("v4"), promoted("v5")])
    assert back.scale == 1.0 and "full rate (v5 was promoted)" in back.reason


def test_a_round_that_learned_too_little_does_not_lower_the_rate():
    """A smaller step would learn even less: rejected for recall only counts as a recovery."""
    plan = plan_lr(CFG, 2, [hurt("v1", "locality"), hurt("v2", "new_recall")])
    assert plan.scale == 1.0
    assert "rejected for recall only" in plan.reason


def test_a_preference_adapter_that_hurt_lowers_only_the_kto_rate():
    dropped = PastRound.from_row(version="v1", round_index=0, verdict="promoted", reason="passed: ...",
                                 metrics={"failed_checks": [], "preference_dropped": "rejected: locality 0.9"})
    plan = plan_lr(CFG, 1, [dropped])
    assert (plan.scale, plan.kto_scale) == (1.0, 0.5)
    assert plan.kto_lr == pytest.approx(CFG.kto_lr * 0.5)
    assert "KTO × 0.5 since v1 hurt" in plan.reason


def test_a_preference_adapter_dropped_from_a_version_that_failed_anyway_is_not_blamed():
    row = PastRound.from_row(version="v1", round_index=0, verdict="rejected", reason="rejected: new-fact recall 0%",
                             metrics={"failed_checks": ["new_recall"],
                                      "preference_dropped": "rejected: new-fact recall 0%; passed: locality 0.99"})
    assert not row.preference_hurt
    assert plan_lr(CFG, 1, [row]).kto_scale == 1.0


def test_older_versions_are_read_from_their_reason_text():
    row = PastRound.from_row(
        version="v3", round_index=2, verdict="rejected", metrics={},
        reason="rejected: locality 0.930 as served (needs 0.950); drift 0.40 (reported, not gated); "
               "passed: new-fact recall 100% (2 of 2 learned; needs 1); retention 100% (active version: 100%)")
    assert row.failed_checks == ("locality",)  # "retention" and "new-fact recall" are among the passes
    assert plan_lr(CFG, 3, [row]).scale == 0.5


def test_the_gate_names_its_failed_checks_for_the_schedule():
    limits = GateLimits.model_construct()
    metrics = RoundMetrics(new_facts=2, new_recall=0.0, retention=0.5, baseline_retention=1.0, locality=0.5,
                           leak=0.0, preference_auc=0.2, baseline_preference_auc=0.8, heldout_ratings=10)
    verdict = decide(metrics, limits)
    assert set(verdict.failed) == {"new_recall", "retention", "locality", "preference"}
    assert decide(RoundMetrics(locality=None), limits).failed == ("unmeasured",)
    ok = decide(RoundMetrics(new_facts=1, new_recall=1.0, locality=1.0), limits)
    assert ok.promote and ok.failed == ()
    plan = plan_lr(CFG, 1, [PastRound("v1", 0, "rejected", verdict.failed, "preference" in verdict.failed)])
    assert (plan.scale, plan.kto_scale) == (0.5, 0.5)


def test_stored_rows_are_read_in_order_and_the_adjustment_can_be_turned_off():
    rows = [SimpleNamespace(version="v1", round_index=0, verdict="rejected", reason="", metrics={
        "failed_checks": ["leak"]})]
    assert [p.failed_checks for p in past_rounds(rows)] == [("leak",)]
    off = TrainConfig.model_construct(lr_feedback=False)
    plan = plan_lr(off, 1, past_rounds(rows))
    assert plan.scale == 1.0 and plan.lr == pytest.approx(off.round_lr(1))
    assert "off" in plan.reason
    with pytest.raises(ValueError, match="round_index"):
        plan_lr(CFG, -1, [])
