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

if TYPE_CHECKING:
    from bot.services import Kaizen

MODEL_CACHE = Path(os.environ.get("KAIZEN_TEST_CACHE", ROOT / ".pytest_cache" / "kaizen-models"))


@pytest.fixture
def fake_engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", memory=False, schedule=False)


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


@pytest.fixture
def live_app(kaizen: Kaizen) -> Iterator[ThreadServer]:
    """The full app (API + chat UI + admin) on the fake engine, served on a free local port."""
    from bot.app import build_app

    with ThreadServer(build_app(kaizen)) as server:
        yield server
