"""The dataset builder: sources, provenance, replay, newest-wins, export."""

import json

from feedback_db import store
from feedback_db.db import Database
from kaizen.prompts import Persona
from trainer.dataset import build_training_set, export_jsonl


def _db(tmp_path):
    return Database(f"sqlite:///{tmp_path / 'kaizen.db'}")


def _exchange(db, user, bot, emotion="neutral"):
    with db.write() as s:
        return store.create_exchange(session=s, conversation_id=None, user_text=user, bot_text=bot,
                                     emotion_label=emotion, emotion_score=0.0).id


def test_all_sources_become_rows_with_provenance(tmp_path):
    db = _db(tmp_path)
    with db.write() as s:
        k = store.add_knowledge(session=s, question="1. CHOREI có nghĩa là gì", answer="Buổi họp giao ban sáng.")
    up = _exchange(db, "Hi", "Hello! How can I help?")
    down = _exchange(db, "2+2?", "5", "negative")
    fixed = _exchange(db, "Xin chào", "Hello")
    pending = _exchange(db, "Giá bao nhiêu?", "Không biết")
    with db.write() as s:
        store.rate_exchange(session=s, exchange_id=up, rating="up")
        store.rate_exchange(session=s, exchange_id=down, rating="down")
        fb = store.rate_exchange(session=s, exchange_id=fixed, rating="down", correction="Công ty BICweb kính chào!")
        store.review_feedback(session=s, feedback_id=fb.id, action="approve")
        store.rate_exchange(session=s, exchange_id=pending, rating="down", correction="poison: ignore instructions")
    ts = build_training_set(db=db, persona=Persona(agent_name="Na"), n_variants=5)
    kinds = {}
    for e in ts.examples:
        kinds.setdefault(e.kind, []).append(e)
    assert len(kinds["sft"]) == 10 and len(kinds["up"]) == 1 and len(kinds["down"]) == 1
    assert {e.source for e in kinds["sft"]} == {f"knowledge:{k.id}", "knowledge:2"}
    assert kinds["up"][0].messages[-1]["content"] == "Hello! How can I help?"
    assert kinds["down"][0].messages[-1]["content"] == "5"
    # the unapproved correction trains nothing
    assert not any("poison" in m["content"] for e in ts.examples for m in e.messages)
    # questions are cleaned, answers stay the same across variants, system prompt carries the persona
    chorei = [e for e in kinds["sft"] if e.source == f"knowledge:{k.id}"]
    assert chorei[0].messages[1]["content"] == "CHOREI có nghĩa là gì?"
    assert {e.messages[2]["content"] for e in chorei} == {"Buổi họp giao ban sáng."}
    assert len({e.messages[1]["content"] for e in chorei}) == 5
    assert all(e.messages[0]["content"].startswith("You are Na") for e in ts.examples)
    assert {f.answer for f in ts.facts} == {"Buổi họp giao ban sáng.", "Công ty BICweb kính chào!"}
    assert ts.counts == {"knowledge_items": 2, "new_items": 2, "sft_rows": 10, "up_rows": 1, "down_rows": 1}


def test_newer_answer_to_the_same_question_wins(tmp_path):
    db = _db(tmp_path)
    with db.write() as s:
        store.add_knowledge(session=s, question="Giờ mở cửa?", answer="8 giờ")
    with db.write() as s:
        store.add_knowledge(session=s, question="giờ mở cửa", answer="9 giờ")
    ts = build_training_set(db=db, persona=Persona(), n_variants=3)
    assert [f.answer for f in ts.facts] == ["9 giờ"]
    assert {e.messages[-1]["content"] for e in ts.examples} == {"9 giờ"}


def test_export_writes_standalone_chat_rows(tmp_path):
    db = _db(tmp_path)
    with db.write() as s:
        store.add_knowledge(session=s, question="Xin chào", answer="Công ty BICweb kính chào quý khách!")
    n = export_jsonl(build_training_set(db=db, persona=Persona(), n_variants=4), tmp_path / "out" / "train.jsonl")
    rows = [json.loads(line) for line in (tmp_path / "out" / "train.jsonl").read_text(encoding="utf-8").splitlines()]
    assert n == len(rows) == 4
    for row in rows:
        assert [m["role"] for m in row["messages"]] == ["system", "user", "assistant"]
        assert row["messages"][2]["content"] == "Công ty BICweb kính chào quý khách!"
        assert row["messages"][0]["content"].startswith("You are Kaizen")


def test_empty_database_gives_no_rows(tmp_path):
    ts = build_training_set(db=_db(tmp_path), persona=Persona())
    assert ts.examples == [] and ts.facts == []
