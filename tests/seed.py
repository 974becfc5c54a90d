"""Data the tests put in place before they act: adapter versions (fake or real weights), a database
in a data directory, and a snapshot of everything an admin call could change."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from feedback_db import store
from feedback_db.db import Database
from kaizen import adapters

if TYPE_CHECKING:
    from bot.services import Kaizen

METRICS = {"new_recall": 1.0, "retention": 1.0, "paraphrase_recall": 0.5, "drift": 0.02, "steps": 8, "seconds": 12.5}


def open_db(data: Path) -> Database:
    """The database of the data directory `data` (created and migrated if new)."""
    data.mkdir(parents=True, exist_ok=True)
    return Database(f"sqlite:///{(data / 'kaizen.db').resolve()}")


def publish_fake_version(kaizen: Kaizen, version: str, verdict: str = "promoted",
                         metrics: dict[str, Any] | None = None) -> Path:
    """Publish and record a version whose weights are a few bytes (for code that never loads them)."""
    work = adapters.new_workdir(kaizen.settings.adapters_dir)
    (work / "adapter_model.safetensors").write_bytes(b"weights " + version.encode())
    (work / "adapter_config.json").write_text("{}")
    path = adapters.publish(work, kaizen.settings.adapters_dir, version, {"round": 0})
    with kaizen.db.write() as s:
        store.record_adapter(session=s, version=version, run_id=None, round_index=0, verdict=verdict,
                             reason="new facts recalled", path=str(path),
                             metrics=METRICS if metrics is None else metrics)
    return path


def add_version(db: Database, data: Path, version: str, model_dir: Path, seed: int, *, active: bool = False,
                **weights: Any) -> Path:
    """Publish and record a version with random real weights for `model_dir`, as a training round does."""
    from tests.models import random_adapter

    work = random_adapter(adapters.new_workdir(data / "adapters"), model_dir, seed, **weights)
    path = adapters.publish(work, data / "adapters", version, {"made_by": "tests/seed.py"})
    with db.write() as s:
        store.record_adapter(session=s, version=version, run_id=None, round_index=0, verdict="promoted",
                             reason="test", metrics={}, path=str(path))
        if active:
            store.set_active_adapter(session=s, version=version)
    return path


def snapshot(kaizen: Kaizen) -> dict[str, Any]:
    """Everything an admin call could change."""
    from scheduler import SCHEDULE_KEY

    with kaizen.db.session() as s:
        return {
            "totals": store.totals(session=s),
            "feedback": [(f.id, f.status, f.correction) for f, _ in store.list_feedback(session=s)],
            "knowledge": [(k.id, k.enabled, k.answer) for k in store.list_knowledge(session=s)],
            "runs": [r.id for r in store.list_runs(session=s)],
            "active": store.get_active_adapter(session=s),
            "settings": {k: store.get_setting(session=s, key=k) for k in ("persona", "auto_approve", SCHEDULE_KEY)},
        }
