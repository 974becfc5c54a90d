"""`POST /v1/chat/completions` with `stream: true` when the engine fails half-way: the client gets
an error event (or, for an unexpected failure, the end of the connection), never a hang, and no
half-written exchange is stored."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from fastapi.testclient import TestClient

from bot.app import build_app
from bot.engine_api import BASE, GenParams, Message
from bot.services import Kaizen
from feedback_db import store
from tests.fakes import FakeEngine
from tests.harness import ThreadServer

BODY = {"model": "kaizen", "stream": True, "messages": [{"role": "user", "content": "Tell me a story."}]}


def _stored(kaizen: Kaizen) -> int:
    with kaizen.db.session() as s:
        return store.totals(session=s)["exchanges"]


def _events(lines: Iterator[str]) -> list[Any]:
    return [json.loads(d) if d != "[DONE]" else d for line in lines if line.startswith("data: ")
            for d in [line.removeprefix("data: ")]]


@pytest.fixture
def client(kaizen: Kaizen) -> Iterator[TestClient]:
    with TestClient(build_app(kaizen)) as c:
        yield c


def test_a_whole_stream_ends_with_stop_and_done(client: TestClient, kaizen: Kaizen, fake_engine: FakeEngine) -> None:
    fake_engine.enqueue("one two three")
    with client.stream("POST", "/v1/chat/completions", json=BODY) as r:
        events = _events(r.iter_lines())
    assert events[-1] == "[DONE]" and events[-2]["choices"][0]["finish_reason"] == "stop"
    assert "".join(e["choices"][0]["delta"].get("content") or "" for e in events[:-1]) == "one two three"
    assert _stored(kaizen) == 1
    # Where the reply came from, as a non-streamed completion says it: on the chunk with the
    # finish_reason, once it is known, and on no other (issue 14).
    assert events[-2]["kaizen"]["source"] == "model" and events[-2]["kaizen"]["adapter"] == BASE
    assert events[-2]["kaizen"]["emotion"] and "kaizen" not in events[0] and "kaizen" not in events[1]


def test_a_model_error_midway_is_an_error_event_and_nothing_is_stored(client: TestClient, kaizen: Kaizen,
                                                                      fake_engine: FakeEngine) -> None:
    fake_engine.enqueue("one two three")
    fake_engine.fail_midway = True
    with client.stream("POST", "/v1/chat/completions", json=BODY) as r:
        assert r.status_code == 200  # the headers went out before the failure
        events = _events(r.iter_lines())
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert events[1]["choices"][0]["delta"]["content"] == "one "  # what streamed before the failure
    assert events[-1] == {"error": {"message": "Generation failed: the model crashed", "type": "server_error"}}
    assert "[DONE]" not in events and not any(e["choices"][0].get("finish_reason") for e in events[:-1])
    assert _stored(kaizen) == 0
    fake_engine.fail_midway = False
    assert client.post("/v1/chat/completions", json={**BODY, "stream": False}).status_code == 200  # still serving
    assert _stored(kaizen) == 1 and fake_engine.in_queue == 0


def test_the_openai_client_raises_on_the_error_event(client: TestClient, kaizen: Kaizen,
                                                     fake_engine: FakeEngine) -> None:
    fake_engine.fail_midway = True
    oai = openai.OpenAI(base_url=str(client.base_url) + "/v1", api_key="unused", http_client=client, max_retries=0)
    stream = oai.chat.completions.create(model="kaizen", stream=True,
                                         messages=[{"role": "user", "content": "Tell me a story."}])
    with pytest.raises(openai.APIError, match="the model crashed"):
        for _ in stream:
            pass
    assert _stored(kaizen) == 0


class _Crashing:
    """A reply stream that breaks with an unexpected exception (a bug, not a ModelError) after one chunk."""

    adapter_version = BASE
    adapter_applied = False
    prompt_tokens = 3
    completion_tokens = 0

    def __iter__(self) -> Iterator[str]:
        yield "one "
        raise RuntimeError("a bug in the engine")

    def close(self) -> None:
        pass


def test_an_unexpected_failure_midway_ends_the_connection_instead_of_hanging(
        kaizen: Kaizen, fake_engine: FakeEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    def crashing(messages: list[Message], params: GenParams = GenParams(), *, use_adapter: bool = True) -> _Crashing:
        return _Crashing()

    monkeypatch.setattr(fake_engine, "stream", crashing)
    with ThreadServer(build_app(kaizen)) as server, httpx.Client(base_url=server.url, timeout=20) as http:
        received: list[str] = []
        with pytest.raises(httpx.RemoteProtocolError), http.stream("POST", "/v1/chat/completions", json=BODY) as r:
            received.extend(r.iter_lines())
        assert "[DONE]" not in "".join(received)
        assert _stored(kaizen) == 0
        monkeypatch.undo()
        assert http.post("/v1/chat/completions", json={**BODY, "stream": False}).status_code == 200


@pytest.mark.parametrize(("method", "path", "allow"), [
    ("GET", "/v1/chat/completions", "POST"), ("PUT", "/v1/feedback", "POST"), ("DELETE", "/v1/models", "GET"),
    ("POST", "/v1/feedback/abc", "DELETE"), ("GET", "/v1/completions", None), ("POST", "/v1/embeddings", None),
])
def test_an_unknown_api_route_is_an_openai_error_not_the_chat_pages_404(client: TestClient, method: str, path: str,
                                                                        allow: str | None) -> None:
    """The chat UI is mounted at "/" and used to answer these with a bare {"detail": "Not Found"}."""
    r = client.request(method, path, json={})
    error = r.json()["error"]
    start = f"{method} {path} is not allowed" if allow else f"Unknown endpoint: {method} {path}"
    assert error["message"].startswith(start)
    if allow:
        assert (r.status_code, r.headers["allow"], error["type"]) == (405, allow, "invalid_request_error")
    else:
        assert (r.status_code, error["type"]) == (404, "not_found_error")
        assert "POST /v1/chat/completions" in error["message"]
    assert client.get("/v1/models").status_code == 200  # the real routes still answer
