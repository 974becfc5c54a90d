"""The confidence calibration (bench/confidence.py): its sweep on made-up scores, and a tiny run on the real model."""

from __future__ import annotations

import math

import pytest

from bench.common import Options
from bench.confidence import Asked, auroc, base_f1, best, cross_validated_f1, cut_at, load_questions, run, sweep


def test_the_labelled_set_is_half_answerable_in_both_languages():
    asked = load_questions()
    assert len(asked) == 60
    for lang in ("en", "vi"):
        mine = [a for a in asked if a.language == lang]
        assert len(mine) == 30 and sum(a.answerable for a in mine) == 15
    assert all(a.expect for a in asked if a.answerable)
    quick = load_questions(quick=True)
    assert {(a.language, a.answerable) for a in quick} == {("en", True), ("en", False), ("vi", True), ("vi", False)}


def test_a_reply_is_correct_when_it_has_an_expected_word_diacritics_and_case_aside():
    a = Asked("Thủ đô của Việt Nam là gì?", "vi", True, ("ha noi",), reply="Thủ đô là Hà Nội.")
    assert a.correct
    assert not Asked("2+2?", "en", True, ("4",), reply="It is 42.").correct


def test_the_sweep_finds_the_threshold_that_separates_the_groups():
    scored = [(-2.0, True), (-1.8, True), (-1.5, False), (-1.6, True), (-0.5, False), (-0.4, False)]
    cuts = sweep(scored)
    assert len(cuts) == len(scored) + 1  # every split, and one past each end
    chosen = best(cuts)
    assert -1.6 < chosen.threshold < -1.5
    assert (chosen.flagged, chosen.precision, chosen.recall, chosen.f1) == (3, 1.0, 1.0, 1.0)
    everything = cut_at(scored, 0.0)
    assert (everything.precision, everything.recall) == (0.5, 1.0)
    assert base_f1(scored) == pytest.approx(everything.f1)
    nothing = cut_at(scored, -3.0)
    assert (nothing.flagged, nothing.precision, nothing.recall, nothing.f1) == (0, 0.0, 0.0, 0.0)
    assert auroc(scored) == 1.0 and auroc([(-1.0, True), (-1.0, False)]) == 0.5
    # Held out: fold 1's threshold (-1.15, between its -1.8 and -0.5) also flags fold 0's -1.5: F1 0.8 there,
    # 1 on fold 1.
    assert cross_validated_f1(scored) == pytest.approx(0.9)


@pytest.mark.slow
def test_a_tiny_calibration_on_the_real_model(tmp_path, embedded_model_dir):
    questions = load_questions()
    asked = [a for lang in ("en", "vi") for a in [q for q in questions if q.language == lang][::10]]
    assert len(asked) == 6 and {a.answerable for a in asked} == {True, False}
    result = run(Options(model_dir=str(embedded_model_dir), out_dir=tmp_path, quick=True), asked)
    for a in asked:
        assert a.reply.strip() and a.tokens >= 1
        assert a.confidence is not None and math.isfinite(a.confidence) and a.confidence <= 0
        assert a.stored == (None if a.replaced else a.confidence)  # what the exchange row holds
    scored = [(a.confidence, not a.answerable) for a in asked if a.confidence is not None]
    chosen = best(sweep(scored))
    assert math.isfinite(chosen.threshold)
    assert 0 <= chosen.precision <= 1 and 0 <= chosen.recall <= 1 and 0 <= chosen.f1 <= 1
    [row] = result.rows
    assert result.name == "confidence" and row.figure.startswith("F1 ") and "nats/token" in row.figure
    assert any(t.title == "Calibration" for t in result.details)
