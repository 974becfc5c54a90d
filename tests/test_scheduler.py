"""The schedule and the one-round-at-a-time guard, with real child processes on the tiny model."""

import datetime as dt
import os
import signal
import threading
import time

import pytest

from feedback_db import store
from feedback_db.db import Database
from feedback_db.store import TRAINING_LOCK as LOCK
from kaizen.errors import ConflictError
from kaizen.settings import Settings
from scheduler import JOB_ID, LAST_CHECK_KEY, KaizenScheduler, TrainingSupervisor
from tests.harness import wait_until

pytestmark = pytest.mark.both_databases


def quick_child(settings, run_id, trigger, force):
    """A stand-in round for scheduler logic: finishes its run row at once."""
    db = Database(settings.database_url, run_migrations=False)
    with db.write() as s:
        store.update_run(session=s, run_id=run_id, status="nodata", finished_at=store.utcnow())
    time.sleep(0.5)


def slow_real_child(settings, run_id, trigger, force):
    """The real round (run_round on the tiny model), slowed down so a test can watch and kill it."""
    import trainer.rounds
    from kaizen.settings import TrainConfig
    from tests.trainer.scripted import scripted_evaluation
    from trainer.rounds import run_round

    db = Database(settings.database_url, run_migrations=False)
    cfg = TrainConfig(max_steps=int(os.environ.get("KZ_TEST_STEPS", "6")), batch_size=4, anchors_per_step=2,
                      early_stop_exact=False, anchor_max_new_tokens=8)
    delay = float(os.environ.get("KZ_TEST_DELAY", "0.4"))
    trainer.rounds.evaluate_adapter = scripted_evaluation(lambda fact: True)  # the tiny model "learns" every fact
    run_round(db=db, settings=settings, cfg=cfg,
              trigger=trigger, run_id=run_id, threads=1, progress=lambda p: time.sleep(delay))


@pytest.fixture
def env(tmp_path, tiny_model_dir, settings_db_url):
    settings = Settings(data_dir=tmp_path / "data", model=str(tiny_model_dir), dtype="float32",
                        schedule_minutes=30, schedule_min_items=2, db_url=settings_db_url)
    settings.data_dir.mkdir(parents=True)
    db = Database(settings.database_url)
    yield settings, db
    db.close()


def _runs(db):
    with db.session() as s:
        return store.list_runs(session=s)


def _teach(db, n=1):
    with db.write() as s:
        for i in range(n):
            store.add_knowledge(session=s, question=f"Question {i}?", answer=f"Answer {i}.", origin="teach")


def test_tick_trains_only_at_the_threshold_or_when_forced(env):
    settings, db = env
    sup = TrainingSupervisor(db=db, settings=settings, target=quick_child)
    sched = KaizenScheduler(db=db, settings=settings, supervisor=sup)
    _teach(db, 1)
    assert sched.tick() is None and _runs(db) == []  # 1 new item, 2 needed
    _teach(db, 1)
    run_id = sched.tick()
    assert run_id is not None
    assert sup.wait(30)
    forced = sched.tick(force=True)
    assert forced is not None and forced != run_id
    assert sup.wait(30)
    sched.update(enabled=False)
    _teach(db, 5)
    assert sched.tick() is None  # the schedule is off
    assert [r.trigger for r in _runs(db)] == ["schedule", "schedule"]


def test_two_racing_triggers_start_one_round(env):
    settings, db = env
    sup = TrainingSupervisor(db=db, settings=settings, target=quick_child)
    results, barrier = [], threading.Barrier(4)

    def trigger():
        barrier.wait()
        try:
            results.append(sup.start(trigger="admin"))
        except ConflictError as exc:
            results.append(exc)

    threads = [threading.Thread(target=trigger) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(isinstance(r, int) for r in results) == 1
    assert sum(isinstance(r, ConflictError) for r in results) == 3
    assert sup.wait(30)


def test_a_lock_held_by_a_live_process_refuses_and_a_dead_one_is_recovered(env):
    settings, db = env
    sup = TrainingSupervisor(db=db, settings=settings, target=quick_child)
    with db.write() as s:
        store.acquire_lock(session=s, name=LOCK, owner="cli", pid=os.getpid(), stale_after_s=600, alive=lambda p: True)
    with pytest.raises(ConflictError, match="already running"):
        sup.start(trigger="admin")
    with db.write() as s:
        store.release_lock(session=s, name=LOCK)
        store.acquire_lock(session=s, name=LOCK, owner="crashed", pid=2**22 + 12345, stale_after_s=600,
                           alive=lambda p: True)
    assert isinstance(sup.start(trigger="admin"), int)  # the holder is dead: the lock is stale
    assert sup.wait(30)


@pytest.mark.slow  # a real child process trains and is killed: 12 s, kept out of the quick tier
def test_child_reports_progress_and_a_kill_leaves_the_run_failed_and_adapter_unchanged(env, monkeypatch):
    settings, db = env
    monkeypatch.setenv("KZ_TEST_STEPS", "40")
    _teach(db)
    finished = []
    sup = TrainingSupervisor(db=db, settings=settings, target=slow_real_child, on_finish=finished.append)
    run_id = sup.start(trigger="admin")
    wait_until(lambda: (r := _runs(db)) and r[0].status == "running" and r[0].step >= 2 and len(r[0].loss_curve) >= 2,
               120, "the round to report two steps")
    run = _runs(db)[0]
    assert run.total_steps == 40 and run.loss is not None and run.lr > 0 and run.phase == "train"
    with pytest.raises(ConflictError):
        sup.start(trigger="admin")
    os.kill(run.pid, signal.SIGKILL)
    wait_until(lambda: finished == [run_id], 120, "the supervisor to report the killed run")
    run = _runs(db)[0]
    assert run.status == "failed" and "killed" in run.error
    with db.session() as s:
        assert store.get_lock(session=s, name=LOCK) is None
        assert store.get_active_adapter(session=s) == "base" and store.list_adapters(session=s) == []
    assert not list(settings.adapters_dir.glob("v*"))
    monkeypatch.setenv("KZ_TEST_STEPS", "3")
    monkeypatch.setenv("KZ_TEST_DELAY", "0")
    sup.start(trigger="admin")  # the next round succeeds
    assert sup.wait(120)
    run = _runs(db)[0]
    assert run.status == "promoted" and run.adapter_version == "v1"
    with db.session() as s:
        assert store.get_active_adapter(session=s) == "v1"


def test_restarts_keep_one_job_and_a_missed_check_fires_once(env):
    settings, db = env
    with db.write() as s:
        past = store.utcnow() - dt.timedelta(hours=3)
        store.set_setting(session=s, key=LAST_CHECK_KEY, value=past.isoformat())
    sup = TrainingSupervisor(db=db, settings=settings, target=quick_child)
    for _ in range(3):  # restart the scheduler repeatedly
        sched = KaizenScheduler(db=db, settings=settings, supervisor=sup)
        sched.start()
        jobs = sched.jobs()
        assert [j.id for j in jobs] == [JOB_ID]
        assert jobs[0].max_instances == 1 and jobs[0].coalesce
        wait = (jobs[0].next_run_time - dt.datetime.now(dt.UTC)).total_seconds()
        assert 0 < wait <= 6  # six missed intervals, one catch-up check soon after start
        sched.shutdown()
    with db.write() as s:
        store.set_setting(session=s, key=LAST_CHECK_KEY, value=store.utcnow().isoformat())
    sched = KaizenScheduler(db=db, settings=settings, supervisor=sup)
    sched.start()
    wait = (sched.jobs()[0].next_run_time - dt.datetime.now(dt.UTC)).total_seconds()
    assert 29 * 60 < wait <= 30 * 60  # nothing missed: the next check is a full interval away
    sched.update(minutes=5)
    assert sched.jobs()[0].trigger.interval == dt.timedelta(minutes=5)
    sched.update(enabled=False)
    assert sched.jobs() == []
    sched.shutdown()


@pytest.mark.parametrize("change", [{"minutes": 0}, {"minutes": "x"}, {"min_items": -1}])
def test_bad_schedule_settings_are_refused(env, change):
    from kaizen.errors import InputError

    settings, db = env
    sched = KaizenScheduler(db=db, settings=settings, supervisor=TrainingSupervisor(db=db, settings=settings))
    with pytest.raises(InputError):
        sched.update(**change)
    assert sched.config()["minutes"] == 30


def test_a_round_this_supervisor_starts_is_never_claimed_by_a_worker(env):
    """A round started here is committed as queued under this process before its child starts: a
    worker polling for rounds that web replicas requested (no pid) must not take it in between."""
    settings, db = env
    sup = TrainingSupervisor(db=db, settings=settings, target=quick_child)
    launch = sup._launch
    seen = []

    def launch_spy(run_id, trigger, force):
        with db.write() as s:  # what another process sees between the commit and the child's start
            seen.append((store.get_run(session=s, run_id=run_id).pid,
                         store.claim_requested_run(session=s, pid=1)))
        launch(run_id, trigger, force)

    sup._launch = launch_spy
    sup.start(trigger="admin")
    assert seen == [(os.getpid(), None)]
    assert sup.wait(30)
