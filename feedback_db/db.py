"""Database engine and session setup, and running the migrations at startup.

SQLite gets WAL mode, a busy timeout and one writer at a time (SQLite allows only one, and
waiting inside Python is kinder than 'database is locked'). Any other URL (KAIZEN_DB_URL, for
example PostgreSQL) is used as it is.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry

MIGRATIONS = Path(__file__).parent / "migrations"

# What a database that cannot be reached raises (a PostgreSQL server down or restarting, a lost
# connection): the API answers these with 503 and Retry-After, and /healthz says so.
UNAVAILABLE: tuple[type[Exception], ...] = (OperationalError, InterfaceError)


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


def migrate(engine: Engine) -> None:
    """Bring the schema up to the newest migration (safe to call at every start)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


class Database:
    """Owns the engine and hands out sessions; writes are serialized for SQLite."""

    def __init__(self, url: str, *, run_migrations: bool = True):
        self.url = url
        self.engine = make_engine(url)
        if run_migrations:
            migrate(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._write_lock = threading.RLock() if url.startswith("sqlite") else None

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A read session (no commit)."""
        with self._sessions() as s:
            yield s

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A session that commits on success and rolls back on any error."""
        if self._write_lock is not None:
            self._write_lock.acquire()
        try:
            with self._sessions() as s, s.begin():
                yield s
        finally:
            if self._write_lock is not None:
                self._write_lock.release()

    def ping(self) -> str | None:
        """None if the database answers `SELECT 1`, else why not (one line)."""
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except UNAVAILABLE as exc:
            cause = getattr(exc, "orig", None) or exc  # the driver's own message, without the SQL
            return (str(cause).strip().splitlines() or [type(cause).__name__])[0][:300]
        return None

    def describe(self) -> str:
        """The database for a log line, without its password: "sqlite (/path/kaizen.db)" or
        "postgresql (db.example.com/kaizen)"."""
        url = self.engine.url
        if url.get_backend_name() == "sqlite":
            return f"sqlite ({url.database})"
        where = url.host or url.query.get("host") or "local socket"
        return f"{url.get_backend_name()} ({where}/{url.database})"

    def close(self) -> None:
        self.engine.dispose()
