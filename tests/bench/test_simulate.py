"""The study's driver (bench/simulate.py): its rating rules, its seeded population and sheet, and one
short simulated day against a real `kaizen serve` on the tiny random model. Only mechanics are
asserted here (the tiny model knows nothing): ratings stored, the careful admin's review, the
adversarial corrections kept out of the knowledge, a round run and a version evaluated. No timings.
"""

from __future__ import annotations

import random

import pytest

from bench.simulate import (
    Answer,
    Config,
    Question,
    Rated,
    Sheet,
    User,
    contains_key,
    ended_cleanly,
    eval_set,
    honest_verdict,
    load_sheet,
    meets_style,
    normalize,
    parse,
    population,
    preference_text,
    questions_for,
    rate,
    repeat_diff,
    report,
    run_study,
)


@pytest.fixture(scope="module")
def sheet() -> Sheet:
    return load_sheet()


def _answer(text: str, *, clean: bool = True, source: str = "model") -> Answer:
    return Answer(text=text, exchange_id="x", source=source, adapter="base", adapter_applied=False,
                  completion_tokens=5, clean=clean)


# --- the rating rules --------------------------------------------------------------------------


def test_style_is_at_most_n_words_that_end_cleanly():
    words = [f"word{i}" for i in range(26)]
    assert meets_style(" ".join(words[:25]), clean=True, max_words=25)
    assert not meets_style(" ".join(words), clean=True, max_words=25)
    assert not meets_style("Short and sweet.", clean=False, max_words=25)  # cut at max_tokens
    assert not meets_style("   ", clean=True, max_words=25)
    assert meets_style("a\nb\tc", clean=True, max_words=3)  # counted on whitespace


@pytest.mark.parametrize(("reply", "lang"), [
    # the base model's held-out replies in the study of 2026-12-04, which the length rule alone passed
    ("Đác khiều,", "vi"),  # too short to be an answer
    ("Kiẁm,\n\nTại lời,\n\n", "vi"),  # ẁ is not a letter of the Vietnamese alphabet
    ("Xin lỗi, mình chưa có câu trả lời tốt cho câu hỏi này.", "vi"),  # the fallback
    ("Sorry, I don't have a good answer to that yet.", "en"),
    ("I'm not sure about that, sorry.", "en"),
    ("Ăn sáng rất quan trọng.", "en"),  # not the question's language
    ("Breakfast matters a lot.", "vi"),
    ("Ăn sáng, ăn sáng, ăn sáng, ăn sáng, ăn sáng, ăn sáng", "vi"),  # a loop
])
def test_a_short_reply_that_is_no_answer_does_not_meet_the_style(reply, lang):
    assert not meets_style(reply, clean=True, max_words=25, lang=lang)
    assert meets_style("Có, bữa sáng cho bạn năng lượng cả ngày.", clean=True, max_words=25, lang="vi")
    assert meets_style("Yes: breakfast gives you energy for the morning.", clean=True, max_words=25, lang="en")


def test_the_honest_verdict_asks_for_the_questions_language(sheet):
    q = Question(text=sheet.general_heldout["vi"][0], kind="general", lang="vi")
    assert honest_verdict(q, _answer("Có, bữa sáng cho bạn năng lượng."), sheet, max_words=25)
    assert not honest_verdict(q, _answer("Yes, breakfast gives you energy."), sheet, max_words=25)


def test_a_model_reply_that_used_the_whole_budget_did_not_end_cleanly():
    assert ended_cleanly("stop", 95, 96, "model")
    assert not ended_cleanly("stop", 96, 96, "model")  # the API says "stop" even when the budget cut it
    assert not ended_cleanly("length", 10, 96, "model")
    assert ended_cleanly("stop", 300, 96, "memory")  # a stored answer is whole


@pytest.mark.parametrize(("reply", "key"), [
    ("Người sáng lập là bà LE THI THU HA.", "Lê Thị Thu Hà"),
    ("founded by le thị thu hà", "Lê Thị Thu Hà"),
    ("It costs 2,450,000 VND.", "2.450.000"),
    ("Giá 2450000 đồng", "2.450.000"),
    ("Call 0912345678", "0912 345 678"),
    ("Opens at 7:30.", "7:30"),
    ("Đường Đồi Thông", "doi thong"),
    ("We have 86 staff", "86"),
])
def test_a_key_in_another_case_diacritics_or_number_format_counts(reply, key):
    assert contains_key(reply, key)


@pytest.mark.parametrize(("reply", "key"), [
    ("It began in 1986.", "86"),
    ("at 6:45 am", "6"),
    ("at 16:45", "6:45"),
    ("costs 12.450.000", "2.450.000"),
    ("HS-SP045", "HS-SP04"),
    ("", "86"),
])
def test_a_key_must_stand_on_its_own(reply, key):
    assert not contains_key(reply, key)


def test_normalize_folds_and_drops_thousands_separators():
    assert normalize("  Đà  NẴNG 1.250.000 ") == "da nang 1250000"


def test_users_rate_by_their_rule(sheet):
    fact = sheet.facts[0]
    q = Question(fact.ask["en"][0], "fact", "en", fact.id)
    honest, adversary = User("h", "en", False), User("a", "en", True)

    def rng() -> random.Random:
        return random.Random(0)

    kw = {"max_words": 25, "correction_p": 1.0, "adversarial_wrong_p": 1.0}
    assert rate(honest, q, _answer(fact.answer("en")), sheet, rng(), **kw).up
    down = rate(honest, q, _answer("I do not know."), sheet, rng(), **kw)
    assert not down.up and down.correction == fact.answer("en") and contains_key(fact.answer("en"), fact.key)
    assert rate(honest, q, _answer("I do not know."), sheet, rng(), **{**kw, "correction_p": 0.0}).correction is None
    wrong = rate(adversary, q, _answer(fact.answer("en")), sheet, rng(), **kw)
    assert not wrong.up and wrong.correction is not None
    assert contains_key(wrong.correction, fact.wrong_key) and not contains_key(wrong.correction, fact.key)
    assert rate(adversary, q, _answer("nonsense"), sheet, rng(), **{**kw, "adversarial_wrong_p": 0.0}).up

    general = Question(sheet.general_ask["vi"][0], "general", "vi")
    long = _answer(" ".join(["dài"] * 40))
    assert not rate(honest, general, long, sheet, rng(), **kw).up
    assert rate(honest, general, long, sheet, rng(), **kw).correction is None  # no correction on style
    assert rate(honest, general, _answer("Ngắn gọn thôi."), sheet, rng(), **kw).up
    assert rate(adversary, general, long, sheet, rng(), **kw).up  # 👍 to a bad reply


# --- the sheet and the population --------------------------------------------------------------


def test_the_sheet_is_checkable(sheet):
    assert len(sheet.facts) == 40
    correct = [f.answer(lang) for f in sheet.facts for lang in ("vi", "en")]
    every_question = [q for f in sheet.facts for lang in ("vi", "en") for q in f.ask[lang] + f.heldout[lang]]
    assert len(set(every_question)) == len(every_question)
    for f in sheet.facts:
        phrasings = [q for lang in ("vi", "en") for q in f.ask[lang] + f.heldout[lang]]
        assert 4 <= len(phrasings) <= 6 and all(f.heldout[lang] for lang in ("vi", "en"))
        assert all(contains_key(f.answer(lang), f.key) for lang in ("vi", "en"))
        assert not any(contains_key(q, f.key) for q in phrasings), f.id  # the question never gives it away
        assert not any(contains_key(a, f.wrong_key) for a in correct), f.id  # a wrong key is never true
        assert all(sheet.fact_of(q) is f for q in phrasings)
    general = [q for pool in (sheet.general_ask, sheet.general_heldout) for lang in ("vi", "en") for q in pool[lang]]
    assert len(general) == 40 and len(set(general)) == 40 and sheet.fact_of(general[0]) is None


def test_the_population_is_seeded_and_has_adversaries(sheet):
    users = population(3, 1, 8, 0.15)
    assert users == population(3, 1, 8, 0.15) and sum(u.adversarial for u in users) == 1
    assert sum(u.adversarial for u in population(3, 1, 3, 0.01)) == 1  # at least one when the share > 0
    assert not any(u.adversarial for u in population(3, 1, 3, 0.0))
    asked = questions_for(users[0], sheet, 6, 3, 0.6)
    assert asked == questions_for(users[0], sheet, 6, 3, 0.6) and len(asked) == 6
    held = {q for f in sheet.facts for lang in ("vi", "en") for q in f.heldout[lang]}
    held |= {q for lang in ("vi", "en") for q in sheet.general_heldout[lang]}
    for day in range(1, 4):
        for u in population(0, day, 8, 0.15):
            assert not {q.text for q in questions_for(u, sheet, 20, 0, 0.6)} & held  # held out means never asked
    evaluation = eval_set(sheet, 0, 20, 10)
    assert {q.text for q in evaluation} <= held and len(evaluation) == 30
    assert sum(q.lang == "vi" for q in evaluation) == 15


def test_repeat_diff_counts_changed_and_missing_ratings():
    a = [Rated(1, "u", False, "q", "fact", "r", True, None), Rated(1, "u", False, "q2", "fact", "r", False, "c")]
    assert repeat_diff(a, a) == (0, 2)
    b = [Rated(1, "u", False, "q", "fact", "r", False, None)]
    assert repeat_diff(a, b) == (2, 2)


def test_command_line_options():
    args = parse(["--trigger", "api", "--days", "1", "--env", "KAIZEN_TRAIN_MAX_STEPS=2"])
    assert args.trigger == "api" and args.days == 1 and args.env == ["KAIZEN_TRAIN_MAX_STEPS=2"]
    with pytest.raises(SystemExit):
        parse(["--env", "NOEQUALS"])
    with pytest.raises(SystemExit):
        parse(["--trigger", "cron"])


# --- one short day against a real server -------------------------------------------------------


@pytest.mark.slow
def test_one_simulated_day_on_a_real_server(tmp_path, tiny_model_dir, sheet):
    cfg = Config(days=1, users_per_day=3, questions_per_user=3, seed=1, model=str(tiny_model_dir),
                 data_dir=tmp_path / "sim", out_dir=tmp_path / "out", max_tokens=12, trigger="api",
                 fact_share=0.7, correction_p=1.0, adversarial_share=0.34, adversarial_wrong_p=1.0,
                 eval_facts=4, eval_general=2, round_timeout=300, progress=False,
                 env={"KAIZEN_TRAIN_MAX_STEPS": "2", "KAIZEN_TRAIN_MIN_STEPS": "0"})
    result = run_study(cfg)

    # every rating was stored
    assert len(result.ratings) == 9 and result.stats["ratings"] == 9
    assert result.stats["thumbs_up"] == sum(r.up for r in result.ratings)
    # the careful admin: honest corrections approved and in the knowledge, adversarial ones rejected and not
    sent = {r.correction: r.adversarial for r in result.ratings if r.correction}
    assert any(sent.values()) and not all(sent.values())  # this seed has both kinds
    reviewed = {fb["correction"]: fb["status"] for fb in result.feedback if fb["correction"]}
    assert reviewed == {c: "rejected" if adv else "approved" for c, adv in sent.items()}
    answers = {item["answer"] for item in result.knowledge}
    assert answers == {c for c, adv in sent.items() if not adv}
    assert result.adversarial_keys and result.leaked == []
    assert not any(contains_key(a, k) for a in answers for k in result.adversarial_keys)
    # a round ran on them and made a version; each point was evaluated on the held-out set
    [run] = result.runs
    assert run["status"] in ("promoted", "rejected") and run["adapter_version"] == result.versions[0]["version"]
    assert [p.label for p in result.points] == ["base", "day 1"] and result.points[1].run_ids == [run["id"]]
    # the round's KTO rows carry the users' labels: every 👍, and every 👎 but those whose correction was rejected
    counts = run["data_counts"]
    assert counts["kto_desirable"] == sum(r.up for r in result.ratings)
    assert counts["kto_undesirable"] == sum(not r.up and not (r.correction and r.adversarial) for r in result.ratings)
    for p in result.points:
        assert p.scores["off/all"].n == 6 and p.scores["off/fact"].n == 4 and p.scores["off/style"].n == 2
        assert all(s.rate is not None and 0 <= s.rate <= 1 for s in p.scores.values())
    assert result.points[0].memory_skipped and not result.points[1].memory_skipped
    assert result.points[1].scores["on/all"].n == 6

    text, tables = report([result])
    assert len(tables[0].rows) == 2 and len(tables[1].rows) == 1
    assert "knowledge items holding an adversarial key | 0 of" in text


def test_the_rounds_table_shows_the_preference_check_as_the_gate_saw_it():
    assert preference_text({"preference_auc": 0.6071, "baseline_preference_auc": 0.5357,
                            "preference_auc_se": 0.1412}) == "0.607 (0.54 ± 0.14)"
    assert preference_text({"preference_auc": 0.5, "baseline_preference_auc": 0.5}) == "0.500 (0.50)"  # < 2 of a label
    assert preference_text({}) == "–"  # no preference adapter this round
