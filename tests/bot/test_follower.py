"""The serving process follows the active-version row, also when something else (here `kaizen
activate`, on its own database connection) changes it."""

from __future__ import annotations

import launch
from bot.services import Kaizen
from feedback_db import store
from tests.fakes import FakeEngine
from tests.harness import wait_until
from tests.seed import publish_fake_version


def test_activate_from_the_command_line_reaches_the_running_engine(kaizen: Kaizen, fake_engine: FakeEngine) -> None:
    for v in ("v1", "v2"):
        publish_fake_version(kaizen, v)
    kaizen.follower.interval_s = 0.05
    kaizen.follower.start()
    assert launch.main(["activate", "v2", "--data-dir", str(kaizen.settings.data_dir)]) == 0
    wait_until(lambda: fake_engine.adapter_version == "v2", 15, "the follower to serve v2", 0.02)
    assert launch.main(["activate", "base", "--data-dir", str(kaizen.settings.data_dir)]) == 0
    wait_until(lambda: fake_engine.adapter_version == "base", 15, "the follower to go back to base", 0.02)
    assert kaizen.follower.last_error is None


def test_a_corrupt_active_version_is_refused_and_the_old_one_keeps_serving(kaizen: Kaizen) -> None:
    publish_fake_version(kaizen, "v1")
    publish_fake_version(kaizen, "v2")
    with kaizen.db.write() as s:
        store.set_active_adapter(session=s, version="v1")
    assert kaizen.follower.sync() == "v1"
    (kaizen.settings.adapters_dir / "v2" / "adapter_model.safetensors").write_bytes(b"truncated")
    with kaizen.db.write() as s:
        store.set_active_adapter(session=s, version="v2")
    assert kaizen.follower.sync() == "v1"
    assert "checksum" in (kaizen.follower.last_error or "")


def test_exchanges_record_the_version_that_answered(kaizen: Kaizen) -> None:
    publish_fake_version(kaizen, "v1")
    kaizen.chat.answer("before")
    with kaizen.db.write() as s:
        store.set_active_adapter(session=s, version="v1")
    kaizen.follower.sync()
    kaizen.chat.answer("after")
    with kaizen.db.session() as s:
        versions = [e.adapter_version for e in store.list_exchanges(session=s)]
    assert sorted(versions) == ["base", "v1"]
