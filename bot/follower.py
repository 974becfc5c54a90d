"""Keeps the engine on the adapter version the database calls active.

The `settings` row `active_adapter` is the single source of truth: a promotion by a training
round, `kaizen activate` in another terminal, or a rollback in the admin tab all just write it.
Each serving process follows it (checked every second by a background thread), verifies the
version's checksums, and swaps it in between two generations. A version that fails to load is
refused: the engine keeps serving what it had, and the error is kept for the admin tab.
"""

from __future__ import annotations

import threading
from pathlib import Path

from bot.engine_api import ChatEngine
from feedback_db import store
from feedback_db.db import Database
from kaizen import adapters
from kaizen.errors import KaizenError


class AdapterFollower:
    def __init__(self, *, db: Database, engine: ChatEngine, adapters_dir: Path, interval_s: float = 1.0) -> None:
        self.db = db
        self.engine = engine
        self.adapters_dir = Path(adapters_dir)
        self.interval_s = interval_s
        self.last_error: str | None = None
        self.last_swap_s: float | None = None
        self._failed: str | None = None
        self._stop = threading.Event()
        self._sync_lock = threading.Lock()  # the admin tab and the background loop both sync
        self._thread: threading.Thread | None = None

    def sync(self) -> str:
        """Swap to the active version if it changed; returns the version being served."""
        with self._sync_lock:
            return self._sync()

    def _sync(self) -> str:
        with self.db.session() as s:
            wanted = store.get_active_adapter(session=s)
        if wanted == self.engine.adapter_version or wanted == self._failed:
            return self.engine.adapter_version
        try:
            path = None
            if wanted != adapters.BASE:
                path = adapters.version_dir(self.adapters_dir, wanted)
                adapters.verify(path)
            self.last_swap_s = self.engine.activate(wanted, path)
            self.last_error = self._failed = None
        except KaizenError as exc:
            self._failed = wanted
            self.last_error = f"Could not activate {wanted}: {exc.message}"
        return self.engine.adapter_version

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.sync()
            except Exception as exc:  # keep following; the error is shown in the admin tab
                self.last_error = f"Adapter follower: {type(exc).__name__}: {exc}"

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="kaizen-adapter-follower", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
