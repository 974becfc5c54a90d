"""Adapter versions: atomic publish, checksums, refusal of corrupt or unsafe versions."""

import json

import pytest

from kaizen import adapters
from kaizen.errors import AdapterError, InputError


def _workdir(adapters_dir, payload=b"weights"):
    work = adapters.new_workdir(adapters_dir)
    (work / "adapter_model.safetensors").write_bytes(payload)
    (work / "adapter_config.json").write_text('{"r": 8}')
    return work


def test_publish_writes_meta_with_checksums_and_renames(tmp_path):
    path = adapters.publish(_workdir(tmp_path), tmp_path, "v1", {"round": 0, "loss_curve": [1.0, 0.5]})
    assert path == tmp_path / "v1"
    meta = adapters.verify(path)
    assert meta["version"] == "v1" and meta["round"] == 0
    assert set(meta["files"]) == {"adapter_model.safetensors", "adapter_config.json"}
    assert not list(tmp_path.glob(".tmp-*"))


def test_publish_refuses_existing_version_and_empty_round(tmp_path):
    adapters.publish(_workdir(tmp_path), tmp_path, "v1", {})
    with pytest.raises(AdapterError, match="already exists"):
        adapters.publish(_workdir(tmp_path), tmp_path, "v1", {})
    empty = adapters.new_workdir(tmp_path)
    with pytest.raises(AdapterError, match="no safetensors"):
        adapters.publish(empty, tmp_path, "v2", {})
    assert not (tmp_path / "v2").exists()


@pytest.mark.parametrize(("damage", "match"), [
    (lambda p: (p / "adapter_model.safetensors").write_bytes(b"weightz"), "checksum"),
    (lambda p: (p / "adapter_model.safetensors").write_bytes(b"wei"), "checksum"),
    (lambda p: (p / "adapter_model.safetensors").unlink(), "missing"),
    (lambda p: (p / "meta.json").unlink(), "meta.json"),
    (lambda p: (p / "meta.json").write_text("{broken"), "meta.json"),
    (lambda p: (p / "meta.json").write_text(json.dumps({"files": {"../../etc/passwd": "x"}})), "missing"),
])
def test_corrupt_versions_are_refused(tmp_path, damage, match):
    path = adapters.publish(_workdir(tmp_path), tmp_path, "v1", {})
    damage(path)
    with pytest.raises(AdapterError, match=match):
        adapters.verify(path)


@pytest.mark.parametrize("name", ["../../etc/passwd", "/etc/passwd", "V1", "v0", "v1/../v2", "v1\x00", "", "vv1", 7])
def test_unsafe_version_names_are_rejected(tmp_path, name):
    with pytest.raises(InputError):
        adapters.version_dir(tmp_path, name)


def test_leftover_workdirs_from_a_crash_are_cleaned(tmp_path):
    _workdir(tmp_path)
    adapters.publish(_workdir(tmp_path), tmp_path, "v1", {})
    assert adapters.clean_workdirs(tmp_path) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["v1"]
