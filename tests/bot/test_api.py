"""The public HTTP API (bot/api.py) in-process: through the real `openai` client (over httpx on
Starlette's TestClient), and raw bodies for what the client would hide."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import openai
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from bot.api import build_router, install_error_handlers
from feedback_db import store

if TYPE_CHECKING:
    from bot.services import Kaizen


@pytest.fixture
def http(kaizen: Kaizen) -> Iterator[TestClient]:
    """The API's routes and error handlers alone (bot/app.py adds the UIs; the e2e tests serve it all)."""
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(build_router(kaizen))
    with TestClient(app) as client:
        yield client


@pytest.fixture
def client(http: TestClient) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{http.base_url}/v1", api_key="unused", max_retries=0, timeout=30, http_client=http)


def _stored(kaizen: Kaizen, exchange_id: str) -> Any:
    with kaizen.db.session() as s:
        return store.get_exchange(session=s, exchange_id=exchange_id)


def _events(body: str) -> list[Any]:
    """The `data:` payloads of a server-sent event stream, JSON-decoded except the final [DONE]."""
    lines = [line.removeprefix("data: ") for line in body.split("\n\n") if line]
    return [line if line == "[DONE]" else json.loads(line) for line in lines]


def test_non_streaming_completion_id_is_the_stored_exchange(client, kaizen, fake_engine):
    fake_engine.enqueue("Công ty BICweb kính chào quý khách!")
    resp = client.chat.completions.create(model="kaizen", messages=[{"role": "user", "content": "Xin chào"}])
    assert resp.choices[0].message.content == "Công ty BICweb kính chào quý khách!"
    ex = _stored(kaizen, resp.id)
    assert ex.bot_text == "Công ty BICweb kính chào quý khách!" and ex.user_text == "Xin chào"
    assert resp.usage.completion_tokens == ex.completion_tokens > 0


def test_the_json_of_every_answer_keeps_its_fields(http, kaizen, fake_engine):
    """The response models produce exactly the bodies clients have relied on."""
    fake_engine.enqueue("one two")
    body = http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]}).json()
    assert isinstance(body.pop("created"), int)
    ex = _stored(kaizen, body["id"])
    assert body == {
        "id": ex.id, "object": "chat.completion", "model": "kaizen-fake",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "one two"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": ex.prompt_tokens, "completion_tokens": 2, "total_tokens": ex.prompt_tokens + 2},
        "kaizen": {"source": "model", "memory_item_ids": [], "adapter": "base", "adapter_applied": False,
                   "preference_applied": False,
                   "emotion": ex.emotion_label},
    }
    assert http.get("/v1/models").json() == \
        {"object": "list", "data": [{"id": "kaizen-fake", "object": "model", "owned_by": "kaizen", "adapter": "base"}]}
    fb = http.post("/v1/feedback", json={"id": ex.id, "rating": "down", "correction": "Chào!"}).json()
    assert fb == {"id": ex.id, "feedback_id": fb["feedback_id"], "rating": "down", "status": "pending",
                  "correction": "Chào!"}
    assert isinstance(fb["feedback_id"], int)
    assert http.get("/healthz").json() == {"status": "ok", "adapter": "base"}


def test_stream_chunks_keep_their_fields(http, kaizen, fake_engine):
    fake_engine.enqueue("một hai")
    r = http.post("/v1/chat/completions", json={"stream": True, "messages": [{"role": "user", "content": "x"}]})
    assert r.headers["content-type"].startswith("text/event-stream")
    assert "một" in r.text  # not \u-escaped
    *chunks, done = _events(r.text)
    assert done == "[DONE]"
    ids = {c.pop("id") for c in chunks}
    assert len(ids) == 1 and _stored(kaizen, ids.pop()).bot_text == "một hai"
    for c in chunks:
        assert isinstance(c.pop("created"), int)
        assert (c.pop("object"), c.pop("model")) == ("chat.completion.chunk", "kaizen-fake")
    assert chunks == [
        {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]},
        {"choices": [{"index": 0, "delta": {"content": "một "}, "finish_reason": None}]},
        {"choices": [{"index": 0, "delta": {"content": "hai"}, "finish_reason": None}]},
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
    ]


def test_streaming_completion(client, kaizen, fake_engine):
    fake_engine.enqueue("one two three four")
    stream = client.chat.completions.create(model="kaizen", stream=True,
                                            messages=[{"role": "system", "content": "Answer in English."},
                                                      {"role": "user", "content": "count"}])
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == "one two three four"
    assert len({c.id for c in chunks}) == 1 and chunks[-1].choices[0].finish_reason == "stop"
    assert _stored(kaizen, chunks[0].id).bot_text == text
    assert "Answer in English." in fake_engine.history[-1]["messages"][0]["content"]


def test_an_error_in_the_middle_of_a_stream_ends_it_with_an_error_event(http, kaizen, fake_engine):
    fake_engine.enqueue("one two three")
    fake_engine.fail_midway = True
    r = http.post("/v1/chat/completions", json={"stream": True, "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 200  # the headers went out before the model failed
    *chunks, error = _events(r.text)
    assert [c["choices"][0]["delta"] for c in chunks] == [{"role": "assistant", "content": ""}, {"content": "one "}]
    assert error == {"error": {"message": "Generation failed: the model crashed", "type": "ModelError"}}
    with kaizen.db.session() as s:
        assert store.totals(session=s)["exchanges"] == 0  # a reply that failed half-way is not stored


def test_models_and_health(client, http):
    assert [m.id for m in client.models.list().data] == ["kaizen-fake"]
    assert http.get("/healthz").json() == {"status": "ok", "adapter": "base"}


def test_feedback_up_then_down_with_correction(client, http, kaizen):
    resp = client.chat.completions.create(model="kaizen", messages=[{"role": "user", "content": "hi"}])
    r = http.post("/v1/feedback", json={"id": resp.id, "rating": "up"})
    assert r.status_code == 200 and r.json()["status"] == "approved"
    r = http.post("/v1/feedback", json={"id": resp.id, "rating": "down", "correction": "Hello!"})
    assert r.status_code == 200 and r.json()["status"] == "pending"
    with kaizen.db.session() as s:
        fb = store.feedback_for_exchange(session=s, exchange_id=resp.id)
        assert (fb.rating, fb.correction, fb.status) == ("down", "Hello!", "pending")


@pytest.mark.parametrize(("body", "status"), [
    ({"id": "no-such-exchange", "rating": "up"}, 404),
    ({"id": "x", "rating": "sideways"}, 422),
    ({"rating": "up"}, 422),
    ({"id": 5, "rating": "up"}, 422),
    ({"id": "x", "rating": "up", "correction": "y" * 5000}, 422),
    ([1, 2], 422),
])
def test_feedback_errors(http, body, status):
    r = http.post("/v1/feedback", json=body)
    assert r.status_code == status
    assert set(r.json()) == {"error"} and set(r.json()["error"]) == {"message", "type"}
    assert r.json()["error"]["message"]


def test_invalid_json_is_422(http):
    r = http.post("/v1/feedback", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422
    r = http.post("/v1/chat/completions", content=b"\xff\xfe", headers={"content-type": "application/json"})
    assert r.status_code == 422


def test_chat_errors_through_the_openai_client(client, kaizen, fake_engine):
    with pytest.raises(openai.UnprocessableEntityError, match="empty"):
        client.chat.completions.create(model="kaizen", messages=[{"role": "user", "content": "   "}])
    with pytest.raises(openai.UnprocessableEntityError, match=r"tokens; the limit is [\d,]+ tokens"):
        client.chat.completions.create(model="kaizen", messages=[{"role": "user", "content": "word " * 5000}])
    with pytest.raises(openai.BadRequestError, match="last message"):
        client.chat.completions.create(model="kaizen", messages=[{"role": "assistant", "content": "hi"}])
    with pytest.raises(openai.UnprocessableEntityError):
        client.chat.completions.create(model="kaizen", messages=[])
    fake_engine.busy = True
    with pytest.raises(openai.InternalServerError) as err:
        client.chat.completions.create(model="kaizen", messages=[{"role": "user", "content": "hi"}], stream=True)
    assert err.value.status_code == 503
    with kaizen.db.session() as s:
        assert store.totals(session=s)["exchanges"] == 0


def test_finish_reason_is_length_when_max_tokens_cut_the_answer(client, fake_engine):
    """Issue 14: `max_tokens=5` on a long story ended with finish_reason "stop"."""
    story = "once upon a time there was a robot who wanted to paint"
    fake_engine.enqueue(story)
    r = client.chat.completions.create(model="kaizen", max_tokens=5, messages=[{"role": "user", "content": "A story"}])
    assert r.choices[0].finish_reason == "length" and r.choices[0].message.content.split() == story.split()[:5]
    fake_engine.enqueue(story)
    chunks = list(client.chat.completions.create(model="kaizen", max_tokens=5, stream=True,
                                                 messages=[{"role": "user", "content": "A story"}]))
    assert chunks[-1].choices[0].finish_reason == "length"
    fake_engine.enqueue("short")
    assert client.chat.completions.create(model="kaizen", max_tokens=5, messages=[{"role": "user", "content": "Hi"}]
                                          ).choices[0].finish_reason == "stop"
