"""The command line, in-process through `launch.main(argv)` (what the `kaizen` script runs): exit
codes and what it prints. `kaizen serve` itself and other process boundaries are tested in tests/e2e/."""

from __future__ import annotations

from pathlib import Path

import pytest

import launch
from feedback_db import store
from tests.seed import open_db
from tests.trainer.scripted import scripted_evaluation
from trainer import rounds

FAST_ROUND = {"KAIZEN_TRAIN_MAX_STEPS": "3", "KAIZEN_TRAIN_BATCH_SIZE": "4", "KAIZEN_TRAIN_ANCHORS_PER_STEP": "2",
              "KAIZEN_TRAIN_EARLY_STOP_EXACT": "false", "KAIZEN_TRAIN_ANCHOR_MAX_NEW_TOKENS": "8",
              "KAIZEN_DTYPE": "float32"}


@pytest.fixture
def data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_model_dir: Path) -> Path:
    """A data directory, with the tiny model and a three-step round configured through the environment."""
    for key, value in {**FAST_ROUND, "KAIZEN_MODEL": str(tiny_model_dir)}.items():
        monkeypatch.setenv(key, value)
    return tmp_path / "data"


def kaizen(*args: str, data: Path) -> int:
    return launch.main([*args, "--data-dir", str(data)])


def teach(data: Path, question: str = "Xin chào", answer: str = "Công ty BICweb kính chào quý khách!") -> None:
    db = open_db(data)
    with db.write() as s:
        store.add_knowledge(session=s, question=question, answer=answer, origin="teach", verbatim=True)
    db.close()


def learns_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tiny random model cannot learn a sentence: script its recall (everything else is measured)."""
    monkeypatch.setattr(rounds, "evaluate_adapter", scripted_evaluation(lambda fact: True))


def test_train_with_nothing_to_train_exits_2(data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert kaizen("train", data=data) == 2
    assert capsys.readouterr().err.startswith("kaizen: Nothing new to learn")
    assert kaizen("train", "--force", data=data) == 2
    err = capsys.readouterr().err
    assert err.startswith("kaizen: ") and "nothing to train" in err and "Traceback" not in err


def test_train_that_the_gate_rejects_exits_1(data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    teach(data)
    assert kaizen("train", data=data) == 1  # a random tiny model cannot recall the sentence
    out = capsys.readouterr().out
    assert "v1: " in out and "new-fact recall 0%" in out and "not promoted: the active adapter is unchanged" in out
    assert kaizen("adapters", data=data) == 0
    listing = capsys.readouterr().out
    assert "* base" in listing and "v1       rejected" in listing


def test_train_that_the_gate_passes_exits_0_and_then_needs_force(data: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    learns_everything(monkeypatch)
    teach(data)
    assert kaizen("train", data=data) == 0
    out = capsys.readouterr().out
    assert "promoted: the bot now answers from v1" in out and "3 steps" in out
    assert kaizen("train", data=data) == 2  # nothing new since v1
    assert "Nothing new" in capsys.readouterr().err
    assert kaizen("train", "--force", data=data) == 0
    assert "answers from v2" in capsys.readouterr().out


def test_activate_refuses_a_corrupt_or_unknown_version_with_exit_2(data: Path, monkeypatch: pytest.MonkeyPatch,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    learns_everything(monkeypatch)
    teach(data)
    assert kaizen("train", data=data) == 0
    assert kaizen("activate", "base", data=data) == 0
    assert "active adapter: base" in capsys.readouterr().out
    (data / "adapters" / "v1" / "adapter_model.safetensors").write_bytes(b"truncated")
    for version, words in [("v1", "checksum"), ("v7", "v7"), ("latest", "not a version name")]:
        assert kaizen("activate", version, data=data) == 2, version
        err = capsys.readouterr().err
        assert err.startswith("kaizen: ") and words in err, (version, err)
    db = open_db(data)
    with db.session() as s:
        assert store.get_active_adapter(session=s) == "base"
    db.close()
