"""The serving process follows the active-version row, also when something else (here `kaizen
activate`, on its own database connection) changes it."""

from __future__ import annotations

from pathlib import Path

import pytest

import launch
from bot.services import Kaizen
from feedback_db import store
from kaizen import adapters
from tests.fakes import FakeEngine
from tests.harness import wait_until
from tests.seed import publish_fake_version

pytestmark = pytest.mark.both_databases


def _where(kaizen: Kaizen) -> list[str]:
    """The command line's flags for the same data and database as the running services."""
    return ["--data-dir", str(kaizen.settings.data_dir), "--db-url", kaizen.settings.database_url]


def test_activate_from_the_command_line_reaches_the_running_engine(kaizen: Kaizen, fake_engine: FakeEngine) -> None:
    for v in ("v1", "v2"):
        publish_fake_version(kaizen, v)
    kaizen.follower.interval_s = 0.05
    kaizen.follower.start()
    where = _where(kaizen)
    assert launch.main(["activate", "v2", *where]) == 0
    wait_until(lambda: fake_engine.adapter_version == "v2", 15, "the follower to serve v2", 0.02)
    assert launch.main(["activate", "base", *where]) == 0
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


def test_a_version_that_failed_is_tried_again_when_its_files_change(kaizen: Kaizen, monkeypatch) -> None:
    # issue 14, kind 7: after one failure the server never retried v1, even once its files were repaired.
    tried: list[Path] = []
    verify = adapters.verify
    monkeypatch.setattr(adapters, "verify", lambda path: (tried.append(path), verify(path))[1])
    weights = publish_fake_version(kaizen, "v1") / "adapter_model.safetensors"
    good = weights.read_bytes()
    weights.write_bytes(b"truncated")
    with kaizen.db.write() as s:
        store.set_active_adapter(session=s, version="v1")
    assert kaizen.follower.sync() == "base" and "checksum" in (kaizen.follower.last_error or "")
    assert kaizen.follower.sync() == "base" and len(tried) == 1  # the same broken files: not tried every second
    weights.write_bytes(good)  # repaired
    assert kaizen.follower.sync() == "v1" and kaizen.follower.last_error is None and len(tried) == 2


def test_the_command_line_reports_what_the_running_server_serves(kaizen: Kaizen, fake_engine: FakeEngine,
                                                                 capsys) -> None:
    publish_fake_version(kaizen, "v1")
    kaizen.follower.interval_s = 0.05
    kaizen.follower.start()
    where = _where(kaizen)

    def reported_live() -> bool:
        with kaizen.db.session() as s:
            return bool((store.get_served_adapter(session=s) or {}).get("live"))

    assert reported_live()  # as soon as it starts, not at its first tick
    fake_engine.refuse.add("v1")
    assert launch.main(["activate", "v1", *where]) == 1  # the server could not take it
    assert "still serves base" in capsys.readouterr().err and fake_engine.adapter_version == "base"
    assert launch.main(["adapters", *where]) == 0
    listing = capsys.readouterr().out
    assert "last reported serving base" in listing and "not v1: Could not activate v1" in listing
    fake_engine.refuse.clear()
    # Same files, but an explicit activation is tried again.
    assert launch.main(["activate", "v1", *where]) == 0
    assert "the running server now serves v1" in capsys.readouterr().out and fake_engine.adapter_version == "v1"
    assert launch.main(["activate", "v1", *where]) == 0  # already served: still a clear answer
    assert "now serves v1" in capsys.readouterr().out


def test_without_a_running_server_activate_says_so_at_once(kaizen: Kaizen, capsys) -> None:
    publish_fake_version(kaizen, "v1")
    kaizen.follower.sync()  # a one-off sync (a command, not a server) reports, but not as live
    assert launch.main(["activate", "v1", *_where(kaizen)]) == 0
    assert "no server is running" in capsys.readouterr().out
