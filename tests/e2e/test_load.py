"""Load on the real server: 16 concurrent streaming conversations through the `openai` client,
ratings posted as answers arrive, and one training round started by the admin in the middle.

The queue is kept small (KAIZEN_MAX_QUEUE=4) so back-pressure happens: a refused request must be a
clear 429/503 with Retry-After, never a hang, a "database is locked" or another 5xx. Every reply
that streamed to the end is stored exactly once, and every rating the server acknowledged exactly
once. The p50/p95 latencies of the successful requests are printed (run with `-s` to see them).
"""

from __future__ import annotations

import statistics
import threading
import time

import httpx
import openai
import pytest
import sqlalchemy

from tests.harness import ProcessServer

pytestmark = [pytest.mark.slow, pytest.mark.both_databases]

PASSWORD = "load-tests-pw"
CLIENTS = 16
SECONDS = 20


def _conversation(url: str, worker: int, until: float, log: dict, lock: threading.Lock) -> None:
    client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=120)
    rater = httpx.Client(base_url=url, timeout=60)
    history: list[dict] = []
    turn = 0
    while time.monotonic() < until:
        turn += 1
        text = f"Client {worker}, turn {turn}: xin chào, how are you? 😊"
        started = time.perf_counter()
        try:
            stream = client.chat.completions.create(
                model="kaizen", stream=True, max_tokens=12, temperature=1.0,
                messages=[*history[-4:], {"role": "user", "content": text}])
            pieces, reply_id = [], None
            for chunk in stream:
                reply_id = chunk.id
                pieces.append((chunk.choices[0].delta.content or "") if chunk.choices else "")
        except openai.APIStatusError as exc:
            with lock:
                log["refused" if exc.status_code in (429, 503) else "failed"].append(
                    (exc.status_code, exc.response.headers.get("retry-after"), str(exc)[:200]))
            time.sleep(0.5)  # a polite client backs off (the server suggests Retry-After: 2)
            continue
        except openai.APIError as exc:  # connection errors, timeouts, errors inside the stream
            with lock:
                log["failed"].append((None, None, repr(exc)[:200]))
            continue
        reply = "".join(pieces)
        with lock:
            log["latency"].append(time.perf_counter() - started)
            log["replies"].append((reply_id, text))
        history += [{"role": "user", "content": text}, {"role": "assistant", "content": reply or "…"}]
        rating = "up" if turn % 2 else "down"
        r = rater.post("/v1/feedback", json={"id": reply_id, "rating": rating})
        with lock:
            log["rated" if r.status_code == 200 else "failed"].append((reply_id, r.status_code, r.text[:200]))
    rater.close()


def test_sixteen_streaming_clients_with_ratings_and_a_training_round(tmp_path, tiny_model_dir, settings_db_url):
    data = tmp_path / "data"
    url = settings_db_url or f"sqlite:///{data / 'kaizen.db'}"
    env = {"KAIZEN_MEMORY": "false", "KAIZEN_ADMIN_PASSWORD": PASSWORD, "KAIZEN_MAX_QUEUE": "4", "KAIZEN_DB_URL": url}
    log: dict[str, list] = {"latency": [], "replies": [], "rated": [], "refused": [], "failed": []}
    lock = threading.Lock()
    with ProcessServer(data, "--model", str(tiny_model_dir), "--no-schedule", env=env) as server:
        until = time.monotonic() + SECONDS
        workers = [threading.Thread(target=_conversation, args=(server.url, w, until, log, lock))
                   for w in range(CLIENTS)]
        for w in workers:
            w.start()
        time.sleep(3)  # some ratings exist by now, so the round has something to learn
        train = httpx.post(server.url + "/admin/api/train", auth=("admin", PASSWORD), timeout=60)
        assert train.status_code == 202, train.text
        for w in workers:
            w.join(SECONDS + 180)
            assert not w.is_alive(), "a client hung"
        run_id = train.json()["run_id"]
        deadline = time.time() + 240
        while (run := httpx.get(f"{server.url}/admin/api/runs/{run_id}", auth=("admin", PASSWORD)).json())[
                "status"] in ("queued", "running") and time.time() < deadline:
            time.sleep(1)
        output = server.output()

    assert not log["failed"], (log["failed"][:5], output[-3000:])
    assert "database is locked" not in output and "Traceback" not in output, output[-3000:]
    assert run["status"] in ("promoted", "rejected"), (run["status"], run.get("error"))  # ran to its verdict under load
    assert log["refused"], "the small queue never pushed back"
    assert all(status in (429, 503) and retry for status, retry, _ in log["refused"])
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as con:
            exchanges = dict(con.exec_driver_sql("SELECT id, user_text FROM exchanges").all())
            per_exchange = dict(con.exec_driver_sql(
                "SELECT exchange_id, count(*) FROM feedback GROUP BY exchange_id").all())
            assert con.exec_driver_sql("SELECT count(*) FROM feedback").scalar() == len(log["rated"])
    finally:
        engine.dispose()
    ids = [reply_id for reply_id, _ in log["replies"]]
    assert len(ids) == len(set(ids)) == len(exchanges)  # every streamed reply stored, exactly once
    assert all(exchanges[reply_id] == text for reply_id, text in log["replies"])
    assert sorted(per_exchange) == sorted(reply_id for reply_id, _, _ in log["rated"])
    assert set(per_exchange.values()) == {1}
    latencies = sorted(log["latency"])
    p50 = statistics.median(latencies)
    p95 = latencies[max(0, round(0.95 * len(latencies)) - 1)]
    print(f"\nload ({url.split(':')[0]}): {len(latencies)} replies, {len(log['refused'])} refused (503), "
          f"{len(log['rated'])} ratings "
          f"in {SECONDS} s with {CLIENTS} clients; latency p50 {p50:.2f} s, p95 {p95:.2f} s; round: {run['status']}")
