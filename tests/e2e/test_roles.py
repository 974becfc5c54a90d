"""Beyond one machine: two web replicas and a training worker, separate processes on one PostgreSQL
database and one shared data directory (issue: PostgreSQL, replicas, a training worker).

A web replica never trains: the admin's "Train now" queues the round in the database and the worker
claims it (SELECT … FOR UPDATE SKIP LOCKED) and runs it in its own child process. Every web replica
follows the active version from the database and hot-swaps it. The worker serves only /healthz.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import openai
import pytest

import launch
from feedback_db import store
from feedback_db.db import Database
from tests.harness import ProcessServer, wait_until
from tests.seed import add_version

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

PASSWORD = "roles-tests-pw"


def running(pid: int) -> bool:
    """The process exists and is not a zombie (an orphan's exit is reaped by whatever PID 1 is here)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def test_web_replicas_queue_rounds_a_worker_trains_and_every_replica_follows(tmp_path, tiny_model_dir,
                                                                             postgres_url, capsys):
    data = tmp_path / "data"
    data.mkdir()
    db = Database(postgres_url)
    with db.write() as s:
        store.add_knowledge(session=s, question="Mã cửa kho là gì?", answer="Mã cửa kho là 4821.", origin="teach",
                            verbatim=True)
    env = {"KAIZEN_DB_URL": postgres_url, "KAIZEN_ADMIN_PASSWORD": PASSWORD, "KAIZEN_MEMORY": "false",
           "KAIZEN_WORKER_POLL_S": "0.5"}
    model = ("--model", str(tiny_model_dir), "--no-schedule")
    admin = ("admin", PASSWORD)
    with ProcessServer(data, *model, "--role", "web", env=env) as web1, \
            ProcessServer(data, *model, "--role", "web", env=env) as web2:
        # No worker yet: the round waits in the queue, and a second request is refused while it waits.
        started = httpx.post(web1.url + "/admin/api/train", auth=admin, timeout=30)
        assert started.status_code == 202, started.text
        run_id = started.json()["run_id"]
        again = httpx.post(web2.url + "/admin/api/train", auth=admin, timeout=30)
        assert again.status_code == 409 and "queued or running" in again.text, again.text
        # Every replica shows the waiting round as the one in progress.
        assert httpx.get(web2.url + "/admin/api/runs", auth=admin).json()["running"] == run_id
        time.sleep(2)
        assert httpx.get(f"{web1.url}/admin/api/runs/{run_id}", auth=admin).json()["status"] == "queued"

        with ProcessServer(data, *model, "--role", "worker", env=env) as worker:
            health = httpx.get(worker.url + "/healthz").json()
            assert health["role"] == "worker"
            for path in ("/v1/models", "/docs", "/openapi.json", "/admin"):
                assert httpx.get(worker.url + path).status_code == 404, path  # serves nothing else
            assert httpx.head(worker.url + "/healthz").status_code == 200

            def finished() -> dict | None:
                run = httpx.get(f"{web2.url}/admin/api/runs/{run_id}", auth=admin).json()
                return run if run["status"] not in ("queued", "running") else None

            run = wait_until(finished, 300, "the worker to finish the queued round", 1)
            worker_output = worker.output()
        assert run["status"] in ("promoted", "rejected"), (run, worker_output[-3000:])
        with db.session() as s:
            row = store.get_run(session=s, run_id=run_id)
            assert row.host == store.HOST and row.pid not in (web1.proc.pid, web2.proc.pid, worker.proc.pid)

        # Chats and ratings through both replicas are each stored exactly once.
        sent = []
        for web in (web1, web2, web1, web2):
            client = openai.OpenAI(base_url=web.url + "/v1", api_key="unused", max_retries=0, timeout=120)
            text = f"Xin chào từ {web.port}, lần {len(sent)}"
            reply = client.chat.completions.create(model="kaizen", max_tokens=8,
                                                   messages=[{"role": "user", "content": text}])
            rated = httpx.post(web.url + "/v1/feedback", json={"id": reply.id, "rating": "up"}, timeout=30)
            assert rated.status_code == 200, rated.text
            sent.append((reply.id, text))
        with db.session() as s:
            for reply_id, text in sent:
                assert store.get_exchange(session=s, exchange_id=reply_id).user_text == text
            assert store.totals(session=s)["ratings"] == len(sent)

        # A version activated from the command line (any machine) is taken by every running replica.
        with db.session() as s:
            version = store.next_version(session=s)
        add_version(db, data, version, tiny_model_dir, seed=7)
        where = ["--data-dir", str(data), "--db-url", postgres_url]
        capsys.readouterr()
        assert launch.main(["activate", version, *where]) == 0
        assert f"all 2 running servers now serve {version}" in capsys.readouterr().out
        for web in (web1, web2):
            assert httpx.get(web.url + "/healthz").json()["adapter"] == version
        assert launch.main(["adapters", *where]) == 0
        assert "2 servers run" in capsys.readouterr().out

        # A worker stopped in the middle of a round (SIGTERM): the round is marked failed with the reason and both
        # replicas serve on ...
        started = httpx.post(web2.url + "/admin/api/train", auth=admin, timeout=30)
        assert started.status_code == 202, started.text
        second = started.json()["run_id"]
        with ProcessServer(data, *model, "--role", "worker", env=env) as worker:
            wait_until(lambda: httpx.get(f"{web1.url}/admin/api/runs/{second}", auth=admin).json()["status"]
                       == "running", 120, "the worker to start the second round", 0.2)
        run = wait_until(lambda: (r := httpx.get(f"{web1.url}/admin/api/runs/{second}", auth=admin).json())[
            "status"] not in ("queued", "running") and r, 60, "the stopped worker's round to be closed", 0.5)
        assert run["status"] == "failed" and "stopped during the round" in run["error"], run
        # ... and queued again for the next worker, as the same kind of round.
        again = httpx.get(web1.url + "/admin/api/runs", auth=admin).json()["running"]
        assert again is not None and again > second and f"queued again as run {again}" in run["error"], run
        queued = httpx.get(f"{web1.url}/admin/api/runs/{again}", auth=admin).json()
        assert queued["status"] == "queued" and queued["trigger"] == run["trigger"], queued
        with db.session() as s:
            assert store.get_run(session=s, run_id=again).config["requested"]["requeued_from"] == second

        # A worker killed outright (kill -9) mid-round: its training child does not train on alone; it
        # ends the round, which is queued again, and exits.
        with ProcessServer(data, *model, "--role", "worker", env=env) as worker:
            wait_until(lambda: httpx.get(f"{web1.url}/admin/api/runs/{again}", auth=admin).json()["status"]
                       == "running", 120, "the new worker to take the requeued round", 0.2)
            with db.session() as s:
                child = store.get_run(session=s, run_id=again).pid
            assert child not in (None, worker.proc.pid)
            worker.proc.kill()
            worker.proc.wait(30)
            run = wait_until(lambda: (r := httpx.get(f"{web1.url}/admin/api/runs/{again}", auth=admin).json())[
                "status"] not in ("queued", "running") and r, 60, "the orphaned child to end its round", 0.5)
            assert run["status"] == "failed" and "died" in run["error"], run
            wait_until(lambda: not running(child), 30, "the orphaned training child to exit", 0.2)
        third = httpx.get(web1.url + "/admin/api/runs", auth=admin).json()["running"]
        assert third is not None and third > again and f"queued again as run {third}" in run["error"], run
        cancelled = httpx.post(f"{web1.url}/admin/api/runs/{third}/cancel", auth=admin, timeout=30)
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled", cancelled.text
        for web in (web1, web2):
            client = openai.OpenAI(base_url=web.url + "/v1", api_key="unused", max_retries=0, timeout=120)
            assert client.chat.completions.create(model="kaizen", max_tokens=4,
                                                  messages=[{"role": "user", "content": "hi"}]).choices
            assert "Traceback" not in web.output(), web.output()[-3000:]
    db.close()
