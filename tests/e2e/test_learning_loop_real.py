"""The whole loop on the real model in one running server (slow): correction → review → round over
REST → promotion → hot-swap → the API answers with the correction, with no restart.

Memory is off here so that the answer can only come from the promoted adapter's weights.
"""

import time

import httpx
import openai
import pytest

from tests.harness import ProcessServer

pytestmark = pytest.mark.slow

PASSWORD = "correct horse battery staple"
ANSWER = "Công ty BICweb kính chào quý khách!"


def test_correction_is_learned_and_hot_swapped_without_restart(tmp_path, embedded_model_dir):
    data = tmp_path / "data"
    # This test is about the loop (promotion, hot-swap, no restart). The gate's policy has its own
    # tests (tests/trainer/test_gate.py, and tests/e2e/test_teach_real.py with the default limits,
    # where this same fact measured leak 0.25 = the limit), so the limits here leave some room.
    env = {"KAIZEN_MEMORY": "false", "KAIZEN_ADMIN_PASSWORD": PASSWORD, "KAIZEN_TRAIN_THREADS": "2",
           "KAIZEN_GATE_MAX_LEAK": "0.4"}
    with ProcessServer(data, "--model", str(embedded_model_dir), "--no-schedule", env=env) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0, timeout=120)
        admin = httpx.Client(base_url=server.url + "/admin/api", auth=("admin", PASSWORD), timeout=60)
        pid = server.proc.pid

        first = client.chat.completions.create(model="kaizen", messages=[{"role": "user", "content": "Xin chào"}])
        assert first.choices[0].message.content != ANSWER
        r = httpx.post(server.url + "/v1/feedback", json={"id": first.id, "rating": "down", "correction": ANSWER})
        assert r.status_code == 200 and r.json()["status"] == "pending"
        pending = admin.get("/feedback", params={"status": "pending"}).json()["feedback"]
        [item] = [f for f in pending if f["exchange_id"] == first.id]
        assert admin.post(f"/feedback/{item['id']}/approve", json={}).status_code == 200

        start = admin.post("/train")
        assert start.status_code == 202, start.text
        run_id = start.json()["run_id"]
        deadline = time.time() + 1500
        while time.time() < deadline:
            run = admin.get(f"/runs/{run_id}").json()
            if run["status"] not in ("queued", "running"):
                break
            # chat keeps working while the round trains in its child process
            assert client.chat.completions.create(
                model="kaizen", max_tokens=8, messages=[{"role": "user", "content": "Hi"}]).choices[0].message.content
            time.sleep(5)
        assert run["status"] == "promoted", run
        deadline = time.time() + 30
        while httpx.get(server.url + "/healthz").json()["adapter"] != run["adapter_version"] and time.time() < deadline:
            time.sleep(0.5)
        assert httpx.get(server.url + "/healthz").json()["adapter"] == run["adapter_version"]
        again = client.chat.completions.create(model="kaizen", messages=[{"role": "user", "content": "Xin chào"}])
        assert again.choices[0].message.content == ANSWER
        assert again.model_extra["kaizen"]["source"] == "model"
        assert again.model_extra["kaizen"]["adapter"] == run["adapter_version"]
        assert again.model_extra["kaizen"]["adapter_applied"] is True  # in the taught scope
        other = client.chat.completions.create(model="kaizen", messages=[{"role": "user",
                                                                          "content": "What is the capital of Italy?"}])
        assert other.model_extra["kaizen"]["adapter_applied"] is False  # untaught: the base model answers
        assert server.proc.pid == pid and server.proc.poll() is None  # the same process, never restarted
