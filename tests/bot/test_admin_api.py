"""The admin REST API (bot/admin_api.py over bot/admin_service.py) in-process through Starlette's
TestClient, with the fake engine and the real training supervisor running a fake round."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from bot.admin_api import build_admin_router, install_admin_errors
from bot.admin_service import AdminService
from bot.api import install_error_handlers
from bot.auth import AdminAuth
from feedback_db import store
from kaizen.errors import AdapterError
from kaizen.metrics import RoundMetrics
from kaizen.settings import Settings
from scheduler import TrainingSupervisor
from tests.harness import wait_until
from tests.seed import METRICS, publish_fake_version, snapshot

pytestmark = pytest.mark.both_databases

if TYPE_CHECKING:
    from bot.services import Kaizen

PASSWORD = "mật-khẩu-quản-trị"  # non-ASCII on purpose: HTTP Basic is decoded as UTF-8
RIGHT = ("admin", PASSWORD)
WRONG = [None, ("admin", "wrong"), ("root", PASSWORD), ("admin", "")]


def fake_round(settings: Settings, run_id: int, trigger: str, force: bool) -> None:
    """Stands in for a training round in the supervisor's child process: it reports progress
    and waits for the test to create `release` in the data directory."""
    import time

    from feedback_db.db import Database

    db = Database(settings.database_url, run_migrations=False)
    with db.write() as s:
        store.update_run(session=s, run_id=run_id, status="running", phase="train", step=3, total_steps=10,
                         loss=1.25, lr=1e-3, eta_s=7.0, loss_curve=[2.0, 1.5, 1.25])
    release = settings.data_dir / "release"
    deadline = time.monotonic() + 60
    while not release.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    with db.write() as s:
        store.update_run(session=s, run_id=run_id, status="rejected", phase="done", error="gate said no",
                         finished_at=store.utcnow())
    db.close()


@pytest.fixture
def settings(tmp_path, settings_db_url) -> Settings:
    return Settings(data_dir=tmp_path / "data", memory=False, schedule=False, admin_password=PASSWORD,
                    db_url=settings_db_url)


@pytest.fixture
def api(kaizen: Kaizen) -> Iterator[TestClient]:
    """The admin routes with the app's error handlers (bot/app.py mounts the same; the e2e tests serve it all)."""
    kaizen.training = TrainingSupervisor(db=kaizen.db, settings=kaizen.settings, target=fake_round)
    app = FastAPI()
    install_error_handlers(app)
    install_admin_errors(app)
    app.include_router(build_admin_router(AdminService(kaizen), AdminAuth(db=kaizen.db, settings=kaizen.settings)))
    with TestClient(app, base_url="http://testserver/admin/api") as client:
        yield client


def _exchange(kaizen: Kaizen, question: str = "Giờ mở cửa?", **rating: Any) -> tuple[str, int | None]:
    reply = kaizen.chat.answer(question)
    if rating:
        with kaizen.db.write() as s:
            fb = store.rate_exchange(session=s, exchange_id=reply.exchange_id, **rating)
            return reply.exchange_id, fb.id
    return reply.exchange_id, None


def _run_once(api: TestClient, run_id: int, done: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """GET the run until done(run) (the supervisor's child process needs a moment to start)."""
    def check() -> dict[str, Any] | None:
        run = api.get(f"/runs/{run_id}", auth=RIGHT).json()
        return run if done(run) else None

    return wait_until(check, 60, f"run {run_id} to reach the awaited state")


# Every endpoint, with a body that would change something if it were let through.
ENDPOINTS = [
    ("POST", "/train", {}),
    ("GET", "/runs", {}),
    ("GET", "/runs/1", {}),
    ("GET", "/adapters", {}),
    ("POST", "/adapters/base/activate", {}),
    ("POST", "/adapters/v1/activate", {}),
    ("DELETE", "/adapters/pin", {}),
    ("GET", "/stats", {}),
    ("GET", "/ratings/by-version", {}),
    ("GET", "/settings", {}),
    ("PUT", "/settings", {"json": {"auto_approve": True, "persona": {"agent_name": "Pwned"}}}),
    ("GET", "/feedback", {}),
    ("POST", "/feedback/1/approve", {"json": {"correction": "poison"}}),
    ("POST", "/feedback/1/reject", {}),
    ("GET", "/knowledge", {}),
    ("POST", "/knowledge", {"files": {"file": ("k.txt", b"Q -> A\n")}}),
    ("DELETE", "/knowledge/1", {}),
    ("PATCH", "/knowledge/1", {"json": {"answer": "poison"}}),
    ("POST", "/knowledge/1/disable", {}),
    ("POST", "/knowledge/1/enable", {}),
    ("GET", "/export", {}),
]


def test_wrong_or_missing_credentials_get_401_and_change_nothing(api, kaizen):
    publish_fake_version(kaizen, "v1")
    _exchange(kaizen, rating="down", correction="Mở cửa lúc 8 giờ.")
    with kaizen.db.write() as s:
        store.add_knowledge(session=s, question="Q", answer="A")
    before = snapshot(kaizen)
    for method, path, kw in ENDPOINTS:
        for auth in WRONG:
            r = api.request(method, path, auth=auth, **kw)
            assert r.status_code == 401, (method, path, auth, r.text)
            assert r.headers["www-authenticate"].startswith("Basic")
            assert r.json()["error"]["type"] == "authentication_error"
        r = api.request(method, path, headers={"Authorization": "Basic !!!not-base64"}, **kw)
        assert r.status_code == 401, (method, path)
    assert snapshot(kaizen) == before and kaizen.training.running() is None
    assert not kaizen.settings.exports_dir.exists()


def test_train_starts_a_run_reports_progress_and_a_second_is_refused(api, kaizen):
    r = api.post("/train", auth=RIGHT)
    assert r.status_code == 202
    run_id = r.json()["run_id"]
    r = api.post("/train", auth=RIGHT)
    assert r.status_code == 409 and "still running" in r.json()["error"]["message"]
    run = _run_once(api, run_id, lambda run: run["step"] == 3)
    assert (run["status"], run["step"], run["total_steps"], run["loss"], run["lr"], run["eta_s"], run["phase"]) == \
        ("running", 3, 10, 1.25, 1e-3, 7.0, "train")
    assert run["loss_curve"] == [2.0, 1.5, 1.25] and run["trigger"] == "admin" and run["error"] is None
    listed = api.get("/runs", auth=RIGHT).json()
    assert listed["running"] == run_id and [r["id"] for r in listed["runs"]] == [run_id]
    (kaizen.settings.data_dir / "release").touch()
    assert kaizen.training.wait(60)
    run = _run_once(api, run_id, lambda run: run["status"] != "running")
    assert (run["status"], run["error"]) == ("rejected", "gate said no")
    assert api.get("/runs", auth=RIGHT).json()["running"] is None
    assert api.get("/runs/999", auth=RIGHT).status_code == 404


def test_train_without_a_supervisor_is_a_clear_conflict(api, kaizen):
    kaizen.training = None
    r = api.post("/train", auth=RIGHT)
    assert r.status_code == 409 and "supervisor" in r.json()["error"]["message"]


def test_adapters_listed_with_metrics_and_activated(api, kaizen, fake_engine):
    publish_fake_version(kaizen, "v1")
    publish_fake_version(kaizen, "v2", verdict="rejected")
    view = api.get("/adapters", auth=RIGHT).json()
    assert view["active"] == "base" and [v["version"] for v in view["versions"]] == ["v1", "v2"]
    assert view["versions"][1]["verdict"] == "rejected" and view["versions"][0]["metrics"]["drift"] == 0.02
    r = api.post("/adapters/v1/activate", auth=RIGHT)
    assert r.status_code == 200 and r.json()["active"] == "v1"
    assert fake_engine.adapter_version == "v1"  # swapped at once, not on the follower's next tick
    assert [v["active"] for v in api.get("/adapters", auth=RIGHT).json()["versions"]] == [True, False]
    assert api.post("/adapters/base/activate", auth=RIGHT).json()["active"] == "base"
    assert fake_engine.adapter_version == "base"


def test_activating_by_hand_pins_the_version_until_the_pin_is_released(api, kaizen):
    publish_fake_version(kaizen, "v1")
    assert api.get("/adapters", auth=RIGHT).json()["pinned"] is None
    assert api.post("/adapters/v1/activate", auth=RIGHT).json()["pinned"] == "v1"
    with kaizen.db.session() as s:
        assert store.get_pinned_adapter(session=s) == "v1"  # what a round reads before it activates
    assert api.get("/adapters", auth=RIGHT).json()["pinned"] == "v1"
    assert api.post("/adapters/base/activate", params={"pin": "false"}, auth=RIGHT).json()["pinned"] == "v1"
    released = api.delete("/adapters/pin", auth=RIGHT)
    assert released.status_code == 200 and released.json()["pinned"] is None


@pytest.mark.parametrize(("version", "status"), [
    ("v9", 404), ("v0", 422), ("latest", 422), ("v1;rm", 422), ("%2e%2e%2fetc", 404), ("V1", 422),
])
def test_activate_refuses_unknown_and_bad_names(api, kaizen, version, status):
    r = api.post(f"/adapters/{version}/activate", auth=RIGHT)
    assert r.status_code == status, r.text
    with kaizen.db.session() as s:
        assert store.get_active_adapter(session=s) == "base"


def test_activate_refuses_a_corrupt_version(api, kaizen, fake_engine):
    publish_fake_version(kaizen, "v1")
    (kaizen.settings.adapters_dir / "v1" / "adapter_model.safetensors").write_bytes(b"tampered")
    r = api.post("/adapters/v1/activate", auth=RIGHT)
    assert r.status_code == 422 and "checksum" in r.json()["error"]["message"]
    assert fake_engine.adapter_version == "base"
    with kaizen.db.session() as s:
        assert store.get_active_adapter(session=s) == "base"


def test_activate_reports_an_engine_refusal_and_keeps_the_old_version(api, kaizen, fake_engine, monkeypatch):
    publish_fake_version(kaizen, "v1")

    def refuse(version, path):
        raise AdapterError("does not fit the base model")

    monkeypatch.setattr(fake_engine, "activate", refuse)
    r = api.post("/adapters/v1/activate", auth=RIGHT)
    assert r.status_code == 422 and "does not fit the base model" in r.json()["error"]["message"]
    with kaizen.db.session() as s:
        assert store.get_active_adapter(session=s) == "base"


@pytest.mark.parametrize("edit", ["8 giờ\x00 sáng", "x" * 4001])
def test_an_edited_correction_is_checked_like_a_users(api, kaizen, edit):
    """An admin's edit becomes taught knowledge: it gets the same checks as the chat tab and the API."""
    _, fb_id = _exchange(kaizen, "Giờ mở cửa?", rating="down", correction="8 giờ")
    r = api.post(f"/feedback/{fb_id}/approve", json={"correction": edit}, auth=RIGHT)
    assert r.status_code == 422, r.text
    with kaizen.db.session() as s:
        assert store.list_knowledge(session=s) == []
        assert store.get_feedback(session=s, feedback_id=fb_id).status == "pending"


def test_feedback_review_approve_with_edit_and_reject(api, kaizen):
    _, fb_id = _exchange(kaizen, "Giờ mở cửa?", rating="down", correction="8 giờ")
    _, other = _exchange(kaizen, "Số điện thoại?", rating="down", correction="spam spam")
    _exchange(kaizen, "Chào", rating="up")
    pending = api.get("/feedback", params={"status": "pending"}, auth=RIGHT).json()["feedback"]
    assert sorted(f["id"] for f in pending) == sorted([fb_id, other])
    assert {f["question"] for f in pending} == {"Giờ mở cửa?", "Số điện thoại?"}
    r = api.post(f"/feedback/{fb_id}/approve", json={"correction": "Chúng tôi mở cửa lúc 8 giờ sáng."}, auth=RIGHT)
    assert r.status_code == 200 and r.json()["status"] == "approved"
    r = api.post(f"/feedback/{other}/reject", auth=RIGHT)
    assert r.status_code == 200 and r.json()["status"] == "rejected"
    with kaizen.db.session() as s:
        items = store.list_knowledge(session=s)
    assert [(i.question, i.answer, i.origin, i.enabled) for i in items] == \
        [("Giờ mở cửa?", "Chúng tôi mở cửa lúc 8 giờ sáng.", "correction", True)]
    assert api.get("/feedback", params={"status": "pending"}, auth=RIGHT).json()["feedback"] == []
    assert len(api.get("/feedback", params={"rating": "up"}, auth=RIGHT).json()["feedback"]) == 1
    assert api.post("/feedback/999/approve", auth=RIGHT).status_code == 404
    assert api.post(f"/feedback/{fb_id}/maybe", auth=RIGHT).status_code in (404, 422)
    assert api.get("/feedback", params={"status": "weird"}, auth=RIGHT).status_code == 422
    # A rating without a correction (the user switched 👎 to 👍, or never typed one) has nothing to approve.
    _, up = _exchange(kaizen, "Cảm ơn", rating="up")
    r = api.post(f"/feedback/{up}/approve", auth=RIGHT)
    assert r.status_code == 409 and "no correction" in r.json()["error"]["message"]


def test_upload_valid_file_imports_it(api, kaizen):
    body = "câu hỏi,câu trả lời\nGiờ mở cửa?,8 giờ sáng\nĐịa chỉ?,\"1 Lê Lợi, Huế\"\n".encode()
    r = api.post("/knowledge", files={"file": ("kb.csv", body)}, data={"verbatim": "true"}, auth=RIGHT)
    assert r.status_code == 200, r.text
    assert r.json() == {"imported": 2, "duplicates": 0, "skipped": []}
    items = api.get("/knowledge", auth=RIGHT).json()["items"]
    assert [(i["question"], i["answer"], i["verbatim"]) for i in items] == \
        [("Giờ mở cửa?", "8 giờ sáng", True), ("Địa chỉ?", "1 Lê Lợi, Huế", True)]
    r = api.post("/knowledge", files={"file": ("kb.csv", body)}, auth=RIGHT)
    assert r.json()["duplicates"] == 2


def test_upload_invalid_file_is_422_with_line_numbers_and_imports_nothing(api, kaizen):
    body = b"good -> yes\nno arrow here\nalso good -> fine\n -> empty question\n"
    r = api.post("/knowledge", files={"file": ("kb.txt", body)}, auth=RIGHT)
    assert r.status_code == 422
    err = r.json()["error"]
    assert [e["line"] for e in err["lines"]] == [2, 4]
    assert "line 2" in err["message"] and "line 4" in err["message"]
    assert api.get("/knowledge", auth=RIGHT).json()["items"] == []
    r = api.post("/knowledge", files={"file": ("kb.txt", body)}, data={"skip_invalid": "true"}, auth=RIGHT)
    assert r.status_code == 200 and r.json()["imported"] == 2
    assert [s["line"] for s in r.json()["skipped"]] == [2, 4]


@pytest.mark.parametrize(("name", "body", "reason"), [
    ("kb.pkl", b"\x80\x04K\x01.", "pickle"),
    ("kb.exe", b"MZ", "unsupported"),
    ("kb.txt", "q -> a".encode("utf-16"), "UTF-16"),
    ("kb.jsonl", b'{"question": "q"}\n', "line 1"),
])
def test_upload_refuses_bad_files(api, kaizen, name, body, reason):
    r = api.post("/knowledge", files={"file": (name, body)}, auth=RIGHT)
    assert r.status_code == 422 and reason in r.json()["error"]["message"]
    assert api.get("/knowledge", auth=RIGHT).json()["items"] == []


def test_upload_without_a_file_or_too_big(api):
    assert api.post("/knowledge", data={"x": "1"}, auth=RIGHT).status_code == 422
    big = b"q -> a\n" * 800_000
    r = api.post("/knowledge", files={"file": ("kb.txt", big)}, auth=RIGHT)
    assert r.status_code == 422 and "MB" in r.json()["error"]["message"]


def test_knowledge_disable_enable_delete(api, kaizen):
    with kaizen.db.write() as s:
        item = store.add_knowledge(session=s, question="Q?", answer="A.")
    assert api.post(f"/knowledge/{item.id}/disable", auth=RIGHT).json()["enabled"] is False
    assert api.post(f"/knowledge/{item.id}/enable", auth=RIGHT).json()["enabled"] is True
    assert api.delete(f"/knowledge/{item.id}", auth=RIGHT).json() == {"deleted": item.id}
    assert api.delete(f"/knowledge/{item.id}", auth=RIGHT).status_code == 404
    assert api.post(f"/knowledge/{item.id}/enable", auth=RIGHT).status_code == 404


def test_settings_round_trip(api, kaizen):
    got = api.get("/settings", auth=RIGHT).json()
    assert got["auto_approve"] is False and got["schedule"] == {"enabled": False, "minutes": 30, "min_items": 1}
    assert got["persona"]["agent_name"] == "Kaizen" and got["persona_preview"]["tokens"] > 0
    r = api.put("/settings", auth=RIGHT, json={"auto_approve": True, "schedule": {"minutes": 5, "enabled": True},
                                                "persona": {"agent_name": "Trợ lý BICweb", "company": "BICweb, Huế."}})
    assert r.status_code == 200, r.text
    got = api.get("/settings", auth=RIGHT).json()
    assert got["auto_approve"] is True and kaizen.auto_approve() is True
    assert got["schedule"] == {"enabled": True, "minutes": 5, "min_items": 1}
    assert got["persona"]["agent_name"] == "Trợ lý BICweb" and got["persona"]["creator"] == "the Kaizen team"
    assert "Trợ lý BICweb" in got["persona_preview"]["prompt"]
    # A reply now uses the new persona.
    kaizen.chat.answer("Bạn là ai?")
    assert "Trợ lý BICweb" in kaizen.engine.history[-1]["messages"][0]["content"]


@pytest.mark.parametrize("body", [
    {"persona": {"agent_name": "  "}},
    {"persona": {"style": "x" * 1001}},
    {"schedule": {"minutes": 0}},
    {"persona": {"agent_name": "ok"}, "schedule": {"minutes": -1}},
    {"auto_approve": "maybe"},
    {"unknown": 1},
])
def test_bad_settings_are_422_and_change_nothing(api, kaizen, body):
    before = snapshot(kaizen)
    r = api.put("/settings", auth=RIGHT, json=body)
    assert r.status_code == 422, r.text
    assert snapshot(kaizen) == before


def test_schedule_change_without_a_scheduler_is_refused(api, kaizen):
    kaizen.scheduler = None
    assert api.get("/settings", auth=RIGHT).json()["schedule"] is None
    assert api.put("/settings", auth=RIGHT, json={"schedule": {"minutes": 5}}).status_code == 422


def test_export_downloads_the_jsonl_training_set(api, kaizen):
    with kaizen.db.write() as s:
        store.add_knowledge(session=s, question="Giờ mở cửa?", answer="8 giờ sáng")
    r = api.get("/export", auth=RIGHT)
    assert r.status_code == 200 and "attachment" in r.headers["content-disposition"]
    rows = [json.loads(line) for line in r.text.splitlines()]
    assert rows and all(row["messages"][-1]["content"] == "8 giờ sáng" for row in rows)
    assert len(list(kaizen.settings.exports_dir.glob("kaizen-dataset-*.jsonl"))) == 1


def test_stats(api, kaizen):
    _exchange(kaizen, rating="up")
    stats = api.get("/stats", auth=RIGHT).json()
    assert (stats["exchanges"], stats["thumbs_up"], stats["active_adapter"], stats["running_run"]) == \
        (1, 1, "base", None)


def _served(kaizen: Kaizen, version: str, source: str, applied: bool, *ratings: str) -> None:
    """An exchange `version` served from `source`, rated with each of `ratings` in turn (the last stands)."""
    with kaizen.db.write() as s:
        ex = store.create_exchange(session=s, conversation_id=None, user_text="Q?", bot_text="A.",
                                   emotion_label="neutral", emotion_score=0.0, adapter_version=version,
                                   adapter_applied=applied, source=source)
        for rating in ratings:
            store.rate_exchange(session=s, exchange_id=ex.id, rating=rating)


def test_ratings_by_version_split_by_source_and_adapter_applied(api, kaizen):
    assert api.get("/ratings/by-version", auth=RIGHT).json() == {"versions": []}
    publish_fake_version(kaizen, "v1")
    _served(kaizen, "v1", "model", True, "up")
    _served(kaizen, "v1", "model", True, "up", "down", "up")  # rated again: the latest rating counts
    _served(kaizen, "v1", "model", True, "down")
    _served(kaizen, "v1", "memory", False, "up")
    _served(kaizen, "v1", "memory", False)  # not rated
    _served(kaizen, "base", "model", False, "down")
    body = api.get("/ratings/by-version", auth=RIGHT).json()
    base, v1 = body["versions"]
    assert (base["version"], base["ratings"], base["thumbs_up"], base["up_rate"]) == ("base", 1, 0, 0.0)
    assert (v1["version"], v1["ratings"], v1["thumbs_up"], v1["up_rate"]) == ("v1", 4, 3, 0.75)
    assert v1["groups"] == [
        {"source": "memory", "adapter_applied": False, "ratings": 1, "thumbs_up": 1, "up_rate": 1.0},
        {"source": "model", "adapter_applied": True, "ratings": 3, "thumbs_up": 2, "up_rate": 0.667}]
    for auth in WRONG:  # the route checks the caller on the server, as every admin route does
        r = api.get("/ratings/by-version", auth=auth)
        assert r.status_code == 401 and "versions" not in r.text


def test_adapter_metrics_are_round_metrics_with_every_stored_figure(api, kaizen):
    stored = {**METRICS, "facts": {"7": ["giờ mở cửa", True]}}
    publish_fake_version(kaizen, "v1", metrics=stored)
    metrics = api.get("/adapters", auth=RIGHT).json()["versions"][0]["metrics"]
    assert set(metrics) == {f.name for f in dataclasses.fields(RoundMetrics)}
    assert {key: metrics[key] for key in stored} == stored
    assert metrics["leak"] is None and metrics["new_facts"] == 0  # not measured: the dataclass's defaults


def _is_utc_iso(value: str) -> bool:
    return value.endswith("Z") and dt.datetime.fromisoformat(value[:-1]).tzinfo is None


def test_every_answer_keeps_its_json_fields(api, kaizen):
    """The response models answer with exactly the fields the API always had (fields may be
    added, never renamed or dropped: update this list only by adding)."""
    publish_fake_version(kaizen, "v1")
    _, fb_id = _exchange(kaizen, rating="down", correction="8 giờ")
    with kaizen.db.write() as s:
        item = store.add_knowledge(session=s, question="Q?", answer="A.").id
        run_id = store.create_run(session=s, trigger="admin", round_index=0, status="queued").id
    run_fields = {"id", "status", "trigger", "round_index", "phase", "step", "total_steps", "loss", "lr", "eta_s",
                  "loss_curve", "data_counts", "adapter_version", "error", "started_at", "finished_at"}
    feedback_fields = {"id", "exchange_id", "rating", "status", "correction", "question", "answer", "emotion",
                       "adapter_version", "updated_at"}
    knowledge_fields = {"id", "question", "answer", "category", "origin", "verbatim", "enabled", "hit_count",
                        "feedback_id", "updated_at", "train_attempts", "learned_version", "parked", "status",
                        "source_url"}
    runs = api.get("/runs", auth=RIGHT).json()
    assert set(runs) == {"running", "runs"} and set(runs["runs"][0]) == run_fields
    run = api.get(f"/runs/{run_id}", auth=RIGHT).json()
    assert set(run) == run_fields and _is_utc_iso(run["started_at"]) and run["finished_at"] is None
    adapters = api.get("/adapters", auth=RIGHT).json()
    assert set(adapters) == {"active", "serving", "follower_error", "versions", "pinned", "engine", "engine_serving",
                             "engine_error"}
    assert set(adapters["versions"][0]) == {"version", "verdict", "reason", "metrics", "round_index", "run_id",
                                            "created_at", "active"}
    assert _is_utc_iso(adapters["versions"][0]["created_at"])
    assert set(api.post("/adapters/v1/activate", auth=RIGHT).json()) == {"active", "swap_seconds", "pinned"}
    assert set(api.get("/stats", auth=RIGHT).json()) == {
        "conversations", "exchanges", "ratings", "thumbs_up", "thumbs_down", "pending_review", "knowledge_items",
        "adapters", "active_adapter", "serving", "running_run", "follower_error", "engine", "engine_serving",
        "engine_error"}
    settings = api.get("/settings", auth=RIGHT).json()
    assert set(settings) == {"auto_approve", "schedule", "persona", "persona_preview"}
    assert set(settings["persona"]) == {"agent_name", "creator", "company", "style"}
    assert set(settings["persona_preview"]) == {"prompt", "tokens", "budget", "warning"}
    assert set(settings["schedule"]) == {"enabled", "minutes", "min_items"}
    [feedback] = api.get("/feedback", auth=RIGHT).json()["feedback"]
    assert set(feedback) == feedback_fields and _is_utc_iso(feedback["updated_at"])
    assert set(api.post(f"/feedback/{fb_id}/reject", auth=RIGHT).json()) == feedback_fields
    items = api.get("/knowledge", auth=RIGHT).json()["items"]
    assert {frozenset(i) for i in items} == {frozenset(knowledge_fields)}
    assert set(api.post(f"/knowledge/{item}/disable", auth=RIGHT).json()) == knowledge_fields
    r = api.post("/knowledge", files={"file": ("k.txt", b"a -> b\nbad\n")}, data={"skip_invalid": "on"}, auth=RIGHT)
    assert r.json()["imported"] == 1 and r.json()["duplicates"] == 0
    assert [set(skipped) for skipped in r.json()["skipped"]] == [{"line", "reason"}]
    r = api.post("/knowledge", files={"file": ("k.txt", b"bad\n")}, auth=RIGHT)
    assert set(r.json()["error"]) == {"message", "type", "lines"}
    assert r.json()["error"]["type"] == "invalid_request_error"


def test_a_knowledge_item_can_be_edited_and_served_word_for_word(api, kaizen):
    """Issue 13: imported items could not be edited, nor set to be served word for word."""
    with kaizen.db.write() as s:
        item = store.add_knowledge(session=s, question="Giá thuê xe máy?", answer="150.000 VND.")
        store.record_fact_outcomes(session=s, attempted=[], learned=[item.id], version="v1")
        item_id = item.id
    r = api.patch(f"/knowledge/{item_id}", json={"verbatim": True}, auth=RIGHT)
    assert r.status_code == 200 and r.json()["verbatim"] is True
    assert r.json()["learned_version"] == "v1"  # how it is served is not a new fact
    r = api.patch(f"/knowledge/{item_id}", json={"answer": "  Giá thuê xe máy là 150.000 VND một ngày. "}, auth=RIGHT)
    assert r.json()["answer"] == "Giá thuê xe máy là 150.000 VND một ngày." and r.json()["learned_version"] is None
    assert api.patch(f"/knowledge/{item_id}", json={"answer": " "}, auth=RIGHT).status_code == 422
    assert api.patch(f"/knowledge/{item_id}", json={"answr": "x"}, auth=RIGHT).status_code == 422
    assert api.patch("/knowledge/999", json={"verbatim": True}, auth=RIGHT).status_code == 404


def test_every_error_has_the_type_its_status_says(api, kaizen):
    """One vocabulary for error.type on every route (OpenAI's), whichever layer raised the error."""
    assert api.get("/runs").json()["error"]["type"] == "authentication_error"
    assert api.get("/runs/999", auth=RIGHT).json()["error"]["type"] == "not_found_error"  # KaizenError
    assert api.post("/knowledge/999/enable", auth=RIGHT).json()["error"]["type"] == "not_found_error"  # the store's
    with kaizen.db.write() as s:
        item = store.add_knowledge(session=s, question="Q?", answer="A.", pending=True)
    assert api.post(f"/knowledge/{item.id}/enable", auth=RIGHT).json()["error"]["type"] == "conflict_error"
    r = api.put("/settings", auth=RIGHT, json={"schedule": {"minutes": 0}})
    assert r.status_code == 422 and r.json()["error"]["type"] == "invalid_request_error"


def test_the_next_rounds_learning_rate_and_why(api, kaizen):
    """GET /admin/api/train/next: the decay, adjusted by the last results (issue 17, part 4)."""
    from kaizen.settings import TrainConfig

    kaizen.train_config = cfg = TrainConfig.model_construct(lr0=1e-3, gamma=0.5, min_lr_ratio=0.0)
    assert api.get("/train/next").status_code == 401
    got = api.get("/train/next", auth=RIGHT).json()
    assert got["round_index"] == 0 and got["lr"] == pytest.approx(1e-3) and got["scale"] == 1.0
    with kaizen.db.write() as s:
        store.record_adapter(session=s, version="v1", run_id=None, round_index=0, verdict="rejected",
                             reason="rejected: ...", metrics={"failed_checks": ["retention"]}, path="x")
    got = api.get("/train/next", auth=RIGHT).json()
    assert got["round_index"] == 1 and got["scale"] == 0.5
    assert got["lr"] == pytest.approx(cfg.round_lr(1) * 0.5) and "v1 hurt (retention)" in got["reason"]


def test_a_queued_round_can_be_cancelled_until_a_worker_takes_it(api, kaizen):
    """From the trial of roles: a round queued by a web replica could only wait 30 minutes to expire."""
    with kaizen.db.write() as s:
        run = store.request_run(session=s, trigger="admin")
    r = api.post(f"/runs/{run.id}/cancel", auth=RIGHT)
    assert r.status_code == 200 and r.json()["status"] == "cancelled" and "Cancelled" in r.json()["error"]
    assert api.post(f"/runs/{run.id}/cancel", auth=RIGHT).status_code == 409  # ended already
    assert api.post("/runs/999/cancel", auth=RIGHT).status_code == 404
    assert api.post(f"/runs/{run.id}/cancel").status_code == 401
    with kaizen.db.write() as s:
        assert store.claim_requested_run(session=s, pid=123) is None  # a worker finds nothing to take
        again = store.request_run(session=s, trigger="admin")  # and a new round may be queued
        assert store.claim_requested_run(session=s, pid=123).id == again.id
    r = api.post(f"/runs/{again.id}/cancel", auth=RIGHT)
    assert r.status_code == 409 and "has started" in r.json()["error"]["message"]
