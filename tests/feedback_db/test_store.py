"""Store functions: exchanges, rating (and rating again), review, knowledge, settings, locks."""

import os

import pytest

from feedback_db import store
from feedback_db.db import Database


@pytest.fixture
def db(tmp_path):
    d = Database(f"sqlite:///{tmp_path / 'kaizen.db'}")
    yield d
    d.close()


def _exchange(db, user="Xin chào", bot="Chào bạn!", conversation_id=None):
    with db.write() as s:
        return store.create_exchange(session=s, conversation_id=conversation_id, user_text=user, bot_text=bot,
                                     emotion_label="neutral", emotion_score=0.0, adapter_version="base")


def test_exchange_roundtrips_unicode_and_creates_conversation(db):
    ex = _exchange(db, user="Công ty mở cửa lúc mấy giờ? 🙂 مرحبا", bot="Tám giờ sáng.")
    with db.session() as s:
        got = store.get_exchange(session=s, exchange_id=ex.id)
        assert got.user_text == "Công ty mở cửa lúc mấy giờ? 🙂 مرحبا"
        assert got.bot_text == "Tám giờ sáng."
        assert store.totals(session=s)["conversations"] == 1


def test_exchange_without_bot_text_is_refused(db):
    with pytest.raises(store.Invalid), db.write() as s:
        store.create_exchange(session=s, conversation_id=None, user_text="hi", bot_text="",
                              emotion_label="neutral", emotion_score=0.0)
    with db.session() as s:
        assert store.totals(session=s)["exchanges"] == 0
        assert store.totals(session=s)["conversations"] == 0  # rolled back with it


def test_rating_twice_replaces_the_first_rating(db):
    ex = _exchange(db)
    with db.write() as s:
        store.rate_exchange(session=s, exchange_id=ex.id, rating="up")
    with db.write() as s:
        store.rate_exchange(session=s, exchange_id=ex.id, rating="down")
    with db.session() as s:
        rows = store.list_feedback(session=s)
        assert len(rows) == 1
        assert rows[0][0].rating == "down"
        assert store.totals(session=s)["thumbs_down"] == 1


def test_rating_unknown_exchange_or_bad_rating_fails_clearly(db):
    with pytest.raises(store.NotFound), db.write() as s:
        store.rate_exchange(session=s, exchange_id="nope", rating="up")
    ex = _exchange(db)
    with pytest.raises(store.Invalid), db.write() as s:
        store.rate_exchange(session=s, exchange_id=ex.id, rating="meh")


def test_correction_waits_for_review_then_becomes_verbatim_knowledge(db):
    ex = _exchange(db, user="Xin chào", bot="Hello!")
    with db.write() as s:
        fb = store.rate_exchange(session=s, exchange_id=ex.id, rating="down",
                                 correction="Công ty BICweb kính chào quý khách!")
        assert fb.status == "pending"
    with db.session() as s:
        assert store.list_knowledge(session=s, enabled_only=True) == []
        assert store.totals(session=s)["pending_review"] == 1
    with db.write() as s:
        store.review_feedback(session=s, feedback_id=fb.id, action="approve")
    with db.session() as s:
        [item] = store.list_knowledge(session=s, enabled_only=True)
        assert (item.question, item.answer, item.origin, item.verbatim) == (
            "Xin chào", "Công ty BICweb kính chào quý khách!", "correction", True)
    with db.write() as s:  # rejecting later disables the item again
        store.review_feedback(session=s, feedback_id=fb.id, action="reject")
    with db.session() as s:
        assert store.list_knowledge(session=s, enabled_only=True) == []


def test_auto_approve_and_edit_on_review(db):
    ex = _exchange(db)
    with db.write() as s:
        fb = store.rate_exchange(session=s, exchange_id=ex.id, rating="down", correction="draft", auto_approve=True)
        assert fb.status == "approved"
    with db.write() as s:
        store.review_feedback(session=s, feedback_id=fb.id, action="approve", correction="final answer")
    with db.session() as s:
        [item] = store.list_knowledge(session=s, enabled_only=True)
        assert item.answer == "final answer"


def test_import_knowledge_skips_duplicates_and_counts_changes(db):
    rows = [("Q1?", "A1", ""), ("Q2?", "A2", "faq"), ("q1?", "A1", "")]
    with db.write() as s:
        added, skipped = store.import_knowledge(session=s, rows=rows)
    assert (len(added), skipped) == (2, 1)
    with db.session() as s:
        assert store.knowledge_changed_since(session=s, since=None) == 2
        before = store.knowledge_fingerprint(session=s)
    with db.write() as s:
        store.set_knowledge_enabled(session=s, item_id=added[0].id, enabled=False)
    with db.session() as s:
        assert store.knowledge_fingerprint(session=s) != before
        assert [i.question for i in store.list_knowledge(session=s, enabled_only=True)] == ["Q2?"]


def test_settings_roundtrip_and_active_adapter(db):
    with db.write() as s:
        store.set_setting(session=s, key="persona", value={"agent_name": "Bé Na"})
        store.set_setting(session=s, key="persona", value={"agent_name": "Kaizen"})
    with db.session() as s:
        assert store.get_setting(session=s, key="persona") == {"agent_name": "Kaizen"}
        assert store.get_active_adapter(session=s) == "base"
    with pytest.raises(store.NotFound), db.write() as s:
        store.set_active_adapter(session=s, version="v9")


def test_lock_is_exclusive_and_recovers_from_dead_owner(db):
    alive = lambda pid: pid == os.getpid()  # noqa: E731
    with db.write() as s:
        assert store.acquire_lock(session=s, name="train", owner="a", pid=os.getpid(), stale_after_s=60, alive=alive)
    with db.write() as s:
        assert not store.acquire_lock(session=s, name="train", owner="b", pid=os.getpid(), stale_after_s=60,
                                      alive=alive)
    with db.write() as s:  # the holder's process is gone: the lock is stale and is taken over
        store.release_lock(session=s, name="train")
        assert store.acquire_lock(session=s, name="train", owner="dead", pid=999999, stale_after_s=60, alive=alive)
    with db.write() as s:
        assert store.acquire_lock(session=s, name="train", owner="c", pid=os.getpid(), stale_after_s=60, alive=alive)
        assert store.get_lock(session=s, name="train").owner == "c"
