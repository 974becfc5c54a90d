"""A round's progress, written to its `training_runs` row so any process (the admin tab of the
server, `kaizen train` in a terminal) can follow it, and passed on to a caller's callback."""

from __future__ import annotations

import time
from collections.abc import Callable

from feedback_db import store
from feedback_db.db import Database
from trainer.lora import Progress


class RunReporter:
    """Writes progress to the run row (at most every `every_s` seconds) and to the caller."""

    def __init__(self, db: Database, run_id: int, owner: str, callback: Callable[[Progress], None] | None,
                 every_s: float = 0.5):
        self.db, self.run_id, self.owner, self.callback, self.every_s = db, run_id, owner, callback, every_s
        self.curve: list[float] = []
        self._last = 0.0

    def phase(self, phase: str) -> None:
        """Enter a named phase (`kaizen.metrics.ROUND_PHASES`) and renew the lock's
        heartbeat. The live loss curve restarts: it is the curve of the phase in progress."""
        self.curve = []
        with self.db.write() as s:  # the steps shown are the new phase's: none yet
            store.update_run(session=s, run_id=self.run_id, phase=phase, step=0, total_steps=0, eta_s=None,
                             loss_curve=[])
            store.heartbeat_lock(session=s, name=store.TRAINING_LOCK, owner=self.owner)

    def __call__(self, p: Progress) -> None:
        self.curve.append(round(float(p.loss), 5))
        now = time.monotonic()
        if now - self._last >= self.every_s or p.step >= p.total_steps:
            self._last = now
            with self.db.write() as s:
                eta = None if p.eta_s is None else float(p.eta_s)
                store.update_run(session=s, run_id=self.run_id, step=p.step, total_steps=p.total_steps,
                                 loss=float(p.loss), lr=float(p.lr), eta_s=eta, loss_curve=list(self.curve))
                store.heartbeat_lock(session=s, name=store.TRAINING_LOCK, owner=self.owner)
        if self.callback:
            self.callback(p)
