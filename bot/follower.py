"""Keeps the engine on the adapter version the database calls active.

The `settings` row `active_adapter` is the single source of truth: a promotion by a training
round, `kaizen activate` in another terminal, or a rollback in the admin tab all just write it.
Each serving process follows it (checked every second by a background thread), verifies the
version's checksums, and swaps it in between two generations. A version that fails to load is
refused: the engine keeps serving what it had, and the error is kept for the admin tab. It is
tried again when its files change or on an explicit activation (`store.request_activation`), and
what is served is written back (`store.set_served_adapter`, one report per process, renewed every
30 s while the server runs) for the command line to report.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
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
        # (version, its files' fingerprint) that failed: not retried until the files change or an
        # explicit activation asks again (issue 14, kind 7: a repaired version was never retried).
        self._failed: tuple[str, tuple] | None = None
        self._request: dict[str, str] | None = None  # the last explicit activation seen
        self._reported: tuple[str, str, str | None, bool] | None = None
        self._reported_at = 0.0  # time.monotonic() of the last report
        self._stop = threading.Event()
        self._sync_lock = threading.Lock()  # the admin tab and the background loop both sync
        self._thread: threading.Thread | None = None

    def sync(self, *, force: bool = False) -> str:
        """Swap to the active version if it changed; returns the version being served. `force`
        retries a version that failed to load before."""
        with self._sync_lock:
            return self._sync(force)

    def _fingerprint(self, version: str) -> tuple:
        """(name, size, mtime) of the version's files: a repaired or republished version differs."""
        if version == adapters.BASE:
            return ()
        root = adapters.version_dir(self.adapters_dir, version)
        try:
            return tuple(sorted((str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns)
                                for p in root.rglob("*") if p.is_file()))
        except OSError:
            return ()

    def _sync(self, force: bool) -> str:
        with self.db.session() as s:
            wanted = store.get_active_adapter(session=s)
            request = store.get_activation_request(session=s)
        if request is not None and request != self._request:
            self._request = request
            self._reported = None  # answer every explicit activation, even of the version already served
            force = force or request.get("version") == wanted
        if wanted != self.engine.adapter_version:
            fingerprint = self._fingerprint(wanted)
            if force or self._failed != (wanted, fingerprint):
                try:
                    path = None
                    if wanted != adapters.BASE:
                        path = adapters.version_dir(self.adapters_dir, wanted)
                        adapters.verify(path)
                    self.last_swap_s = self.engine.activate(wanted, path)
                    self.last_error = self._failed = None
                except KaizenError as exc:
                    self._failed = (wanted, fingerprint)
                    self.last_error = f"Could not activate {wanted}: {exc.message}"
        self._report(wanted)
        return self.engine.adapter_version

    def _report(self, wanted: str) -> None:
        """Tell other processes (`kaizen activate`, `kaizen adapters`) what this one serves, on a change."""
        served = self.engine.adapter_version
        error = self.last_error if wanted != served else None
        live = self._thread is not None and not self._stop.is_set()  # a server, not a one-off command
        due = live and time.monotonic() - self._reported_at >= store.SERVED_REPORT_EVERY_S  # "still here"
        if self._reported != (served, wanted, error, live) or due:
            process = {"pid": os.getpid(), "host": store.HOST, "live": live}
            with self.db.write() as s:
                store.set_served_adapter(session=s, version=served, wanted=wanted, error=error, process=process)
            self._reported = (served, wanted, error, live)
            self._reported_at = time.monotonic()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.sync()
            except Exception as exc:  # keep following; the error is shown in the admin tab
                self.last_error = f"Adapter follower: {type(exc).__name__}: {exc}"

    def start(self) -> None:
        """Follow in a thread, and report this process live at once: a `kaizen activate` right after
        the server is up must not be told that no server runs."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="kaizen-adapter-follower", daemon=True)
            self._thread.start()
            try:
                self.sync()
            except Exception as exc:  # as in the loop: the error is shown in the admin tab
                self.last_error = f"Adapter follower: {type(exc).__name__}: {exc}"

    def stop(self) -> None:
        """Stop following, and report this process no longer live (`kaizen activate` then does not wait for it)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._reported is not None and self._reported[3]:
            served, wanted, error, _live = self._reported
            with contextlib.suppress(Exception), self.db.write() as s:  # the database may be gone at shutdown
                store.set_served_adapter(session=s, version=served, wanted=wanted, error=error,
                                         process={"pid": os.getpid(), "host": store.HOST, "live": False})
