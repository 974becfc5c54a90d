"""The synthetic-paraphrase benchmark's pure parts: its facts, line counting and rows (no model)."""

from __future__ import annotations

from bench.synthetic import Written, considered_lines, headline, load_facts, round_table
from bot.fallback import language


def test_facts_alternate_vietnamese_and_english_with_their_keys_filled_in():
    facts = load_facts(8)
    assert len(facts) == len({q for q, _ in facts}) == 8
    assert [language(q) for q, _ in facts] == ["vi", "en"] * 4
    assert all("{k}" not in a and q.endswith("?") for q, a in facts)
    assert "2009" in facts[0][1]  # the sheet's key for its first fact


def test_only_the_first_five_question_lines_of_each_output_are_judged():
    outputs = ["1. A b c?\n2. D e f?\nnot a question\n3. G h i?", "\n".join(f"Q{i} x?" for i in range(7)), "nothing"]
    assert considered_lines(outputs, 5) == (3 + 5, 2)


def _round(paraphrase: float, synthetic: float | None, seconds: float, *, rows: int = 80, synthetic_rows: int = 0,
           checks: int = 4) -> dict:
    return {"metrics": {"paraphrase_recall": paraphrase, "synthetic_recall": synthetic, "seconds": seconds,
                        "new_recall": 1.0, "locality": 0.99, "steps": 10},
            "sft_rows": rows, "synthetic_rows": synthetic_rows, "heldout": 16, "checks": checks, "wall": seconds,
            "promoted": True, "reason": "passed"}


def test_rows_say_plainly_when_synthetic_paraphrases_do_not_help():
    written = Written(items=8, asked=40, judged=3, kept={},
                      dropped={"the question itself, a repeat, or one deleted before": 3})
    a, b = _round(0.5, None, 100.0, checks=0), _round(0.5, None, 110.0, checks=0)
    rows = headline(a, b, written, 8)
    assert [r.what.split(": ")[1] for r in rows] == [
        "generality on held-out phrasings", "generality on model-written check phrasings",
        "kept by the memory filter", "cost, round wall time"]
    assert rows[0].figure == "8 of 16 (0.50)" and rows[0].ratio == "1.00×"
    assert "no better" in rows[0].notes and "B trained exactly A's rows" in rows[0].notes
    assert rows[1].figure == "–" and "no check phrasing was kept" in rows[1].notes
    assert rows[2].figure == "0 of 3 lines" and rows[2].ratio == "0%" and "3 the question itself" in rows[2].notes
    assert rows[3].ratio == "1.10×"


def test_rows_compare_b_with_a_on_the_same_check_phrasings():
    written = Written(items=8, asked=40, judged=20, kept={"Q?": [("R?", "train"), ("S?", "check")]},
                      dropped={"the memory maps it elsewhere": 18})
    a = _round(0.5, 0.25, 100.0)
    b = _round(0.25, 0.75, 120.0, rows=90, synthetic_rows=10)
    rows = headline(a, b, written, 8)
    assert "WORSE" in rows[0].notes and "10 synthetic rows beside 80 template" in rows[0].notes
    assert rows[1].figure == "3 of 4 (0.75)" and rows[1].baseline == "1 of 4 (0.25) without"
    assert rows[1].ratio == "3.00×" and "better with synthetic" in rows[1].notes
    assert "1 train / 1 check" in rows[2].notes
    table = round_table(a, b).markdown()
    assert "| training rows (template + synthetic) | 80 + 0 | 80 + 10 |" in table
