"""A throwaway PostgreSQL server for the tests: a real cluster in a temporary directory.

`initdb` makes a cluster that trusts local connections, `pg_ctl` starts it listening only on a
Unix socket inside that directory (no TCP port to collide with), and each test gets a database of
its own (`CREATE DATABASE`), so tests never see each other's rows. PostgreSQL refuses to run as
root, so as root the server runs as the `postgres` user that Debian's package creates.

`make test` installs Debian's `postgresql` package where it is missing; when the server binaries
still cannot be found, `PostgresCluster.find()` says why and the tests that need it are skipped
with that reason.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import sqlalchemy


def _bin_dir() -> Path | None:
    """The directory holding initdb and pg_ctl: on PATH, or Debian's /usr/lib/postgresql/<n>/bin."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).resolve().parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    return Path(candidates[-1]).parent if candidates else None


class PostgresCluster:
    """A running PostgreSQL cluster owned by the test session; `stop()` removes it.

    `url(name)` is the SQLAlchemy URL (psycopg 3) of database `name` on it.
    """

    _names = itertools.count(1)

    def __init__(self, bin_dir: Path):
        self.bin_dir = bin_dir
        self.dir = Path(tempfile.mkdtemp(prefix="kaizen-pg-"))
        self._user: str | None = None
        if os.geteuid() == 0:  # initdb and postgres refuse to run as root
            self._user = "postgres"
            pw = pwd.getpwnam(self._user)
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        data = self.dir / "data"
        self._run("initdb", "-D", str(data), "-A", "trust", "-U", "postgres", "-E", "UTF8",
                  "--locale=C.UTF-8")
        self._run("pg_ctl", "-D", str(data), "-w", "-l", str(self.dir / "log"), "-o",
                  f"-k {self.dir} -c listen_addresses= -c fsync=off -c max_connections=200", "start")
        self._admin = sqlalchemy.create_engine(self.url("postgres"), isolation_level="AUTOCOMMIT",
                                               poolclass=sqlalchemy.pool.NullPool)

    @classmethod
    def find(cls) -> tuple[Path | None, str]:
        """(bin_dir, "") when a server can be started here, else (None, the reason it cannot)."""
        bin_dir = _bin_dir()
        if bin_dir is None:
            return None, ("PostgreSQL server binaries (initdb, pg_ctl) not found; "
                          "`make test` installs Debian's postgresql")
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                return None, "running as root and there is no 'postgres' user to run the server as"
        try:
            import psycopg  # noqa: F401
        except ImportError as exc:  # pragma: no cover - psycopg is a dependency of the project
            return None, f"psycopg is not installed: {exc}"
        return bin_dir, ""

    def _run(self, tool: str, *args: str) -> None:
        cmd = [str(self.bin_dir / tool), *args]
        if self._user:
            cmd = ["runuser", "-u", self._user, "--", *cmd]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=self.dir)
        if done.returncode:
            log = self.dir / "log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"{tool} failed ({done.returncode}): {done.stderr.strip()[-2000:]}\n{tail}")

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@/{database}?host={self.dir}"

    def create_database(self) -> str:
        """A new empty database; returns its URL."""
        name = f"test_{os.getpid()}_{next(self._names)}"
        with self._admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, url: str) -> None:
        """Drop a database made by create_database, ending any connection still open to it."""
        name = sqlalchemy.engine.make_url(url).database
        with self._admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        self._admin.dispose()
        try:
            self._run("pg_ctl", "-D", str(self.dir / "data"), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
