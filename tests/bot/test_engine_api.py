"""The engine protocol (`bot.engine_api`): the same behavioural checks against the test fake and
the real engine on the tiny model, so a test that passes on the fake means something for the real one."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.engine import Engine
from bot.engine_api import BASE, ChatEngine, GenParams, ReplyStream
from kaizen.errors import BusyError, InputError
from tests.fakes import FakeEngine
from tests.models import random_adapter

QUEUE = 2
PARAMS = GenParams(max_new_tokens=6)
CHAT = [{"role": "system", "content": "You are Kaizen."}, {"role": "user", "content": "Xin chào, how are you?"}]


@pytest.fixture(scope="module", params=["fake", "real", "vllm-unreachable"])
def engine(request: pytest.FixtureRequest) -> Iterator[ChatEngine]:
    """The fake, the embedded engine, and the vLLM engine with no server to reach (its embedded engine
    answers: the wrapper must keep the protocol too; tests/e2e/test_vllm_engine.py runs it with a server)."""
    if request.param == "fake":
        yield FakeEngine(max_queue=QUEUE)
        return
    model_dir = request.getfixturevalue("tiny_model_dir")
    local = Engine.from_path(str(model_dir), dtype="float32", context_tokens=256, max_queue=QUEUE)
    if request.param == "real":
        yield local
        return
    from bot.vllm_engine import VllmEngine
    from tests.harness import free_port

    pushed = request.getfixturevalue("tmp_path_factory").mktemp("pushed")
    remote = VllmEngine(local, f"http://127.0.0.1:{free_port()}", pushed_dir=pushed, model_dir=model_dir)
    yield remote
    remote.close()


@pytest.fixture(scope="module")
def adapter(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return random_adapter(tmp_path_factory.mktemp("adapter") / "v1", tiny_model_dir, seed=1)


def test_it_implements_the_protocols(engine: ChatEngine) -> None:
    assert isinstance(engine, ChatEngine)
    assert isinstance(engine.name, str) and engine.name
    assert engine.adapter_version == BASE and engine.context_tokens > 0
    reply = engine.stream(CHAT, PARAMS)
    assert isinstance(reply, ReplyStream)
    reply.close()


def test_a_stream_yields_text_then_sets_its_counts(engine: ChatEngine) -> None:
    reply = engine.stream(CHAT, PARAMS)
    assert reply.completion_tokens == 0 and reply.prompt_tokens > 0 and reply.confidence is None
    chunks = list(reply)
    assert chunks and all(isinstance(c, str) and c for c in chunks)
    assert 1 <= reply.completion_tokens <= PARAMS.max_new_tokens
    assert isinstance(reply.confidence, float) and -math.inf < reply.confidence <= 0  # mean log-probability per token
    assert reply.adapter_version == BASE
    assert engine.generate(CHAT, PARAMS) == "".join(chunks)  # greedy (the fake: scripted) is repeatable


def test_count_tokens_counts_more_for_more_text(engine: ChatEngine) -> None:
    assert engine.count_tokens("") == 0
    assert 0 < engine.count_tokens("Xin chào") < engine.count_tokens("Xin chào, tôi tên là An. " * 5)


def test_a_newest_message_too_long_for_the_window_is_an_input_error(engine: ChatEngine) -> None:
    with pytest.raises(InputError, match="too long"):
        engine.stream([{"role": "user", "content": "word " * (2 * engine.context_tokens)}], PARAMS)


def test_the_queue_is_bounded_and_close_gives_the_place_back(engine: ChatEngine) -> None:
    held = [engine.stream(CHAT, PARAMS) for _ in range(QUEUE)]
    with pytest.raises(BusyError):
        engine.stream(CHAT, PARAMS)
    held[0].close()
    held[0].close()  # closing twice gives back one place, not two
    "".join(engine.stream(CHAT, PARAMS))  # read to the end: its place is free again
    extra = engine.stream(CHAT, PARAMS)
    with pytest.raises(BusyError):
        engine.stream(CHAT, PARAMS)
    for reply in (held[1], extra):
        reply.close()


def test_activate_serves_a_version_and_none_returns_to_base(engine: ChatEngine, adapter: Path) -> None:
    seconds = engine.activate("v1", adapter)
    assert seconds >= 0 and engine.adapter_version == "v1"
    reply = engine.stream(CHAT, PARAMS)
    "".join(reply)
    assert reply.adapter_version == "v1"
    engine.activate(BASE, None)
    assert engine.adapter_version == BASE
    reply = engine.stream(CHAT, PARAMS)
    "".join(reply)
    assert reply.adapter_version == BASE
