"""The seams that `launch.py` wires: what the serving side (bot/) needs from training and
scheduling, which live in trainer/ and scheduler.py and which bot/ may not import.

`scheduler.TrainingSupervisor` and `scheduler.KaizenScheduler` implement the first two;
`trainer.dataset.export_training_set` is a `DatasetExporter`. Tests pass fakes with the same
shape.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from feedback_db.db import Database


class ScopeRouter(Protocol):
    """Routing by scope: which questions the learned adapter answers (the others go to the base
    model). `bot.recall.KnowledgeRecall` implements it with the retrieval memory's calibrated
    retrieval; the trainer uses it to measure a new version as it will be served."""

    def in_scope(self, text: str) -> bool:
        """True if `text` is within the taught scope (a related taught question exists)."""
        ...


class TrainingControl(Protocol):
    """Starts training rounds in the background, one at a time."""

    def start(self, *, trigger: str, force: bool = True) -> int:
        """Start a round; returns its run id. Raises ConflictError if one is running."""
        ...

    def running(self) -> int | None:
        """The id of the run in progress in this process, or None."""
        ...

    def stop(self) -> None:
        """Kill a round in progress (server shutdown)."""
        ...


class ScheduleControl(Protocol):
    """The scheduled training check, whose settings can change while it runs."""

    def config(self) -> dict[str, Any]:
        """{"enabled": bool, "minutes": int, "min_items": int}."""
        ...

    def update(self, *, enabled: bool | None = None, minutes: int | None = None,
               min_items: int | None = None) -> dict[str, Any]:
        """Validate (InputError), store and apply new settings; returns the new config()."""
        ...

    def shutdown(self) -> None:
        ...


class DatasetExporter(Protocol):
    def __call__(self, *, db: Database, path: Path) -> int:
        """Write the training set as chat JSONL to `path`; returns the number of rows."""
        ...
