"""The serving process follows the active-version row, also when another process changes it."""

import time

from feedback_db import store
from kaizen import adapters
from tests.conftest import kaizen_cli


def _publish(settings, version, meta=None):
    work = adapters.new_workdir(settings.adapters_dir)
    (work / "adapter_config.json").write_text("{}")
    (work / "adapter_model.safetensors").write_bytes(b"fake weights " + version.encode())
    return adapters.publish(work, settings.adapters_dir, version, meta or {})


def _record(kaizen, version, path):
    with kaizen.db.write() as s:
        store.record_adapter(session=s, version=version, run_id=None, round_index=0, verdict="promoted",
                             reason="", metrics={}, path=str(path))


def _until(pred, timeout=15):
    deadline = time.time() + timeout
    while time.time() < deadline and not pred():
        time.sleep(0.1)
    return pred()


def test_activate_from_another_process_reaches_the_running_engine(kaizen, fake_engine):
    for v in ("v1", "v2"):
        _record(kaizen, v, _publish(kaizen.settings, v))
    kaizen.follower.interval_s = 0.2
    kaizen.follower.start()
    kaizen_cli("activate", "v2", data_dir=kaizen.settings.data_dir)
    assert _until(lambda: fake_engine.adapter_version == "v2")
    kaizen_cli("activate", "base", data_dir=kaizen.settings.data_dir)
    assert _until(lambda: fake_engine.adapter_version == "base")
    assert kaizen.follower.last_error is None


def test_a_corrupt_active_version_is_refused_and_the_old_one_keeps_serving(kaizen, fake_engine):
    path = _publish(kaizen.settings, "v1")
    _record(kaizen, "v1", path)
    _record(kaizen, "v2", _publish(kaizen.settings, "v2"))
    with kaizen.db.write() as s:
        store.set_active_adapter(session=s, version="v1")
    assert kaizen.follower.sync() == "v1"
    (kaizen.settings.adapters_dir / "v2" / "adapter_model.safetensors").write_bytes(b"truncated")
    with kaizen.db.write() as s:
        store.set_active_adapter(session=s, version="v2")
    assert kaizen.follower.sync() == "v1"
    assert "checksum" in kaizen.follower.last_error
    # the CLI refuses it up front, with a clear message
    proc = kaizen_cli("activate", "v2", data_dir=kaizen.settings.data_dir, check=False)
    assert proc.returncode == 2 and "checksum" in proc.stderr
    proc = kaizen_cli("activate", "../../etc/passwd", data_dir=kaizen.settings.data_dir, check=False)
    assert proc.returncode == 2 and "not a version name" in proc.stderr


def test_exchanges_record_the_version_that_answered(kaizen, fake_engine):
    _record(kaizen, "v1", _publish(kaizen.settings, "v1"))
    kaizen.chat.answer("before")
    with kaizen.db.write() as s:
        store.set_active_adapter(session=s, version="v1")
    kaizen.follower.sync()
    kaizen.chat.answer("after")
    with kaizen.db.session() as s:
        versions = [e.adapter_version for e in store.list_exchanges(session=s)]
    assert sorted(versions) == ["base", "v1"]
