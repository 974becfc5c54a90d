"""The admin tab and its Gradio routes refuse everyone but the admin, and no Gradio file route
serves the data directory. Runs the whole app (fake engine) on a local port and attacks it with
gradio_client and raw HTTP, as an outsider would.
"""

from __future__ import annotations

import json
import urllib.parse
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
from gradio_client import Client

from feedback_db import store
from kaizen.settings import Settings
from tests.seed import publish_fake_version, snapshot

PASSWORD = "e2e-Secret-mật-khẩu"


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(data_dir=tmp_path / "data", memory=False, schedule=False, admin_password=PASSWORD)


@pytest.fixture
def seeded(kaizen):
    """A database with something every admin function could change."""
    publish_fake_version(kaizen, "v1")
    reply = kaizen.chat.answer("Giờ mở cửa?")
    with kaizen.db.write() as s:
        fb = store.rate_exchange(session=s, exchange_id=reply.exchange_id, rating="down", correction="8 giờ")
        store.add_knowledge(session=s, question="Q", answer="A")
    return {"feedback_id": fb.id}


@contextmanager
def _login(url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=url, timeout=30) as client:
        r = client.post("/admin/login", data={"username": "admin", "password": PASSWORD})
        assert r.status_code == 200, r.text
        yield client


def _functions(url: str) -> tuple[dict, dict]:
    """(elem_id -> component id, the config's dependencies), read as the logged-in admin."""
    with _login(url) as admin:
        config = admin.get("/admin/config").json()
    ids = {c["props"]["elem_id"]: c["id"] for c in config["components"] if c.get("props", {}).get("elem_id")}
    return ids, config["dependencies"]


def _fn_index(ids: dict, deps: list, elem_id: str, event: str = "click") -> int:
    return next(d["id"] for d in deps if [ids[elem_id], event] in [list(t) for t in d["targets"]])


def _call(client: httpx.Client, fn_index: int, data: list) -> tuple[int, dict | str]:
    """One event through Gradio's queue, as the browser sends it: (join status, completion message)."""
    session = uuid.uuid4().hex
    r = client.post("/admin/gradio_api/queue/join", json={"data": data, "fn_index": fn_index, "session_hash": session,
                                                          "event_data": None, "trigger_id": None})
    if r.status_code != 200:
        return r.status_code, r.text
    with client.stream("GET", "/admin/gradio_api/queue/data", params={"session_hash": session}) as stream:
        for line in stream.iter_lines():
            if line.startswith("data:"):
                msg = json.loads(line[5:])
                if msg.get("msg") == "process_completed":
                    return 200, msg
    raise AssertionError("the queue closed without completing the event")


@pytest.mark.slow  # the real gradio_client's threads take 10 s to close: kept out of the quick tier
def test_gradio_client_needs_the_right_credentials(live_app, kaizen):
    url = live_app.url + "/admin/"
    with pytest.raises(Exception, match="(?i)credentials|login|config"):
        Client(url, verbose=False)
    for wrong in [("admin", "wrong"), ("root", PASSWORD), ("admin", "")]:
        with pytest.raises(Exception, match="(?i)login|credentials"):
            Client(url, auth=wrong, verbose=False)
    client = Client(url, auth=("admin", PASSWORD), verbose=False)
    # The handlers are private: not listed, not callable by name from the client ...
    assert client.view_api(print_info=False, return_format="dict")["named_endpoints"] == {}
    # ... but the login session it holds is the admin's, which the browser's calls use.
    with httpx.Client(base_url=live_app.url, cookies=client.cookies, timeout=30) as session:
        assert session.get("/admin/config").status_code == 200


def test_every_admin_function_is_refused_without_credentials(live_app, kaizen, seeded):
    ids, deps = _functions(live_app.url)
    fns = [d["id"] for d in deps if d.get("backend_fn")]
    assert len(fns) >= 20
    before = snapshot(kaizen)
    anonymous = httpx.Client(base_url=live_app.url, timeout=30)
    forged = httpx.Client(base_url=live_app.url, timeout=30,
                          cookies={"access-token-unsecure-x": "forged", "access-token-x": "forged"})
    wrong = httpx.Client(base_url=live_app.url, timeout=30)
    assert wrong.post("/admin/login", data={"username": "admin", "password": "guess"}).status_code == 400
    assert not wrong.cookies
    data = [seeded["feedback_id"], "poisoned answer", "pending", "all"]
    for client in (anonymous, forged, wrong):
        for fn_index in fns:
            status, _ = _call(client, fn_index, data)
            assert status == 401, fn_index
        for method, path in [("GET", "/admin/config"), ("GET", "/admin/gradio_api/info"),
                             ("POST", "/admin/gradio_api/run/predict"), ("POST", "/admin/gradio_api/api/predict"),
                             ("POST", "/admin/gradio_api/call/predict"), ("GET", "/admin/gradio_api/queue/data"),
                             ("POST", "/admin/gradio_api/upload"), ("GET", "/admin/gradio_api/openapi.json")]:
            r = client.request(method, path, json={"data": data, "fn_index": fns[0]})
            assert r.status_code in (401, 403, 404, 405), (method, path, r.status_code)
        client.close()
    assert snapshot(kaizen) == before and kaizen.training.running() is None


def test_the_admin_can_use_them(live_app, kaizen, seeded):
    """The positive control for the test above: the same raw calls work once logged in."""
    ids, deps = _functions(live_app.url)
    with _login(live_app.url) as admin:
        status, msg = _call(admin, _fn_index(ids, deps, "approve"),
                            [seeded["feedback_id"], "Chúng tôi mở cửa lúc 8 giờ.", "pending", "all"])
        assert status == 200 and msg["success"], msg
        status, msg = _call(admin, _fn_index(ids, deps, "export"), [])
        assert status == 200 and msg["success"], msg
        download = msg["output"]["data"][0]
        r = admin.get(download["url"].removeprefix(live_app.url))
        assert r.status_code == 200 and "Chúng tôi mở cửa lúc 8 giờ." in r.text
    with kaizen.db.session() as s:
        assert [k.answer for k in store.list_knowledge(session=s) if k.origin == "correction"] == \
            ["Chúng tôi mở cửa lúc 8 giờ."]
    # The copy Gradio serves the admin is not reachable through the public chat app, nor anonymously.
    copy = urllib.parse.quote(download["path"])
    assert httpx.get(f"{live_app.url}/gradio_api/file={copy}").status_code in (401, 403)
    assert httpx.get(f"{live_app.url}/admin/gradio_api/file={copy}").status_code == 401


def test_gradio_file_routes_never_serve_the_data_directory(live_app, kaizen, seeded):
    data_dir = kaizen.settings.data_dir.resolve()
    (kaizen.settings.exports_dir).mkdir(parents=True, exist_ok=True)
    (kaizen.settings.exports_dir / "secret.jsonl").write_text('{"messages": []}\n')
    targets = [
        data_dir / "kaizen.db", data_dir / "kaizen.db-wal", data_dir / "adapters" / "v1" / "meta.json",
        data_dir / "adapters" / "v1" / "adapter_model.safetensors", data_dir / "exports" / "secret.jsonl",
        "/etc/passwd",
    ]
    routes = ["/gradio_api/file={}", "/admin/gradio_api/file={}", "/gradio_api/file/{}",
              "/admin/gradio_api/file/{}"]
    with _login(live_app.url) as admin, httpx.Client(base_url=live_app.url, timeout=30) as anonymous:
        for target in targets:
            for route in routes:
                for raw in (str(target), urllib.parse.quote(str(target)), str(target).replace("/", "//"),
                            "../" * 10 + str(target).lstrip("/")):
                    for client in (anonymous, admin):
                        r = client.get(route.format(raw))
                        assert r.status_code in (401, 403, 404), (route, raw, r.status_code)
        cwd_relative = ["kaizen.db", "../" * 12 + "etc/passwd", "%2e%2e/" * 12 + "etc/passwd"]
        static = ["/static/{}", "/admin/static/{}", "/assets/{}", "/admin/assets/{}", "/gradio_api/static/{}"]
        for route in routes + static:
            for raw in cwd_relative + [str(data_dir / "kaizen.db")]:
                for client in (anonymous, admin):
                    r = client.get(route.format(raw))
                    assert r.status_code != 200 or b"SQLite format" not in r.content and b"root:" not in r.content, \
                        (route, raw)
