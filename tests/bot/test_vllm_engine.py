"""The vLLM engine when no vLLM server answers, and its swap gate (bot/vllm_engine.py). The tests with a
real vLLM server are in tests/e2e/test_vllm_engine.py."""

import threading
import time

import pytest

from bot.engine import Engine
from bot.engine_api import BASE, ChatEngine, GenParams
from bot.vllm_engine import VllmEngine, _Gate
from kaizen.settings import Settings
from tests.harness import free_port, wait_until
from tests.models import random_adapter

MESSAGES = [{"role": "user", "content": "hello there"}]


@pytest.fixture
def local(tiny_model_dir) -> Engine:
    return Engine.from_path(str(tiny_model_dir), dtype="float32")


def test_with_no_server_the_embedded_engine_answers_and_status_says_why(tmp_path, tiny_model_dir, local, caplog):
    reference = Engine.from_path(str(tiny_model_dir), dtype="float32")
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    engine = VllmEngine(local, url, pushed_dir=tmp_path / "pushed", model_dir=tiny_model_dir, check_s=0.2)
    try:
        # The operator reads it in the log at once, not only in /healthz.
        assert any(url in r.getMessage() and "embedded engine" in r.getMessage() for r in caplog.records
                   if r.levelname == "WARNING")
        assert isinstance(engine, ChatEngine)
        status = engine.status()
        assert (status.kind, status.serving, status.url) == ("vllm", "embedded", url)
        assert status.problem is not None and url in status.problem and "does not answer" in status.problem
        params = GenParams(max_new_tokens=12)
        reply = engine.stream(MESSAGES, params)
        assert "".join(reply) == reference.generate(MESSAGES, params)
        assert reply.adapter_version == BASE and not reply.adapter_applied
        # A version activated while the server is down is served by the embedded engine at once.
        adapter = random_adapter(tmp_path / "v1", tiny_model_dir, 1)
        engine.activate("v1", adapter)
        reference.activate("v1", adapter)
        reply = engine.stream(MESSAGES, params)
        assert "".join(reply) == reference.generate(MESSAGES, params)
        assert (reply.adapter_version, reply.adapter_applied) == ("v1", True)
        assert engine.adapter_version == "v1" and engine.status().serving == "embedded"
        assert not list((tmp_path / "pushed").glob("*"))  # nothing was pushed to a server that is not there
    finally:
        engine.close()


def test_the_gate_lets_a_swap_wait_for_replies_in_progress_and_holds_new_ones_back():
    gate, events = _Gate(), []
    gate.enter()  # a reply in progress

    def swap() -> None:
        with gate.exclusive():
            events.append("swap")

    def late_reply() -> None:
        gate.enter()
        events.append("late reply")
        gate.leave()

    swapper = threading.Thread(target=swap)
    swapper.start()
    wait_until(lambda: gate._swapping, 5, "the swap to start waiting")
    late = threading.Thread(target=late_reply)
    late.start()
    time.sleep(0.2)
    assert events == []  # the swap waits for the reply in progress; the late reply waits for the swap
    events.append("reply ends")
    gate.leave()
    swapper.join(5)
    late.join(5)
    assert events == ["reply ends", "swap", "late reply"]


@pytest.mark.parametrize(("url", "says"), [
    ("", "needs KAIZEN_ENGINE_URL"),
    ("127.0.0.1:8000", "must be an http:// or https:// URL"),
    ("ftp://host:8000", "must be an http:// or https:// URL"),
    ("http://127.0.0.1:8000/v1", "without /v1: http://127.0.0.1:8000"),
    ("http://127.0.0.1:8000/v1/", "without /v1: http://127.0.0.1:8000"),
])
def test_engine_vllm_needs_a_base_url(url, says):
    with pytest.raises(ValueError, match=says):
        Settings(engine="vllm", engine_url=url)


def test_engine_vllm_takes_a_base_url():
    settings = Settings(engine="vllm", engine_url="http://127.0.0.1:8000", data_dir="d")
    assert str(settings.pushed_adapters_dir) == "d/engine-adapters"
