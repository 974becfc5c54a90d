"""A small disk cache for answers that depend only on the model, the prompts and the settings.

The base model's greedy answers to the anchor and held-out prompts are the same every round
until the model, the persona or a generation setting changes; they are computed once and kept
in `DATA_DIR/cache/<sha1 of the key>.json`, written atomically.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any


def cached(path: Path, key: dict[str, Any], compute: Callable[[], list[Any]]) -> list[Any]:
    """Base-model answers depend only on the model, prompts and settings: compute them once."""
    digest = hashlib.sha1(json.dumps(key, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]
    file = path / f"{digest}.json"
    if file.is_file():
        return json.loads(file.read_text(encoding="utf-8"))
    value = compute()
    path.mkdir(parents=True, exist_ok=True)
    tmp = file.with_suffix(".part")
    tmp.write_text(json.dumps(value, ensure_ascii=False), encoding="utf-8")
    tmp.replace(file)
    return value
