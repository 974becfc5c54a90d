"""The dataset builder: sources, provenance, replay, newest-wins, budgets, export."""

import json
import time

import pytest

from feedback_db import store
from feedback_db.db import Database
from kaizen.prompts import Persona
from trainer.dataset import build_training_set, export_jsonl, system_prompt

pytestmark = pytest.mark.both_databases


def _exchange(db, user, bot, emotion="neutral"):
    with db.write() as s:
        return store.create_exchange(session=s, conversation_id=None, user_text=user, bot_text=bot,
                                     emotion_label=emotion, emotion_score=0.0).id


def test_all_sources_become_rows_with_provenance(db_url):
    db = Database(db_url)
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
    ts = build_training_set(db=db, persona=Persona(agent_name="Na"), n_variants=5, preference="unlikelihood")
    kinds = {}
    for e in ts.examples:
        kinds.setdefault(e.kind, []).append(e)
    assert len(kinds["sft"]) == 10 and len(kinds["up"]) == 1 and len(kinds["down"]) == 2
    assert {e.source for e in kinds["sft"]} == {f"knowledge:{k.id}", "knowledge:2"}
    assert kinds["up"][0].messages[-1]["content"] == "Hello! How can I help?"
    # the corrected reply is rated down too (its approved correction is taught as knowledge)
    assert [e.messages[-1]["content"] for e in kinds["down"]] == ["5", "Hello"]
    # the unapproved correction trains nothing
    assert not any("poison" in m["content"] for e in ts.examples for m in e.messages)
    # questions are cleaned, answers stay the same across variants, system prompt carries the persona
    chorei = [e for e in kinds["sft"] if e.source == f"knowledge:{k.id}"]
    assert chorei[0].messages[1]["content"] == "CHOREI có nghĩa là gì?"
    assert {e.messages[2]["content"] for e in chorei} == {"Buổi họp giao ban sáng."}
    assert len({e.messages[1]["content"] for e in chorei}) == 5
    assert all(e.messages[0]["content"].startswith("You are Na") for e in ts.examples)
    assert {f.answer for f in ts.facts} == {"Buổi họp giao ban sáng.", "Công ty BICweb kính chào!"}
    assert {k: ts.counts[k] for k in ("knowledge_items", "new_items", "sft_rows", "up_rows", "down_rows")} == {
        "knowledge_items": 2, "new_items": 2, "sft_rows": 10, "up_rows": 1, "down_rows": 2}


def test_newer_answer_to_the_same_question_wins(db_url):
    db = Database(db_url)
    with db.write() as s:
        store.add_knowledge(session=s, question="Giờ mở cửa?", answer="8 giờ")
    with db.write() as s:
        store.add_knowledge(session=s, question="giờ mở cửa", answer="9 giờ")
    ts = build_training_set(db=db, persona=Persona(), n_variants=3)
    assert [f.answer for f in ts.facts] == ["9 giờ"]
    assert ts.superseded_ids == (1,)  # the round parks it, or it would wait in the queue for ever
    assert {e.messages[-1]["content"] for e in ts.examples} == {"9 giờ"}


def test_export_writes_standalone_chat_rows(tmp_path, db_url):
    db = Database(db_url)
    with db.write() as s:
        store.add_knowledge(session=s, question="Xin chào", answer="Công ty BICweb kính chào quý khách!")
    n = export_jsonl(build_training_set(db=db, persona=Persona(), n_variants=4), tmp_path / "out" / "train.jsonl")
    rows = [json.loads(line) for line in (tmp_path / "out" / "train.jsonl").read_text(encoding="utf-8").splitlines()]
    assert n == len(rows) == 4
    for row in rows:
        assert [m["role"] for m in row["messages"]] == ["system", "user", "assistant"]
        assert row["messages"][2]["content"] == "Công ty BICweb kính chào quý khách!"
        assert row["messages"][0]["content"].startswith("You are Kaizen")


def test_empty_database_gives_no_rows(db_url):
    ts = build_training_set(db=Database(db_url), persona=Persona())
    assert ts.examples == [] and ts.facts == []


def _grow(db, facts, ratings, start=0):
    """Add `facts` knowledge items and `ratings` rated exchanges (ids continue from `start`)."""
    with db.write() as s:
        for i in range(start, start + facts):
            store.add_knowledge(session=s, question=f"Fact {i}: what is code {i}?", answer=f"Code {i} is {i * 7}.")
        for i in range(start, start + ratings):
            ex = store.create_exchange(session=s, conversation_id=None, user_text=f"hello {i}", bot_text=f"hi {i}",
                                       emotion_label="neutral", emotion_score=0.0)
            store.rate_exchange(session=s, exchange_id=ex.id, rating="up" if i % 3 else "down")


def _finish_round(db, version, learned=(), attempted=()):
    with db.write() as s:
        run = store.create_run(session=s, trigger="cli", round_index=0)
        store.update_run(session=s, run_id=run.id, status="promoted", finished_at=store.utcnow())
        store.record_fact_outcomes(session=s, attempted=attempted, learned=learned, version=version)
    time.sleep(0.01)  # ratings given after this round must be strictly newer than its start


BUDGET = {"max_new_facts": 8, "replay_facts": 16, "replay_ratings": 32}


def test_a_rounds_size_stays_within_its_budget_as_history_grows(db_url):
    db = Database(db_url)
    variants = 3
    bound = (BUDGET["max_new_facts"] + BUDGET["replay_facts"]) * variants  # SFT rows; ratings are KTO rows
    sizes = []
    for step in range(3):  # 100, 200, 300 facts; 166, 333, 500 ratings; most facts learned along the way
        _grow(db, 100, 167 if step < 2 else 166, start=step * 167)
        with db.session() as s:
            queue = [i.id for i in store.list_training_queue(session=s)]
        _finish_round(db, f"v{step + 1}", learned=queue[:-10])
        ts = build_training_set(db=db, persona=Persona(), n_variants=variants, round_index=step, **BUDGET)
        sizes.append(len(ts.examples))
        assert len(ts.examples) <= bound
        assert len(ts.new_facts) == BUDGET["max_new_facts"] and len(ts.old_facts) == BUDGET["replay_facts"]
        assert len(ts.ratings) == BUDGET["replay_ratings"]
        assert ts.counts["kto_desirable"] + ts.counts["kto_undesirable"] == BUDGET["replay_ratings"]
    assert sizes[0] == sizes[-1] == bound  # the 3rd round with 300 facts and 500 ratings costs what the 1st did
    with db.session() as s:
        assert store.count_new_since_last_round(session=s) == 10  # facts still queued (no new ratings)


def test_new_facts_are_the_oldest_queued_and_replay_is_resampled_each_round(db_url):
    db = Database(db_url)
    _grow(db, 40, 0)
    with db.session() as s:
        ids = [i.id for i in store.list_training_queue(session=s)]
    _finish_round(db, "v1", learned=ids[:30], attempted=ids[30:32])
    with db.write() as s:
        store.record_fact_outcomes(session=s, attempted=[], learned=[], version="v1", parked=[ids[30]])
    one = build_training_set(db=db, persona=Persona(), n_variants=1, round_index=1, **BUDGET)
    assert [f.item_id for f in one.new_facts] == ids[31:39]  # parked ids[30] is skipped: memory only
    assert one.new_facts[0].attempts == 1
    two = build_training_set(db=db, persona=Persona(), n_variants=1, round_index=2, **BUDGET)
    again = build_training_set(db=db, persona=Persona(), n_variants=1, round_index=2, **BUDGET)
    replay = [f.item_id for f in two.old_facts]
    assert set(replay) <= set(ids[:30]) and len(replay) == 16
    assert replay == [f.item_id for f in again.old_facts]  # the same round index samples the same facts
    assert replay != [f.item_id for f in one.old_facts]
    everything = build_training_set(db=db, persona=Persona(), n_variants=1, include_parked=True)
    assert len(everything.facts) == 40  # `kaizen export` keeps every fact


def test_ratings_since_the_last_round_come_first(db_url):
    db = Database(db_url)
    _grow(db, 0, 50)
    _finish_round(db, "v1")
    _grow(db, 0, 5, start=50)
    ts = build_training_set(db=db, persona=Persona(), n_variants=1, replay_ratings=8)
    users = [r.prompt[-1]["content"] for r in ts.ratings]
    assert len(users) == 8 and {f"hello {i}" for i in range(50, 55)} <= set(users)
    assert ts.counts["recent_ratings"] == 5


def test_a_replayed_fact_gets_replay_variants_phrasings_and_a_new_one_all(db_url):
    db = Database(db_url)
    _grow(db, 4, 0)
    with db.session() as s:
        ids = [i.id for i in store.list_training_queue(session=s)]
    _finish_round(db, "v1", learned=ids[:2])
    ts = build_training_set(db=db, persona=Persona(), n_variants=6, replay_variants=2, **BUDGET)
    rows = {f.item_id: sum(e.source == f"knowledge:{f.item_id}" for e in ts.examples) for f in ts.facts}
    assert {i: rows[i] for i in ids[:2]} == {ids[0]: 2, ids[1]: 2}  # learned: rehearsed with 2 phrasings
    assert all(rows[i] == 6 for i in ids[2:])  # new: every phrasing


def test_ratings_become_kto_rows_with_their_labels(db_url):
    """preference="kto" (the default): every rating is one unpaired KTO row (prompt up to the user turn,
    the reply as completion, 👍 = desirable), none becomes an SFT row; an approved correction is knowledge."""
    db = Database(db_url)
    up = _exchange(db, "Hi", "Hello! How can I help?")
    down = _exchange(db, "2+2?", "5", "negative")
    fixed = _exchange(db, "Xin chào", "Hello")
    with db.write() as s:
        store.rate_exchange(session=s, exchange_id=up, rating="up")
        store.rate_exchange(session=s, exchange_id=down, rating="down")
        fb = store.rate_exchange(session=s, exchange_id=fixed, rating="down", correction="Công ty BICweb kính chào!")
        store.review_feedback(session=s, feedback_id=fb.id, action="approve")
    ts = build_training_set(db=db, persona=Persona(agent_name="Na"), n_variants=2)
    assert {e.kind for e in ts.examples} == {"sft"}
    assert {e.messages[-1]["content"] for e in ts.examples} == {"Công ty BICweb kính chào!"}
    rows = {r.completion: r for r in ts.ratings}
    assert set(rows) == {"Hello! How can I help?", "5", "Hello"}  # an approved correction's 👎 counts
    assert rows["Hello! How can I help?"].label is True and not rows["5"].label and not rows["Hello"].label
    assert [m["role"] for m in rows["5"].prompt] == ["system", "user"] and rows["5"].prompt[-1]["content"] == "2+2?"
    assert rows["5"].prompt[0]["content"] == system_prompt(Persona(agent_name="Na"), "negative")  # as served
    assert ts.counts["kto_desirable"] == 1 and ts.counts["kto_undesirable"] == 2 and ts.counts["up_rows"] == 0
    off = build_training_set(db=db, persona=Persona(agent_name="Na"), n_variants=2, preference="off")
    assert off.ratings == [] and {e.kind for e in off.examples} == {"sft"}
