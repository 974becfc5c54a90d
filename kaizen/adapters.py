"""Adapter versions on disk: `DATA_DIR/adapters/vN/` with safetensors and a `meta.json`; the knowledge
adapter at the top, and optionally a preference adapter in `vN/preference/` (served on every reply).

A version is written into a hidden temporary directory first, its files are checksummed into
`meta.json`, everything is flushed to disk, and only then is the directory renamed to `vN`. A
crash at any point leaves either no `vN` at all or a complete one. Loading checks the
checksums, so a truncated or tampered file is refused with a clear error instead of being served.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kaizen.errors import AdapterError, InputError

META = "meta.json"
VERSION_RE = re.compile(r"^v[1-9][0-9]{0,5}$")
BASE = "base"


PREFERENCE_DIR = "preference"  # a version's optional preference adapter (trainer/preference.py)
SUBDIRS = (PREFERENCE_DIR,)  # checksummed like the files at the top
KNOWLEDGE_SLOT = "default"  # the peft adapter names a served (or evaluated) version's adapters are loaded under
PREFERENCE_SLOT = "preference"


def cast_weights(model: Any, dtype: Any) -> None:
    """Cast every floating-point *parameter* of a torch `model` (base weights and any LoRA weights) to
    `dtype`, in place, and leave its buffers alone. Not `model.to(dtype)`: that also casts the rotary
    embedding's `inv_freq`, which transformers keeps in float32 in a bfloat16 model, and so changes every
    reply of the base model (17 of 26 greedy replies of SmolLM2-135M changed once the first adapter was
    loaded: the base path served after a LoRA load was no longer the base model)."""
    for param in model.parameters():
        if param.is_floating_point() and param.dtype != dtype:
            param.data = param.data.to(dtype)


@contextlib.contextmanager
def serving(model: Any, *, knowledge: bool, preference: bool) -> Iterator[None]:
    """The LoRA layers of a peft `model` active for one reply, as Kaizen serves a version: the knowledge
    adapter only in scope (`knowledge`), the preference adapter on every reply when there is one
    (`preference`); their updates add up (peft's several active adapters). Neither: peft's
    `disable_adapter()`, the base model. Afterwards the knowledge adapter is the active one again.
    bot.engine serves through it and trainer.evaluate measures through it, so both agree."""
    names = ([KNOWLEDGE_SLOT] if knowledge else []) + ([PREFERENCE_SLOT] if preference else [])
    if not names:
        with model.disable_adapter():
            yield
        return
    if names == [KNOWLEDGE_SLOT]:  # the resting state
        yield
        return
    model.base_model.set_adapter(names, inference_mode=True)
    try:
        yield
    finally:
        model.base_model.set_adapter(KNOWLEDGE_SLOT, inference_mode=True)


def check_version_name(version: str) -> str:
    """Only `base` or `v<number>`: nothing that could point outside the adapters directory."""
    if not isinstance(version, str) or not (version == BASE or VERSION_RE.fullmatch(version)):
        raise InputError(f"{str(version)[:60]!r} is not a version name; use 'base' or v1, v2, ...")
    return version


def version_dir(adapters_dir: Path, version: str) -> Path:
    check_version_name(version)
    return Path(adapters_dir) / version


def new_workdir(adapters_dir: Path) -> Path:
    """A hidden scratch directory next to the versions (same filesystem, so rename is atomic)."""
    Path(adapters_dir).mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=".tmp-", dir=adapters_dir))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(workdir: Path, adapters_dir: Path, version: str, meta: dict) -> Path:
    """Checksum the files in `workdir`, write meta.json, and rename it to `adapters/<version>`."""
    target = version_dir(adapters_dir, version)
    if target.exists():
        raise AdapterError(f"Adapter {version} already exists in {adapters_dir}.")
    files = sorted(p for p in workdir.iterdir() if p.is_file() and p.name != META)
    if not any(p.suffix == ".safetensors" for p in files):
        raise AdapterError("The training round produced no safetensors file.")
    for sub in SUBDIRS:
        if (workdir / sub).is_dir():
            files += sorted(p for p in (workdir / sub).iterdir() if p.is_file())
    meta = {**meta, "version": version, "files": {p.relative_to(workdir).as_posix(): _sha256(p) for p in files}}
    meta_path = workdir / META
    with meta_path.open("w", encoding="utf-8") as f:
        json.dump(meta, f, ensure_ascii=False, indent=2)
        f.flush()
        os.fsync(f.fileno())
    for p in files:
        with p.open("rb") as f:
            os.fsync(f.fileno())
    os.rename(workdir, target)
    _fsync_dir(Path(adapters_dir))
    return target


def discard(workdir: Path | None) -> None:
    if workdir is not None:
        shutil.rmtree(workdir, ignore_errors=True)


def clean_workdirs(adapters_dir: Path) -> int:
    """Remove scratch directories left by a crashed round; returns how many."""
    n = 0
    if Path(adapters_dir).is_dir():
        for p in Path(adapters_dir).glob(".tmp-*"):
            shutil.rmtree(p, ignore_errors=True)
            n += 1
    return n


def verify(path: Path) -> dict:
    """Return the version's meta after checking that every file is there and intact."""
    path = Path(path)
    meta_path = path / META
    if not path.is_dir():
        raise AdapterError(f"The adapter directory {path.name} does not exist.")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        files = meta["files"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise AdapterError(f"Adapter {path.name} has a missing or unreadable {META}: {exc}") from None
    if not isinstance(files, dict) or not files:
        raise AdapterError(f"Adapter {path.name}'s {META} lists no files.")
    for name, digest in files.items():
        f = path / name
        folder, _, base = name.rpartition("/")
        if (folder and folder not in SUBDIRS) or "/" in base or "\\" in name or base in ("", ".", "..") \
                or not f.is_file():
            raise AdapterError(f"Adapter {path.name} is missing its file {name}.")
        if _sha256(f) != digest:
            raise AdapterError(f"Adapter {path.name}: {name} does not match its checksum (corrupt or truncated).")
    return meta
