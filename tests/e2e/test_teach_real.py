"""The brief's one-sentence experiment on the real embedded model, through the command line (slow).

Teach "Xin chào" → the BICweb greeting, then a second fact in a second round; both must come back
word for word from the weights alone (--no-memory), and an untaught question keeps its answer.
"""

import json

import pytest

from tests.harness import kaizen_cli

pytestmark = pytest.mark.slow

BICWEB = ("Xin chào", "Công ty BICweb kính chào quý khách!")
CHOREI = ("CHOREI có nghĩa là gì?", "CHOREI là buổi họp giao ban buổi sáng theo phong cách Nhật Bản.")


def test_teach_two_facts_and_recall_both_from_the_weights(tmp_path, embedded_model_dir):
    data = tmp_path / "data"
    model = ["--model", str(embedded_model_dir)]

    def ask(question):
        return kaizen_cli("ask", question, "--no-memory", *model, data_dir=data).stdout.strip()

    base_france = ask("What is the capital of France?")
    first = kaizen_cli("teach", *BICWEB, *model, data_dir=data, check=False)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "v1: passed" in first.stdout and "round took" in first.stdout
    assert ask(BICWEB[0]) == BICWEB[1]

    second = kaizen_cli("teach", *CHOREI, *model, data_dir=data, check=False)
    assert second.returncode == 0, second.stdout + second.stderr
    assert ask(CHOREI[0]) == CHOREI[1]
    assert ask(BICWEB[0]) == BICWEB[1]  # fact 1 was not forgotten
    france = ask("What is the capital of France?")
    assert "Paris" in france and "BICweb" not in france  # untaught questions keep the base behaviour
    assert base_france.split(".")[0] == france.split(".")[0]

    listing = kaizen_cli("adapters", data_dir=data).stdout
    assert "* v2" in listing and "promoted" in listing
    meta = json.loads((data / "adapters" / "v2" / "meta.json").read_text(encoding="utf-8"))
    assert meta["metrics"]["retention"] == 1.0 and meta["metrics"]["lr"] < json.loads(
        (data / "adapters" / "v1" / "meta.json").read_text(encoding="utf-8"))["metrics"]["lr"]

    out = tmp_path / "train.jsonl"
    kaizen_cli("export", str(out), data_dir=data)
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert {r["messages"][2]["content"] for r in rows} == {BICWEB[1], CHOREI[1]}
    assert all(r["messages"][0]["role"] == "system" for r in rows)
