"""Faults, against the real server (`kaizen serve` in a child process, tiny random model):

- the training child is killed with SIGKILL at a random point: the old adapter keeps serving, the
  run is marked failed, the lock is released, and the next round succeeds (also when the kill
  left a published version directory without its database row);
- the server is killed with SIGKILL during writes, in a loop: the database passes
  `PRAGMA integrity_check`, every exchange is whole or absent, and nothing acknowledged is lost;
- corrupt, truncated and mismatched adapter versions are refused with a clear error, and the
  active adapter keeps serving exactly what it served before;
- the disk fills while an adapter is saved (a small tmpfs): nothing is promoted, the run shows
  the error, and the server keeps serving;
- restarts do not repeat the scheduled job, and a missed check fires once.

Run with `pytest tests/e2e/test_faults.py` (slow: each test starts real servers). Set
KZ_FAULT_SEED to replay a random kill point.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from feedback_db import store
from feedback_db.db import Database
from feedback_db.store import TRAINING_LOCK as LOCK
from kaizen import adapters
from scheduler import LAST_CHECK_KEY
from tests.harness import ProcessServer, wait_until
from tests.seed import add_version, open_db

pytestmark = pytest.mark.slow

PASSWORD = "fault-tests-pw"
AUTH = ("admin", PASSWORD)
QUESTION = "Hello there, how are you?"
SEED = int(os.environ.get("KZ_FAULT_SEED", time.time_ns() % 100_000))


def serve(data: Path, model_dir: Path, *args: str, env: dict | None = None) -> ProcessServer:
    return ProcessServer(data, "--model", str(model_dir), *args,
                         env={"KAIZEN_MEMORY": "false", "KAIZEN_ADMIN_PASSWORD": PASSWORD,
                              "KAIZEN_MAX_NEW_TOKENS": "12", **(env or {})})


def ask(url: str, text: str = QUESTION) -> tuple[str, str]:
    """(reply text, adapter that produced it), greedy."""
    r = httpx.post(url + "/v1/chat/completions", timeout=120,
                   json={"messages": [{"role": "user", "content": text}], "temperature": 0})
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]["message"]["content"], r.json()["kaizen"]["adapter"]


def reseal(path: Path) -> None:
    """Re-checksum a version's files, as if the damage had been there when it was published."""
    meta = json.loads((path / adapters.META).read_text())
    meta["files"] = {p.name: adapters._sha256(p) for p in sorted(path.iterdir())
                     if p.is_file() and p.name != adapters.META}
    (path / adapters.META).write_text(json.dumps(meta))


def run_row(db: Database, run_id: int):
    with db.session() as s:
        return store.get_run(session=s, run_id=run_id)


def start_round(url: str) -> int:
    r = httpx.post(url + "/admin/api/train", auth=AUTH, timeout=30)
    assert r.status_code == 202, r.text
    return r.json()["run_id"]


def finished(url: str, run_id: int, timeout: float = 240) -> dict:
    """The run once it has ended and its process is gone."""
    def done() -> dict | None:
        run = httpx.get(f"{url}/admin/api/runs/{run_id}", auth=AUTH, timeout=30).json()
        running = httpx.get(f"{url}/admin/api/runs", auth=AUTH, timeout=30).json()["running"]
        return run if run["status"] not in ("queued", "running") and running is None else None

    return wait_until(done, timeout, f"run {run_id} to end and its process to exit", 0.5)


# --- bad adapter versions ---------------------------------------------------------------------


def _flip_middle(path: Path) -> None:
    f = path / "adapter_model.safetensors"
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0xFF
    f.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    f = path / "adapter_model.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def _config(path: Path, **changes) -> None:
    cfg = json.loads((path / "adapter_config.json").read_text())
    (path / "adapter_config.json").write_text(json.dumps({**cfg, **changes}))


def _other_base_model():
    from transformers import LlamaConfig, LlamaForCausalLM

    return LlamaForCausalLM(LlamaConfig(vocab_size=1000, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2))


# (name, how the version is damaged after publishing, re-checksummed?, words the refusal must contain)
BAD_VERSIONS = [
    ("corrupt", _flip_middle, False, "checksum"),
    ("truncated", _truncate, False, "checksum"),
    ("truncated, checksums redone", _truncate, True, "does not fit"),
    ("another rank in the config", lambda p: _config(p, r=4), True, "does not fit"),
    ("other target modules in the config", lambda p: _config(p, target_modules=["q_proj", "v_proj"]), True,
     "does not fit"),
    ("no adapter_config.json", lambda p: (p / "adapter_config.json").unlink(), True, "adapter_config"),
    ("garbage adapter_config.json", lambda p: (p / "adapter_config.json").write_text("{not json"), True,
     "does not fit"),
]


def test_bad_adapter_versions_are_refused_and_the_active_one_keeps_serving(tmp_path, tiny_model_dir):
    data = tmp_path / "data"
    db = open_db(data)
    add_version(db, data, "v1", tiny_model_dir, seed=1, active=True)
    bad = {}
    for i, (name, damage, resealed, _words) in enumerate(BAD_VERSIONS, start=2):
        path = add_version(db, data, f"v{i}", tiny_model_dir, seed=i)
        damage(path)
        if resealed:
            reseal(path)
        bad[f"v{i}"] = name
    # Made for another base model (other hidden size): a valid adapter that cannot fit this one.
    n = len(BAD_VERSIONS) + 2
    add_version(db, data, f"v{n}", tiny_model_dir, seed=n, model=_other_base_model())
    bad[f"v{n}"] = "made for another base model"
    expected_words = {f"v{i}": w for i, (*_, w) in enumerate(BAD_VERSIONS, start=2)} | {f"v{n}": "does not fit"}

    with serve(data, tiny_model_dir, "--no-schedule") as server:
        assert httpx.get(server.url + "/healthz").json()["adapter"] == "v1"
        before, adapter = ask(server.url)
        assert adapter == "v1" and before.strip()
        for version, name in bad.items():
            r = httpx.post(f"{server.url}/admin/api/adapters/{version}/activate", auth=AUTH, timeout=60)
            assert r.status_code == 422, (name, r.status_code, r.text)
            message = r.json()["error"]["message"]
            assert version in message and expected_words[version] in message, (name, message)
            assert httpx.get(server.url + "/healthz").json()["adapter"] == "v1", name
            assert httpx.get(server.url + "/admin/api/adapters", auth=AUTH).json()["active"] == "v1", name
            assert ask(server.url) == (before, "v1"), name  # exactly what it served before
        # Another process (`kaizen activate`, which checks only checksums) points at a misfit version:
        # the server refuses to follow, keeps serving v1 and shows why in the admin view.
        misfit = next(v for v, w in expected_words.items() if w == "does not fit")
        with db.write() as s:
            store.set_active_adapter(session=s, version=misfit)
        view = wait_until(lambda: (v := httpx.get(server.url + "/admin/api/adapters", auth=AUTH).json())
                          and f"activate {misfit}:" in (v["follower_error"] or "") and v, 180,
                          f"the server to refuse to follow {misfit}", 0.2)
        assert view["serving"] == "v1" and "does not fit" in view["follower_error"]
        assert ask(server.url) == (before, "v1")
    db.close()


# --- training child killed, disk full ---------------------------------------------------------


@pytest.fixture(scope="module")
def training_server(tmp_path_factory, tiny_model_dir):
    """A server whose adapters/ lives on a 4 MB tmpfs, with v1 active and one fact to learn."""
    root = tmp_path_factory.mktemp("training")
    data, mount = root / "data", root / "adapters-fs"
    mount.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({mounted.stderr.strip()}); the disk-full case needs one")
    try:
        data.mkdir()
        (data / "adapters").symlink_to(mount)
        db = open_db(data)
        add_version(db, data, "v1", tiny_model_dir, seed=1, active=True)
        with db.write() as s:
            store.add_knowledge(session=s, question="What is CHOREI?", answer="A morning meeting.", origin="teach")
        with serve(data, tiny_model_dir, "--no-schedule") as server:
            yield server, db, data, mount
        db.close()
    finally:
        subprocess.run(["umount", str(mount)], check=False)
        if mount.is_mount():
            subprocess.run(["umount", "-l", str(mount)], check=False)


def _versions(db: Database) -> list[str]:
    with db.session() as s:
        return [a.version for a in store.list_adapters(session=s)]


PHASES = ["queued", "dataset", "anchors", "train", "evaluate"]


def test_killed_training_child_keeps_serving_and_the_next_round_succeeds(training_server):
    server, db, data, _mount = training_server
    before, adapter = ask(server.url)
    assert adapter == "v1"
    versions = _versions(db)
    rng = random.Random(SEED)
    target = rng.choice(PHASES)
    run_id = start_round(server.url)
    where = f"(seed {SEED}, killed in phase {target})"

    def reached() -> bool:
        run = run_row(db, run_id)
        assert run.status in ("queued", "running"), f"the round ended before the kill {where}"
        phase = run.phase if run.status == "running" and run.phase in PHASES else "queued"
        return bool(run.pid) and PHASES.index(phase) >= PHASES.index(target)

    wait_until(reached, 180, f"the round to reach phase {target} {where}", 0.02)
    time.sleep(rng.uniform(0, 0.5))
    os.kill(run_row(db, run_id).pid, signal.SIGKILL)
    run = finished(server.url, run_id)
    assert run["status"] == "failed" and "killed" in run["error"], (where, run)
    assert httpx.get(server.url + "/admin/api/runs", auth=AUTH).json()["running"] is None
    with db.session() as s:
        assert store.get_lock(session=s, name=LOCK) is None, where
        assert store.get_active_adapter(session=s) == "v1", where
    assert _versions(db) == versions, where
    assert httpx.get(server.url + "/healthz").json()["adapter"] == "v1"
    assert ask(server.url) == (before, "v1"), where

    # The worst moment: killed right after vN was published, before its row was written.
    orphan = f"v{len(versions) + 1}"
    shutil.copytree(data / "adapters" / "v1", data / "adapters" / orphan)
    run_id = start_round(server.url)
    run = finished(server.url, run_id)
    assert run["status"] in ("promoted", "rejected") and run["adapter_version"], (where, run)
    assert run["adapter_version"] not in versions + [orphan]
    assert not list((data / "adapters").glob(".tmp-*"))  # the killed round's scratch directory is gone
    adapters.verify(data / "adapters" / run["adapter_version"])


def test_a_full_disk_while_saving_promotes_nothing_and_shows_the_error(training_server):
    server, db, data, mount = training_server
    active = httpx.get(server.url + "/healthz").json()["adapter"]
    before = ask(server.url)
    filler = mount / "filler"
    with filler.open("wb", buffering=0) as f:  # fill the filesystem to the last byte
        try:
            while True:
                f.write(b"\0" * 65536)
        except OSError:
            pass
    versions, dirs = _versions(db), sorted(p.name for p in (data / "adapters").iterdir())
    try:
        run_id = start_round(server.url)
        run = finished(server.url, run_id)
        assert run["status"] == "failed" and ("No space left" in run["error"] or "Errno 28" in run["error"]), run
        assert run["adapter_version"] is None
        listed = httpx.get(server.url + "/admin/api/runs", auth=AUTH).json()["runs"]
        assert listed[0]["id"] == run_id and listed[0]["error"] == run["error"]  # what the admin tab shows
        assert _versions(db) == versions
        assert sorted(p.name for p in (data / "adapters").iterdir()) == dirs  # no version, no scratch left
        assert httpx.get(server.url + "/healthz").json()["adapter"] == active
        assert ask(server.url) == before
    finally:
        filler.unlink()


# --- server killed during writes --------------------------------------------------------------


def _writer(url: str, stop: threading.Event, acked: list, worker: int) -> None:
    """Chat and rate until the server dies; record what the server acknowledged."""
    with httpx.Client(base_url=url, timeout=60) as client:
        i = 0
        while not stop.is_set():
            i += 1
            text = f"worker {worker} message {i} ✓"
            try:
                if i % 2:
                    r = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": text}]})
                    if r.status_code == 200:
                        acked.append(("exchange", r.json()["id"], text))
                        exchange_id = r.json()["id"]
                    else:
                        continue
                else:
                    body = {"stream": True, "messages": [{"role": "user", "content": text}]}
                    with client.stream("POST", "/v1/chat/completions", json=body) as r:
                        lines = [line for line in r.iter_lines() if line.startswith("data:")]
                    if r.status_code != 200 or lines[-1] != "data: [DONE]":
                        continue
                    exchange_id = json.loads(lines[0][5:])["id"]
                    acked.append(("exchange", exchange_id, text))
                rating = "down" if i % 3 == 0 else "up"
                body = {"id": exchange_id, "rating": rating, **({"correction": f"fix {i}"} if rating == "down" else {})}
                if client.post("/v1/feedback", json=body).status_code == 200:
                    acked.append(("feedback", exchange_id, rating))
            except (httpx.HTTPError, IndexError, ValueError):
                if stop.is_set():
                    return
                time.sleep(0.05)


def _check_database(path: Path, acked: list) -> int:
    con = sqlite3.connect(path)
    try:
        assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert con.execute("PRAGMA foreign_key_check").fetchall() == []
        rows = {i: (u, b) for i, u, b in con.execute("SELECT id, user_text, bot_text FROM exchanges")}
        assert all(u and b for u, b in rows.values())  # whole, never half-written
        ratings = dict(con.execute("SELECT exchange_id, rating FROM feedback"))
    finally:
        con.close()
    for kind, exchange_id, value in acked:
        if kind == "exchange":
            assert rows[exchange_id][0] == value  # acknowledged means stored
        else:
            assert exchange_id in ratings  # (a later rating of the same exchange may have replaced it)
    return len(rows)


def test_kill_9_during_writes_leaves_a_consistent_database(tmp_path, tiny_model_dir):
    data = tmp_path / "data"
    rng = random.Random(SEED)
    stored = 0
    for loop in range(3):
        server = serve(data, tiny_model_dir, "--no-schedule").start()
        acked: list = []
        stop = threading.Event()
        workers = [threading.Thread(target=_writer, args=(server.url, stop, acked, w)) for w in range(6)]
        for w in workers:
            w.start()
        try:
            wait_until(lambda acked=acked: len(acked) >= 3, 120, "three acknowledged writes", 0.05)
            time.sleep(rng.uniform(0, 2.0))
        finally:
            server.proc.send_signal(signal.SIGKILL)
            server.proc.wait()
            stop.set()
            for w in workers:
                w.join(60)
        now = _check_database(data / "kaizen.db", list(acked))
        assert now > stored, f"loop {loop} (seed {SEED}) stored nothing"
        stored = now


# --- restarts and the schedule ----------------------------------------------------------------


def _scheduled(db: Database) -> list[int]:
    with db.session() as s:
        return [r.id for r in store.list_runs(session=s) if r.trigger == "schedule"]


def test_restarts_do_not_repeat_the_scheduled_job_and_a_missed_check_fires_once(tmp_path, tiny_model_dir):
    data = tmp_path / "data"
    db = open_db(data)
    with db.write() as s:
        store.add_knowledge(session=s, question="What is CHOREI?", answer="A morning meeting.", origin="teach")
        # The server was down for three hours: six 30-minute checks were missed.
        store.set_setting(session=s, key=LAST_CHECK_KEY, value=(store.utcnow() - dt.timedelta(hours=3)).isoformat())
    with serve(data, tiny_model_dir) as server:
        wait_until(lambda: _scheduled(db), 120, "the missed scheduled check to start a round", 0.2)
        time.sleep(8)  # more than the catch-up delay: a second catch-up would have fired by now
        assert len(_scheduled(db)) == 1, server.output()[-2000:]
    with serve(data, tiny_model_dir):  # restarted: the check just made was not missed, so nothing fires
        time.sleep(8)
    assert len(_scheduled(db)) == 1
    db.close()
