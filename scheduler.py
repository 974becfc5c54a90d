"""Training on a schedule, and the guard that lets only one round run at a time.

`TrainingSupervisor` runs each round in a child process (spawned, niced, with few torch
threads), so chat stays responsive and a crash or `kill -9` of the trainer cannot take the
server down. The round reports progress and its result through the `training_runs` row; when
the child ends, the supervisor marks a round that died as failed, releases its lock, and tells
the adapter follower to pick up a promoted version at once.

A round interrupted because its server stops (SIGTERM, `stop()`) or dies (`kill -9`: the child
notices that its parent is gone and exits) is marked failed with the reason and queued again for the
next training worker (`store.requeue_run`); an admin can cancel that queued round. Draining instead
(waiting for the round) would outlast any shutdown grace period: a round takes minutes.

`KaizenScheduler` (APScheduler 3) checks every N minutes whether at least M new approved items
or ratings arrived since the last round, and if so starts one through the supervisor. Its
settings live in the `settings` table and can be changed while it runs. The job has a fixed id,
`max_instances=1` and `coalesce=True`; on start, a check that was missed while the server was
down fires once, not once per missed interval.

Only one round ever runs: the supervisor refuses a second start in this process, and the
`locks` row (taken inside run_round) refuses rounds from other processes, such as `kaizen train`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import multiprocessing
import os
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from typing import TYPE_CHECKING, Any, SupportsIndex, SupportsInt

from feedback_db import store
from feedback_db.db import Database
from kaizen.errors import ConflictError, InputError
from kaizen.settings import Settings

if TYPE_CHECKING:
    from apscheduler.job import Job
    from apscheduler.schedulers.background import BackgroundScheduler

    from kaizen.ports import ScopeRouter, TrainingControl
    from kaizen.settings import GateLimits, TrainConfig

    ScopeFactory = Callable[[Database, Settings], ScopeRouter | None]

SCHEDULE_KEY = "schedule"
LAST_CHECK_KEY = "schedule_last_check"
JOB_ID = "kaizen-train"


def _child_main(settings: Settings, run_id: int, trigger: str, force: bool, cfg: TrainConfig | None = None,
                limits: GateLimits | None = None, scope: ScopeFactory | None = None) -> None:
    """Entry point of the training child process. `scope` builds the serving side's scope router in
    the child (a module-level function, so it pickles by reference)."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    with contextlib.suppress(OSError):
        os.nice(10)  # chat requests in the parent win the CPU when both want it
    from trainer.rounds import run_round

    db = Database(settings.database_url, run_migrations=False)
    _die_with_parent(db, run_id, os.getppid())
    try:
        run_round(db=db, settings=settings, cfg=cfg, limits=limits, trigger=trigger, force=force,
                  threads=settings.train_threads, run_id=run_id, scope=scope(db, settings) if scope else None)
    except Exception:  # the run row already holds the error; exit non-zero for the parent's log
        raise SystemExit(1) from None
    finally:
        db.close()


PARENT_GONE = ("The server that ran this round died (killed) during it; the active adapter is unchanged.")
STOPPED = "The server was stopped during the round; the active adapter is unchanged."


def _die_with_parent(db: Database, run_id: int, parent: int, poll_s: float = 1.0) -> threading.Thread:
    """In the training child: a thread that ends the round when the process that started it is gone
    (a `kill -9` of a worker or server leaves no one to stop it or to serve what it trains). The child
    is re-parented then, so `os.getppid()` changes. The run is failed and queued again
    (store.requeue_run) and the child exits at once. Polling, not Linux's PR_SET_PDEATHSIG, which fires
    when the parent *thread* that spawned the child ends (here a request or scheduler thread)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        with contextlib.suppress(Exception), db.write() as s:
            store.requeue_run(session=s, run_id=run_id, reason=PARENT_GONE)
        os._exit(3)

    thread = threading.Thread(target=watch, name="kaizen-parent-watch", daemon=True)
    thread.start()
    return thread


class TrainingSupervisor:
    def __init__(self, *, db: Database, settings: Settings, on_finish: Callable[[int], object] | None = None,
                 target: Callable[..., None] = _child_main, cfg: TrainConfig | None = None,
                 limits: GateLimits | None = None, scope: ScopeFactory | None = None) -> None:
        self.db = db
        self.scope = scope
        self.settings = settings
        self.cfg, self.limits = cfg, limits
        self.on_finish = on_finish
        self._target = target
        self._lock = threading.Lock()
        self._proc: multiprocessing.process.BaseProcess | None = None
        self._run_id: int | None = None
        self._ctx = multiprocessing.get_context("spawn")
        # Set once the watch thread has reaped the child and recorded its end. Only that thread joins
        # the child: a second join racing it could see the reaped child as alive (waitpid -> ECHILD).
        self._finished = threading.Event()
        self._stopping = threading.Event()  # set by stop(): ends serve_requests
        self._finished.set()

    def running(self) -> int | None:
        """The run id of the round this supervisor started, until its end is recorded; else None."""
        with self._lock:
            return None if self._finished.is_set() else self._run_id

    def start(self, *, trigger: str, force: bool = True) -> int:
        """Start a round in a child process and return its run id (ConflictError if one runs)."""
        with self._lock:
            if not self._finished.is_set():
                raise ConflictError(f"Training run {self._run_id} is still running.")
            with self.db.write() as s:
                store.fail_stale_runs(session=s)
                held = store.get_lock(session=s, name=store.TRAINING_LOCK)
                if held is not None and store.holder_alive(host=held.host, pid=held.pid,
                                                           heartbeat_at=held.heartbeat_at):
                    raise ConflictError("A training round is already running (started elsewhere).")
                # Queued under this process's pid (the child's replaces it): a worker polling for requested
                # rounds (pid None) must not take this one too.
                run = store.create_run(session=s, trigger=trigger, round_index=store.completed_rounds(session=s),
                                       status="queued", pid=os.getpid())
                run_id = run.id
            self._launch(run_id, trigger, force)
        return run_id

    def take_requested(self) -> int | None:
        """Claim the oldest round that a web replica requested (store.request_run) and start it here;
        its run id, or None when none waits or a round of this supervisor still runs."""
        with self._lock:
            if not self._finished.is_set():
                return None
            with self.db.write() as s:
                store.fail_stale_runs(session=s)  # a request no worker took in time is failed, not run late
                run = store.claim_requested_run(session=s, pid=os.getpid())
                if run is None:
                    return None
                run_id, trigger = run.id, run.trigger
                force = bool((run.config or {}).get("requested", {}).get("force", True))
            self._launch(run_id, trigger, force)
        return run_id

    def serve_requests(self, *, poll_s: float, also: Callable[[], object] | None = None) -> None:
        """Start a thread that, every poll_s seconds, starts a round a web replica requested
        (take_requested) and then calls `also` (the worker refreshes its schedule there). Ends at stop()."""

        def loop() -> None:
            while not self._stopping.wait(poll_s):
                for step in (self.take_requested, also):
                    if step is None:
                        continue
                    try:
                        step()
                    except Exception as exc:  # the database may be briefly unreachable: try again next time
                        print(f"kaizen: training worker: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)

        threading.Thread(target=loop, name="kaizen-run-requests", daemon=True).start()

    def _launch(self, run_id: int, trigger: str, force: bool) -> None:
        """Start the child for run `run_id` and the thread that records its end (under self._lock)."""
        args: tuple[object, ...] = (self.settings, run_id, trigger, force)
        if self.cfg is not None or self.limits is not None:
            args += (self.cfg, self.limits)
        proc = self._ctx.Process(target=self._target, args=args, kwargs={"scope": self.scope} if self.scope else {},
                                 name=f"kaizen-train-{run_id}", daemon=True)
        proc.start()
        self._proc, self._run_id = proc, run_id
        self._finished.clear()
        with self.db.write() as s:
            store.update_run(session=s, run_id=run_id, pid=proc.pid)
        threading.Thread(target=self._watch, args=(proc, run_id), name=f"kaizen-watch-{run_id}", daemon=True).start()

    def _watch(self, proc: BaseProcess, run_id: int) -> None:
        try:
            proc.join()
            self._record_end(proc, run_id)
            if self.on_finish:
                self.on_finish(run_id)
        finally:
            self._finished.set()

    def _record_end(self, proc: BaseProcess, run_id: int) -> None:
        """Mark a round whose child died without finishing its run row as failed; free its lock."""
        with self.db.write() as s:
            run = store.get_run(session=s, run_id=run_id)
            if run.status in ("queued", "running"):
                code = proc.exitcode
                how = f"was killed (signal {-code})" if code is not None and code < 0 else f"exited with code {code}"
                store.update_run(session=s, run_id=run_id, status="failed", finished_at=store.utcnow(),
                                 error=run.error or f"The training process {how}; the active adapter is unchanged.")
            store.release_lock_of(session=s, name=store.TRAINING_LOCK, pid=proc.pid)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the round's end is recorded (and on_finish ran); False if timeout seconds passed first."""
        return self._finished.wait(timeout)

    def stop(self) -> None:
        """Kill a round in progress (server shutdown) and wait (up to 15 s) until the watch thread has
        marked its run failed and freed its lock, so no run is left "running" behind a stopped server."""
        self._stopping.set()
        proc, run_id = self._proc, self._run_id
        if proc is not None and proc.is_alive():
            if run_id is not None:  # end and requeue it, before the watch thread records "killed (signal 9)"
                with contextlib.suppress(Exception), self.db.write() as s:
                    store.requeue_run(session=s, run_id=run_id, reason=STOPPED)
            proc.kill()
            self._finished.wait(15)  # the watch thread reaps the child (only it joins) and records the end


class RequestedTraining:
    """The TrainingControl of a web replica (`kaizen serve --role web`), which never trains: `start`
    queues the round in the database (store.request_run) and a training worker's supervisor takes
    it (TrainingSupervisor.take_requested). Its progress is read from the run row like any other."""

    def __init__(self, *, db: Database) -> None:
        self.db = db

    def start(self, *, trigger: str, force: bool = True) -> int:
        try:
            with self.db.write() as s:
                return store.request_run(session=s, trigger=trigger, force=force).id
        except store.Conflict as exc:
            raise ConflictError(str(exc)) from None

    def running(self) -> int | None:
        """The round queued or running anywhere (nothing trains in this process), for the admin views."""
        with self.db.session() as s:
            return store.run_in_progress(session=s)

    def stop(self) -> None:
        return None


def _positive_int(name: str, value: object, low: int, high: int) -> int:
    try:
        if not isinstance(value, str | bytes | bytearray | SupportsInt | SupportsIndex):
            raise TypeError(value)  # what int() refuses
        n = int(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a whole number.") from None
    if not low <= n <= high:
        raise InputError(f"{name} must be between {low} and {high}.")
    return n


class KaizenScheduler:
    def __init__(self, *, db: Database, settings: Settings, supervisor: TrainingControl,
                 count_new: Callable[[], int] | None = None) -> None:
        self.db = db
        self.settings = settings
        self.supervisor = supervisor
        self._count_new = count_new or self._count_new_items
        self._scheduler: BackgroundScheduler | None = None
        self._applied: dict[str, Any] | None = None  # the config the running job was scheduled with
        self._lock = threading.Lock()

    def _count_new_items(self) -> int:
        with self.db.session() as s:
            return store.count_new_since_last_round(session=s)

    def config(self) -> dict[str, Any]:
        defaults = {"enabled": self.settings.schedule, "minutes": self.settings.schedule_minutes,
                    "min_items": self.settings.schedule_min_items}
        with self.db.session() as s:
            stored = store.get_setting(session=s, key=SCHEDULE_KEY, default={}) or {}
        return {**defaults, **{k: v for k, v in stored.items() if k in defaults}}

    def update(self, *, enabled: bool | None = None, minutes: int | None = None,
               min_items: int | None = None) -> dict[str, Any]:
        cfg = self.config()
        if enabled is not None:
            cfg["enabled"] = bool(enabled)
        if minutes is not None:
            cfg["minutes"] = _positive_int("minutes", minutes, 1, 7 * 24 * 60)
        if min_items is not None:
            cfg["min_items"] = _positive_int("min_items", min_items, 1, 1_000_000)
        with self.db.write() as s:
            store.set_setting(session=s, key=SCHEDULE_KEY, value=cfg)
        scheduler = self._scheduler
        if scheduler is not None:
            self._schedule(scheduler, cfg)
        return cfg

    def tick(self, *, force: bool = False) -> int | None:
        """One scheduled check: start a round if enough is new (or forced); returns the run id."""
        with self._lock:
            with self.db.write() as s:
                store.set_setting(session=s, key=LAST_CHECK_KEY, value=store.utcnow().isoformat())
            cfg = self.config()
            if self.supervisor.running() is not None:
                return None
            if not force and (not cfg["enabled"] or self._count_new() < cfg["min_items"]):
                return None
            try:
                return self.supervisor.start(trigger="schedule", force=True)
            except ConflictError:
                return None

    def _next_run(self, minutes: int) -> dt.datetime:
        with self.db.session() as s:
            last = store.get_setting(session=s, key=LAST_CHECK_KEY)
        now = dt.datetime.now(dt.UTC)
        if not last:
            return now + dt.timedelta(minutes=minutes)
        due = dt.datetime.fromisoformat(last).replace(tzinfo=dt.UTC) + dt.timedelta(minutes=minutes)
        return max(due, now + dt.timedelta(seconds=5))  # a missed check fires once, shortly after start

    def refresh(self) -> None:
        """Apply schedule settings that another process (a web replica's admin tab) stored."""
        scheduler, cfg = self._scheduler, self.config()
        if scheduler is not None and cfg != self._applied:
            self._schedule(scheduler, cfg)

    def _schedule(self, scheduler: BackgroundScheduler, cfg: dict[str, Any]) -> None:
        from apscheduler.triggers.interval import IntervalTrigger

        self._applied = dict(cfg)
        if not cfg["enabled"]:
            if scheduler.get_job(JOB_ID):
                scheduler.remove_job(JOB_ID)
            return
        scheduler.add_job(self.tick, IntervalTrigger(minutes=cfg["minutes"]), id=JOB_ID, replace_existing=True,
                                max_instances=1, coalesce=True, misfire_grace_time=None,
                                next_run_time=self._next_run(cfg["minutes"]))

    def jobs(self) -> list[Job]:
        return self._scheduler.get_jobs() if self._scheduler is not None else []

    def start(self) -> None:
        from apscheduler.schedulers.background import BackgroundScheduler

        scheduler = BackgroundScheduler(timezone=dt.UTC)
        self._scheduler = scheduler
        self._schedule(scheduler, self.config())
        scheduler.start()

    def shutdown(self) -> None:
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
            self._scheduler = None
