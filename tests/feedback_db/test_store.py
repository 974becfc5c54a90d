"""Store functions: exchanges, rating (and rating again), review, knowledge, settings, locks."""

import datetime as dt
import os
import threading

import pytest

from feedback_db import store
from feedback_db.db import Database
from feedback_db.models import Lock, TrainingRun

pytestmark = pytest.mark.both_databases


@pytest.fixture
def db(db_url):
    d = Database(db_url)
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


# --- per-fact learning state ------------------------------------------------------------------


def _facts(db, n):
    with db.write() as s:
        return [store.add_knowledge(session=s, question=f"Q{i}?", answer=f"A{i}.").id for i in range(n)]


def _state(db, item_id):
    with db.session() as s:
        item = store.get_knowledge(session=s, item_id=item_id)
        return item.train_attempts, item.learned_version, item.parked


def test_a_new_fact_is_queued_oldest_first_until_learned(db):
    a, b, c = _facts(db, 3)
    with db.session() as s:
        assert [i.id for i in store.list_training_queue(session=s)] == [a, b, c]
        assert [i.id for i in store.list_training_queue(session=s, limit=2)] == [a, b]
        assert store.count_new_since_last_round(session=s) == 3
    with db.write() as s:
        store.record_fact_outcomes(session=s, attempted=[b], learned=[a], version="v1")
    assert _state(db, a) == (0, "v1", False) and _state(db, b) == (1, None, False)
    with db.write() as s:  # learned_version is the FIRST version that recalled it
        store.record_fact_outcomes(session=s, attempted=[], learned=[a, b], version="v2")
    assert _state(db, a) == (0, "v1", False) and _state(db, b) == (1, "v2", False)
    with db.session() as s:
        assert [i.id for i in store.list_training_queue(session=s)] == [c]
        assert store.count_new_since_last_round(session=s) == 1


def test_a_fact_trained_without_being_learned_stays_queued_but_is_not_new(db):
    """Issue 13: a scheduled round started by itself for the same six items the last round had trained."""
    a, b = _facts(db, 2)
    with db.write() as s:
        store.record_fact_outcomes(session=s, attempted=[a, b], learned=[], version="v1")
    with db.session() as s:
        assert [i.id for i in store.list_training_queue(session=s)] == [a, b]  # trained again next round
        assert store.count_training_queue(session=s) == 2
        assert store.count_new_since_last_round(session=s) == 0  # but no reason for a round on their own
    with db.write() as s:
        store.set_knowledge_answer(session=s, item_id=a, answer="A new answer.")  # a new fact
    with db.session() as s:
        assert store.count_new_since_last_round(session=s) == 1


def test_parked_facts_leave_the_queue_but_stay_enabled_for_the_memory(db):
    a, b = _facts(db, 2)
    with db.write() as s:
        before = store.get_knowledge(session=s, item_id=a).updated_at
    for _ in range(3):
        with db.write() as s:
            store.record_fact_outcomes(session=s, attempted=[a], learned=[], version="v1")
    with db.write() as s:
        store.record_fact_outcomes(session=s, attempted=[], learned=[], version="v1", parked=[a])
    assert _state(db, a) == (3, None, True)
    with db.session() as s:
        assert [i.id for i in store.list_parked(session=s)] == [a]
        assert [i.id for i in store.list_training_queue(session=s)] == [b]
        item = store.get_knowledge(session=s, item_id=a)
        assert item.enabled and item.updated_at == before  # still served; not a newly taught fact
        assert a in [i.id for i in store.list_knowledge(session=s, enabled_only=True)]


def test_a_changed_answer_is_a_new_fact_again(db):
    (a,) = _facts(db, 1)
    with db.write() as s:
        store.record_fact_outcomes(session=s, attempted=[a], learned=[], version="v1", parked=[a])
    with db.write() as s:
        store.set_knowledge_answer(session=s, item_id=a, answer="A0.")  # same answer: nothing changes
    assert _state(db, a) == (1, None, True)
    with db.write() as s:
        store.set_knowledge_answer(session=s, item_id=a, answer="A new answer.")
    assert _state(db, a) == (0, None, False)
    with db.session() as s:
        assert [i.id for i in store.list_training_queue(session=s)] == [a]


def test_a_new_correction_of_the_same_exchange_resets_its_item(db):
    ex = _exchange(db)
    with db.write() as s:
        fb = store.rate_exchange(session=s, exchange_id=ex.id, rating="down", correction="First.", auto_approve=True)
    with db.session() as s:
        (item,) = store.list_knowledge(session=s)
    with db.write() as s:
        store.record_fact_outcomes(session=s, attempted=[], learned=[item.id], version="v3")
    assert _state(db, item.id) == (0, "v3", False)
    with db.write() as s:
        store.review_feedback(session=s, feedback_id=fb.id, action="approve", correction="Second.")
    assert _state(db, item.id) == (0, None, False)


def _served(db, version, source, applied, *ratings, correction=None):
    """One exchange served by `version` from `source`, rated with each of `ratings` in turn (the last stands)."""
    with db.write() as s:
        ex = store.create_exchange(session=s, conversation_id=None, user_text="Q?", bot_text="A.",
                                   emotion_label="neutral", emotion_score=0.0, adapter_version=version,
                                   adapter_applied=bool(applied), source=source)
        ex.adapter_applied = applied  # None: an exchange stored before routing existed
        for rating in ratings:
            store.rate_exchange(session=s, exchange_id=ex.id, rating=rating, correction=correction)
    return ex.id


def test_ratings_by_version_and_source_count_each_exchange_once_in_version_order(db):
    import datetime as dt

    with db.write() as s:  # created v1, v2, v10 in that order: the order is not the names' string order
        for day, version in enumerate(["v1", "v2", "v10"], start=1):
            row = store.record_adapter(session=s, version=version, run_id=None, round_index=day - 1,
                                       verdict="promoted", reason="", metrics={}, path=f"/a/{version}")
            row.created_at = dt.datetime(2026, 1, day)
    _served(db, "v10", "model", True, "up")
    _served(db, "v1", "model", True, "up")
    _served(db, "v1", "model", True, "down", "up")  # rated again: only the latest rating counts
    _served(db, "v1", "model", True, "up", "down")
    _served(db, "v1", "memory", False, "down")
    _served(db, "v1", "rag", True, "up")
    _served(db, "v1", "model", False, "up")  # routed to the base model
    _served(db, "v1", "model", False)  # not rated: not counted
    _served(db, "v2", "memory", False, "down", correction="Tám giờ.")  # pending review: the 👎 still counts
    _served(db, "v7", "model", True, "up")  # no adapter_versions row: after the known versions
    _served(db, "base", "model", None, "down")  # stored before routing existed
    _served(db, "base", "model", False, "up")
    _served(db, "base", "memory", False, "up")
    with db.session() as s:
        rows = store.ratings_by_version_and_source(session=s)
        total = store.totals(session=s)["ratings"]
    assert rows == [
        ("base", "memory", False, 1, 1), ("base", "model", False, 1, 1), ("base", "model", None, 1, 0),
        ("v1", "memory", False, 1, 0), ("v1", "rag", True, 1, 1), ("v1", "model", False, 1, 1),
        ("v1", "model", True, 3, 2),
        ("v2", "memory", False, 1, 0),
        ("v10", "model", True, 1, 1),
        ("v7", "model", True, 1, 1),
    ]
    assert round(rows[6].up_rate, 3) == 0.667 and rows[3].up_rate == 0.0
    assert sum(r.ratings for r in rows) == total == 12


def test_ratings_by_version_and_source_with_no_ratings_is_empty(db):
    _served(db, "base", "model", False)
    with db.session() as s:
        assert store.ratings_by_version_and_source(session=s) == []


def test_a_correction_belongs_to_a_down_rating(db):
    ex = _exchange(db)
    with pytest.raises(store.Invalid, match="'down'"), db.write() as s:
        store.rate_exchange(session=s, exchange_id=ex.id, rating="up", correction="a better answer")
    with db.session() as s:
        assert store.list_feedback(session=s) == []  # nothing half-stored


def test_switching_a_down_with_correction_to_up_leaves_nothing_to_approve(db):
    ex = _exchange(db)
    with db.write() as s:
        fb = store.rate_exchange(session=s, exchange_id=ex.id, rating="down", correction="Mở cửa lúc 8 giờ.")
    with db.write() as s:
        store.rate_exchange(session=s, exchange_id=ex.id, rating="up")
    with pytest.raises(store.Conflict, match="no correction"), db.write() as s:
        store.review_feedback(session=s, feedback_id=fb.id, action="approve")
    with db.session() as s:
        assert store.list_knowledge(session=s) == []
        [(rating, _)] = store.list_feedback(session=s)
        assert (rating.rating, rating.correction) == ("up", None)


@pytest.mark.parametrize("approved", [False, True])
def test_a_withdrawn_rating_is_gone_with_its_correction(db, approved):
    ex = _exchange(db)
    with db.write() as s:
        fb = store.rate_exchange(session=s, exchange_id=ex.id, rating="down", correction="Mở cửa lúc 8 giờ.",
                                 auto_approve=approved)
    with db.session() as s:
        assert len(store.list_knowledge(session=s, enabled_only=True)) == int(approved)
    with db.write() as s:
        assert store.withdraw_rating(session=s, exchange_id=ex.id) is True
    with db.write() as s:
        assert store.withdraw_rating(session=s, exchange_id=ex.id) is False  # nothing left to take back
    with db.session() as s:
        assert store.list_feedback(session=s) == [] and store.list_knowledge(session=s) == []
        assert store.totals(session=s)["thumbs_down"] == 0
    with pytest.raises(store.NotFound), db.write() as s:
        store.review_feedback(session=s, feedback_id=fb.id, action="approve")
    with pytest.raises(store.NotFound), db.write() as s:
        store.withdraw_rating(session=s, exchange_id="nope")


def test_nul_characters_are_removed_on_every_database(db):
    """PostgreSQL refuses U+0000 in text; a model or a client can produce one. It is dropped on both
    databases, so what is stored (and later exported for training) is the same."""
    ex = _exchange(db, user="a\x00b xin chào", bot="reply\x00 ✓")
    with db.write() as s:
        store.rate_exchange(session=s, exchange_id=ex.id, rating="down", correction="right\x00 answer")
        item = store.add_knowledge(session=s, question="q\x00?", answer="a\x00!", category="c\x00at")
    with db.session() as s:
        got = store.get_exchange(session=s, exchange_id=ex.id)
        assert (got.user_text, got.bot_text) == ("ab xin chào", "reply ✓")
        assert store.list_feedback(session=s)[0][0].correction == "right answer"
        k = store.get_knowledge(session=s, item_id=item.id)
        assert (k.question, k.answer, k.category) == ("q?", "a!", "cat")


def test_a_category_longer_than_its_column_is_refused_clearly_on_every_database(db):
    with pytest.raises(store.Invalid, match="at most 64 characters; this one has 65"), db.write() as s:
        store.add_knowledge(session=s, question="q", answer="a", category="x" * 65)
    with db.write() as s:
        store.add_knowledge(session=s, question="q", answer="a", category="đ" * 64)  # characters, not bytes
    with db.session() as s:
        assert [k.category for k in store.list_knowledge(session=s)] == ["đ" * 64]


def _age(db, model, key, seconds):
    """Make a row's heartbeat `seconds` old."""
    with db.write() as s:
        row = s.get(model, key)
        row.heartbeat_at = store.utcnow() - dt.timedelta(seconds=seconds)


def test_a_pid_on_another_machine_says_nothing_here_only_its_heartbeat_does(db):
    """Replicas on several machines share the lock and the runs: a lock or a run held on another
    machine is not taken for dead because its pid does not exist here, only when its heartbeat stops."""
    with db.write() as s:
        s.add(Lock(name="train", owner="other:1", pid=999_999, host="another-machine",
                   acquired_at=store.utcnow(), heartbeat_at=store.utcnow()))
        run = store.create_run(session=s, trigger="admin", round_index=0)
        store.update_run(session=s, run_id=run.id, pid=999_999, host="another-machine")
    with db.write() as s:
        assert not store.acquire_lock(session=s, name="train", owner="here", pid=os.getpid())
        assert store.fail_stale_runs(session=s) == []
    _age(db, Lock, "train", 31 * 60)
    _age(db, TrainingRun, run.id, 31 * 60)
    with db.write() as s:
        assert store.acquire_lock(session=s, name="train", owner="here", pid=os.getpid())
        assert store.get_lock(session=s, name="train").host == store.HOST
        assert store.fail_stale_runs(session=s) == [run.id]
    with db.write() as s:  # on this machine a dead pid is dead at once, however fresh its heartbeat
        store.release_lock(session=s, name="train")
        s.add(Lock(name="train", owner="gone", pid=999_999, host=store.HOST, acquired_at=store.utcnow(),
                   heartbeat_at=store.utcnow()))
    with db.write() as s:
        assert store.acquire_lock(session=s, name="train", owner="here", pid=os.getpid(),
                                  alive=lambda pid: pid != 999_999)


def test_a_requested_round_waits_for_a_worker_and_is_claimed_once(db):
    with db.write() as s:
        run = store.request_run(session=s, trigger="admin", force=True)
    assert (run.status, run.pid, run.config) == ("queued", None, {"requested": {"force": True}})
    with pytest.raises(store.Conflict, match="queued or running"), db.write() as s:
        store.request_run(session=s, trigger="admin")
    with db.write() as s:
        assert store.fail_stale_runs(session=s) == []  # waiting for a worker is not dead
        claimed = store.claim_requested_run(session=s, pid=4242)
        assert (claimed.id, claimed.pid, claimed.host) == (run.id, 4242, store.HOST)
        assert store.claim_requested_run(session=s, pid=4343) is None
    with db.write() as s:
        store.update_run(session=s, run_id=run.id, status="rejected", finished_at=store.utcnow())
        late = store.request_run(session=s, trigger="admin")
    _age(db, TrainingRun, late.id, 31 * 60)
    with db.write() as s:
        assert store.fail_stale_runs(session=s) == [late.id]
        assert "No training worker took this round" in store.get_run(session=s, run_id=late.id).error


def test_an_interrupted_round_is_failed_with_its_reason_and_queued_again(db):
    with db.write() as s:
        run = store.create_run(session=s, trigger="schedule", round_index=0, pid=4242)
        assert store.acquire_lock(session=s, name=store.TRAINING_LOCK, owner="round", pid=4242)
    with db.write() as s:
        again = store.requeue_run(session=s, run_id=run.id, reason="The server was stopped.")
    with db.session() as s:
        old = store.get_run(session=s, run_id=run.id)
        assert old.status == "failed" and old.finished_at is not None
        assert old.error == (f"The server was stopped. It was queued again as run {again.id}, "
                             "for the next training worker.")
        assert (again.status, again.pid, again.trigger) == ("queued", None, "schedule")
        assert again.config == {"requested": {"force": True, "requeued_from": run.id}}
        assert store.get_lock(session=s, name=store.TRAINING_LOCK) is None  # the dead round's lock is free
    with db.write() as s:  # an ended run is not queued twice
        assert store.requeue_run(session=s, run_id=run.id, reason="again") is None
        claimed = store.claim_requested_run(session=s, pid=4343)
        assert claimed is not None and claimed.id == again.id
    with db.write() as s:  # another round going on: the interrupted one ends, with nothing queued
        other = store.create_run(session=s, trigger="admin", round_index=0, pid=os.getpid())
        assert store.requeue_run(session=s, run_id=again.id, reason="Stopped.") is None
        assert store.get_run(session=s, run_id=again.id).error == "Stopped."
        assert store.run_in_progress(session=s) == other.id


def _race(db, attempt, n=4):
    """Run `attempt(session)` in n threads at once, each in its own write transaction; the results."""
    barrier, results, errors = threading.Barrier(n), [], []

    def one():
        try:
            barrier.wait(10)
            with db.write() as s:
                results.append(attempt(s))
        except Exception as exc:  # the test reports any
            errors.append(exc)

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    return results


def test_racing_workers_claim_a_requested_round_once(db):
    with db.write() as s:
        run = store.request_run(session=s, trigger="admin")
    claims = _race(db, lambda s: (c.id if (c := store.claim_requested_run(session=s, pid=os.getpid())) else None))
    assert sorted(claims, key=str) == sorted([run.id] + [None] * 3, key=str)


def test_racing_takeovers_of_a_dead_holders_lock_give_it_to_one(db):
    """Several processes find the holder dead at once; exactly one takes the lock over (on PostgreSQL
    the advisory lock serializes the check and the take), and none fails."""
    with db.write() as s:
        s.add(Lock(name="train", owner="dead", pid=999_999, host="elsewhere", acquired_at=store.utcnow(),
                   heartbeat_at=store.utcnow() - dt.timedelta(hours=1)))
    won = _race(db, lambda s: store.acquire_lock(session=s, name="train", owner=f"w{threading.get_ident()}"[:64],
                                                 pid=os.getpid()))
    assert sorted(won) == [False, False, False, True]


def test_each_serving_process_reports_on_its_own_and_only_running_ones_count(db):
    """Web replicas share one database: each one's report of what it serves is kept apart, and the
    command line waits only for servers still running (a dead pid here, a silent one elsewhere)."""
    def report(version, host, pid, live=True):
        with db.write() as s:
            store.set_served_adapter(session=s, version=version, wanted="v2", error=None,
                                     process={"pid": pid, "host": host, "live": live})

    report("v2", store.HOST, 999_999)  # a server on this machine that has since died
    report("v1", "replica-b", 7)
    report("v2", store.HOST, os.getpid())
    report("v2", "replica-c", 8, live=False)  # a one-off command, not a server
    with db.session() as s:
        reports = store.served_adapters(session=s)
        newest = store.get_served_adapter(session=s)
    who = {(r["host"], r["pid"]) for r in reports}
    assert who == {("replica-b", 7), (store.HOST, os.getpid()), ("replica-c", 8)}  # the dead one's report is gone
    assert newest["host"] == "replica-c"
    live = {(r["host"], r["version"]) for r in store.live_servers(reports)}
    assert live == {("replica-b", "v1"), (store.HOST, "v2")}
    old = (store.utcnow() - dt.timedelta(minutes=5)).isoformat()
    stale = [{**r, "at": old} for r in reports]
    assert [r["host"] for r in store.live_servers(stale)] == [store.HOST]  # elsewhere, only a fresh report counts
