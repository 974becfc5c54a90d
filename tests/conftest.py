"""Shared fixtures: a fake chat engine, the tiny and real models, the wired services, a live app.

Most tests run in milliseconds on `FakeEngine` (tests/fakes.py). The tiny random-weight model (its
own small tokenizer, built in about a second: tests/models.py) and the real embedded model are here
for tests whose behaviour depends on real weights. Servers, polling and the command line in a
child process live in tests/harness.py; seeded data in tests/seed.py.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see launch.main: spinning threads collapse under load
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from kaizen.settings import Settings
from tests.fakes import FakeEngine
from tests.harness import ROOT, ThreadServer
from tests.postgres import PostgresCluster

if TYPE_CHECKING:
    from bot.services import Kaizen

MODEL_CACHE = Path(os.environ.get("KAIZEN_TEST_CACHE", ROOT / ".pytest_cache" / "kaizen-models"))


@pytest.fixture
def fake_engine() -> FakeEngine:
    return FakeEngine()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test marked `both_databases` that uses a database runs twice: on SQLite, then on PostgreSQL."""
    if os.environ.get("KAIZEN_TEST_DB") == "postgresql":
        return  # every test runs on PostgreSQL already
    if "database_kind" in metafunc.fixturenames and metafunc.definition.get_closest_marker("both_databases"):
        metafunc.parametrize("database_kind", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)],
                             indirect=True)


@pytest.fixture
def database_kind(request: pytest.FixtureRequest) -> str:
    """The database kind, sqlite or postgresql: the test's parameter (`both_databases`), else KAIZEN_TEST_DB (default
    sqlite), so `KAIZEN_TEST_DB=postgresql make test-fast` runs the quick tier on PostgreSQL."""
    kind = getattr(request, "param", None) or os.environ.get("KAIZEN_TEST_DB", "sqlite")
    if kind not in ("sqlite", "postgresql"):
        raise ValueError(f"KAIZEN_TEST_DB must be sqlite or postgresql, not {kind!r}")
    return kind


@pytest.fixture
def postgres_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A new, empty database on the test run's PostgreSQL server, dropped after the test."""
    cluster: PostgresCluster = request.getfixturevalue("postgres_cluster")
    url = cluster.create_database()
    yield url
    cluster.drop_database(url)


@pytest.fixture
def db_url(database_kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """The URL of a new, empty database of the test's kind (SQLite in tmp_path, or PostgreSQL)."""
    if database_kind == "postgresql":
        return str(request.getfixturevalue("postgres_url"))
    return f"sqlite:///{tmp_path / 'kaizen.db'}"


@pytest.fixture
def settings_db_url(database_kind: str, request: pytest.FixtureRequest) -> str:
    """Settings.db_url for the test's database kind: "" (SQLite in the data directory) or a new
    PostgreSQL database."""
    return str(request.getfixturevalue("postgres_url")) if database_kind == "postgresql" else ""


@pytest.fixture
def settings(tmp_path: Path, settings_db_url: str) -> Settings:
    """Settings for one test: data in tmp_path, the test's database kind, no memory, no schedule."""
    return Settings(data_dir=tmp_path / "data", memory=False, schedule=False, db_url=settings_db_url)


@pytest.fixture
def kaizen(settings: Settings, fake_engine: FakeEngine) -> Iterator[Kaizen]:
    """The wired services (`bot.services.Kaizen`) on the fake engine, with training and the schedule."""
    from bot.memory import HashingEmbedder, Memory
    from bot.services import build_services
    from scheduler import KaizenScheduler, TrainingSupervisor
    from trainer.dataset import export_training_set

    # The memory's retrieval is also the scope test of adapter routing; a hashing embedder keeps it fast.
    k = build_services(settings, engine=fake_engine, memory=Memory(HashingEmbedder()))
    k.training = TrainingSupervisor(db=k.db, settings=k.settings, on_finish=lambda _run_id: k.follower.sync())
    k.scheduler = KaizenScheduler(db=k.db, settings=k.settings, supervisor=k.training)
    k.export_dataset = export_training_set
    yield k
    k.close()


@pytest.fixture(scope="session")
def embedded_model_dir() -> Path:
    """The real embedded SmolLM2-135M-Instruct, converted once and cached between runs."""
    from kaizen.base_model import convert_embedded

    return convert_embedded(MODEL_CACHE)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weight llama with its own byte-level BPE tokenizer and SmolLM2's chat template
    (tests/models.py), built once per test run."""
    from tests.models import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("models") / "tiny-llama")


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """A real PostgreSQL server for this test run (tests/postgres.py); skipped, with the reason, where
    none can be started."""
    bin_dir, why = PostgresCluster.find()
    if bin_dir is None:
        pytest.skip(why)
    cluster = PostgresCluster(bin_dir)
    yield cluster
    cluster.stop()


@pytest.fixture
def live_app(kaizen: Kaizen) -> Iterator[ThreadServer]:
    """The full app (API + chat UI + admin) on the fake engine, served on a free local port."""
    from bot.app import build_app

    with ThreadServer(build_app(kaizen)) as server:
        yield server
