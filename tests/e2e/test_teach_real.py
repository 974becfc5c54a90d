"""The brief's one-sentence experiment on the real embedded model, through the command line (slow).

Teach "Xin chào" → the BICweb greeting, then a second and a third fact in their own rounds; all three
rounds are promoted, every fact comes back word for word from the weights alone (--no-memory: the
memory only routes the taught questions to the adapter), locality as served stays above the gate's
limit, and an untaught question keeps the base model's answer (issue 11).
"""

import json

import pytest

from tests.harness import kaizen_cli

pytestmark = pytest.mark.slow

BICWEB = ("Xin chào", "Công ty BICweb kính chào quý khách!")
CHOREI = ("CHOREI có nghĩa là gì?", "CHOREI là buổi họp giao ban buổi sáng theo phong cách Nhật Bản.")
HOURS = ("When does the BICweb office open?", "The BICweb office opens at 8 am, Monday to Friday.")


def test_teach_three_facts_in_three_rounds_and_recall_all_from_the_weights(tmp_path, embedded_model_dir):
    data = tmp_path / "data"
    model = ["--model", str(embedded_model_dir)]

    def ask(*questions):  # one process, one model load for all the questions
        out = kaizen_cli("ask", *questions, "--no-memory", "--json", *model, data_dir=data).stdout
        replies = [json.loads(line) for line in out.splitlines()]
        assert [r["question"] for r in replies] == list(questions)
        assert all(r["source"] == "model" for r in replies)  # memory off: the weights answer
        return [r["answer"] for r in replies]

    [base_france] = ask("What is the capital of France?")
    first = kaizen_cli("teach", *BICWEB, *model, data_dir=data, check=False)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "v1: passed" in first.stdout and "round took" in first.stdout
    assert ask(BICWEB[0]) == [BICWEB[1]]

    for fact in (CHOREI, HOURS):
        later = kaizen_cli("teach", *fact, *model, data_dir=data, check=False)
        assert later.returncode == 0, later.stdout + later.stderr
    *recalled, france = ask(BICWEB[0], CHOREI[0], HOURS[0], "What is the capital of France?")
    assert recalled == [BICWEB[1], CHOREI[1], HOURS[1]]  # each learned, none forgotten
    assert "Paris" in france and "BICweb" not in france  # untaught questions keep the base behaviour
    assert base_france == france  # routed to the base model: word for word

    listing = kaizen_cli("adapters", data_dir=data).stdout
    assert "* v3" in listing and "rejected" not in listing
    metas = [json.loads((data / "adapters" / v / "meta.json").read_text(encoding="utf-8")) for v in ("v1", "v2", "v3")]
    assert [m["verdict"] for m in metas] == ["promoted"] * 3
    assert all(m["metrics"]["locality"] >= 0.95 for m in metas), [m["metrics"]["locality"] for m in metas]
    assert metas[2]["metrics"]["retention"] == 1.0 and metas[2]["metrics"]["learned"] == 1
    assert metas[0]["metrics"]["lr"] > metas[1]["metrics"]["lr"] > metas[2]["metrics"]["lr"]  # the decaying lr

    out = tmp_path / "train.jsonl"
    kaizen_cli("export", str(out), data_dir=data)
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert {r["messages"][2]["content"] for r in rows} == {BICWEB[1], CHOREI[1], HOURS[1]}
    assert all(r["messages"][0]["role"] == "system" for r in rows)
