"""The public HTTP API (bot/api.py) in-process: through the real `openai` client (over httpx on
Starlette's TestClient), and raw bodies for what the client would hide."""

from __future__ import annotations

import json
import time
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
    models = http.get("/v1/models").json()
    created = models["data"][0].pop("created")  # OpenAI's shape: strict clients need "created" (issue 14)
    assert isinstance(created, int) and abs(created - time.time()) < 24 * 3600
    assert models == \
        {"object": "list", "data": [{"id": "kaizen-fake", "object": "model", "owned_by": "kaizen", "adapter": "base"}]}
    fb = http.post("/v1/feedback", json={"id": ex.id, "rating": "down", "correction": "Chào!"}).json()
    assert fb == {"id": ex.id, "feedback_id": fb["feedback_id"], "rating": "down", "status": "pending",
                  "correction": "Chào!"}
    assert isinstance(fb["feedback_id"], int)
    assert http.get("/healthz").json() == {"status": "ok", "adapter": "base", "engine": "embedded",
                                           "engine_serving": "embedded"}


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
    assert chunks[-1].pop("kaizen")["source"] == "model"
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
    assert error == {"error": {"message": "Generation failed: the model crashed", "type": "server_error"}}
    with kaizen.db.session() as s:
        assert store.totals(session=s)["exchanges"] == 0  # a reply that failed half-way is not stored


def test_models_and_health(client, http):
    assert [m.id for m in client.models.list().data] == ["kaizen-fake"]
    assert http.get("/healthz").json() == {"status": "ok", "adapter": "base", "engine": "embedded",
                                           "engine_serving": "embedded"}


def test_health_says_when_the_external_engine_fails_and_the_embedded_one_answers(http, kaizen, fake_engine):
    """A failing vLLM engine is no reason for a load balancer to drop the replica (200), but /healthz and
    the admin dashboard say which engine answers and why (bot/vllm_engine.py)."""
    from bot.admin_service import AdminService
    from bot.admin_views import adapters_note
    from bot.engine_api import EngineStatus

    problem = "The vLLM server at http://10.0.0.9:8000 does not answer (ConnectError)."
    fake_engine.engine_status = EngineStatus(kind="vllm", serving="embedded", url="http://10.0.0.9:8000",
                                             problem=problem)
    r = http.get("/healthz")
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "adapter": "base", "engine": "vllm", "engine_serving": "embedded",
                        "engine_error": problem}
    admin = AdminService(kaizen)
    assert admin.stats().engine_error == problem
    note = adapters_note(admin.adapters())
    assert problem in note and "from the **embedded** engine" in note
    fake_engine.engine_status = EngineStatus(kind="vllm", serving="vllm", url="http://10.0.0.9:8000")
    assert http.get("/healthz").json()["engine_serving"] == "vllm"
    note = adapters_note(admin.adapters())
    assert "serving base on vllm" in note and "⚠️" not in note


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
    ({"id": "x", "rating": "up", "correction": "a better answer"}, 422),  # a correction needs "down"
    ([1, 2], 422),
])
def test_feedback_errors(http, body, status):
    r = http.post("/v1/feedback", json=body)
    assert r.status_code == status
    assert set(r.json()) == {"error"} and set(r.json()["error"]) == {"message", "type"}
    assert r.json()["error"]["message"]


def test_invalid_json_is_422_and_400_on_chat_completions(http):
    r = http.post("/v1/feedback", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422
    r = http.post("/v1/chat/completions", content=b"\xff\xfe", headers={"content-type": "application/json"})
    assert r.status_code == 400  # OpenAI's status for a request it cannot take


def test_chat_errors_through_the_openai_client(client, kaizen, fake_engine):
    # Every request error on chat completions is OpenAI's 400 (vLLM's too), not FastAPI's 422 (issue 14).
    with pytest.raises(openai.BadRequestError, match="empty"):
        client.chat.completions.create(model="kaizen", messages=[{"role": "user", "content": "   "}])
    with pytest.raises(openai.BadRequestError, match=r"tokens; the limit is [\d,]+ tokens") as err:
        client.chat.completions.create(model="kaizen", messages=[{"role": "user", "content": "word " * 5000}])
    assert (err.value.code, err.value.param, err.value.type) == ("context_length_exceeded", "messages",
                                                                 "invalid_request_error")
    with pytest.raises(openai.BadRequestError) as err:
        list(client.chat.completions.create(model="kaizen", stream=True,
                                            messages=[{"role": "user", "content": "word " * 5000}]))
    assert err.value.code == "context_length_exceeded"
    # Over the character cap, which is checked before any tokenizing: the same code (a new-user trial).
    with pytest.raises(openai.BadRequestError, match="characters; the limit is") as err:
        client.chat.completions.create(model="kaizen", messages=[{"role": "user", "content": "word " * 20_000}])
    assert (err.value.code, err.value.param) == ("context_length_exceeded", "messages")
    with pytest.raises(openai.BadRequestError, match="last message"):
        client.chat.completions.create(model="kaizen", messages=[{"role": "assistant", "content": "hi"}])
    with pytest.raises(openai.BadRequestError):  # OpenAI's 400 for a malformed request
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


def test_a_correction_needs_a_down_rating_and_a_rating_can_be_taken_back(client, http, kaizen):
    resp = client.chat.completions.create(model="kaizen", messages=[{"role": "user", "content": "hi"}])
    r = http.post("/v1/feedback", json={"id": resp.id, "rating": "up", "correction": "Hello!"})
    assert r.status_code == 422 and "'down'" in r.json()["error"]["message"]
    fb = http.post("/v1/feedback", json={"id": resp.id, "rating": "down", "correction": "Hello!"}).json()
    assert http.post("/v1/feedback", json={"id": resp.id, "rating": "up"}).status_code == 200
    with kaizen.db.session() as s:  # switched to 👍: the correction went with the 👎
        assert store.feedback_for_exchange(session=s, exchange_id=resp.id).correction is None
    assert fb["feedback_id"]
    r = http.delete(f"/v1/feedback/{resp.id}")
    assert r.status_code == 200 and r.json() == {"id": resp.id, "withdrawn": True}
    assert http.delete(f"/v1/feedback/{resp.id}").json() == {"id": resp.id, "withdrawn": False}
    assert http.delete("/v1/feedback/no-such-exchange").status_code == 404
    with kaizen.db.session() as s:
        assert store.feedback_for_exchange(session=s, exchange_id=resp.id) is None


def test_content_given_as_text_parts_is_answered_and_another_part_type_is_refused_by_name(client, http, fake_engine):
    # Many clients send content as a list of parts (issue 14, kind 4).
    resp = client.chat.completions.create(model="kaizen", messages=[
        {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
        {"role": "user", "content": [{"type": "text", "text": "Xin chào"}, {"type": "text", "text": "bạn là ai?"}]}])
    assert resp.choices[0].message.content == "Echo: Xin chào\nbạn là ai?"
    assert "Be brief." in fake_engine.history[-1]["messages"][0]["content"]
    r = http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is this?"}, {"type": "image_url", "image_url": {"url": "data:,"}}]}]})
    assert r.status_code == 400 and "'image_url'" in r.json()["error"]["message"]


def test_a_long_conversation_is_trimmed_not_refused(client, fake_engine):
    turns = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i}"} for i in range(250)]
    resp = client.chat.completions.create(model="kaizen", messages=[*turns, {"role": "user", "content": "last"}])
    assert resp.choices[0].message.content == "Echo: last"


def test_a_max_tokens_larger_than_the_room_left_is_lowered_not_blamed_on_the_message(client, fake_engine):
    resp = client.chat.completions.create(model="kaizen", max_tokens=4096,
                                          messages=[{"role": "user", "content": "Hi"}])
    assert resp.choices[0].message.content == "Echo: Hi"
    assert fake_engine.history[-1]["params"].max_new_tokens <= fake_engine.context_tokens


@pytest.mark.parametrize("stream", [False, True])
def test_a_taught_answer_obeys_max_tokens_and_counts_its_prompt(client, kaizen, stream):
    # Every answer path obeys the same limit and usage accounting (issue 14, kind 3).
    with kaizen.db.write() as s:
        store.add_knowledge(session=s, question="Công ty mở cửa lúc mấy giờ?", verbatim=True,
                            answer="Công ty mở cửa từ 8 giờ đến 17 giờ 30, thứ Hai đến thứ Sáu.")
    ask = {"model": "kaizen", "messages": [{"role": "user", "content": "Công ty mở cửa lúc mấy giờ?"}],
           "extra_body": {"memory": True}}
    if stream:
        chunks = list(client.chat.completions.create(**ask, max_tokens=3, stream=True))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
        assert (text, finish) == ("Công ty mở", ["length"])
        return
    full = client.chat.completions.create(**ask)
    assert full.model_extra["kaizen"]["source"] == "memory"
    assert full.choices[0].finish_reason == "stop" and full.usage.prompt_tokens == 7  # the fake counts words
    cut = client.chat.completions.create(**ask, max_tokens=3)
    assert cut.choices[0].message.content == "Công ty mở" and cut.choices[0].finish_reason == "length"
    assert (cut.usage.prompt_tokens, cut.usage.completion_tokens) == (7, 3)


def test_the_servers_default_reply_cap_does_not_cut_a_taught_answer(client, kaizen):
    # KAIZEN_MAX_NEW_TOKENS bounds what the model generates; an answer an admin approved is served
    # whole unless the client itself asked for fewer tokens (a fresh-clone run cut one at 48 tokens).
    kaizen.chat.settings = kaizen.settings.model_copy(update={"max_new_tokens": 3})
    answer = "Công ty mở cửa từ 8 giờ đến 17 giờ 30, thứ Hai đến thứ Sáu."
    with kaizen.db.write() as s:
        store.add_knowledge(session=s, question="Công ty mở cửa lúc mấy giờ?", verbatim=True, answer=answer)
    ask = {"model": "kaizen", "messages": [{"role": "user", "content": "Công ty mở cửa lúc mấy giờ?"}],
           "extra_body": {"memory": True}}
    whole = client.chat.completions.create(**ask)
    assert (whole.choices[0].message.content, whole.choices[0].finish_reason) == (answer, "stop")
    cut = client.chat.completions.create(**ask, max_tokens=4)
    assert (cut.choices[0].message.content, cut.choices[0].finish_reason) == ("Công ty mở cửa", "length")


def test_include_usage_sends_a_last_chunk_with_usage_and_no_choices(client, http):
    chunks = list(client.chat.completions.create(model="kaizen", messages=[{"role": "user", "content": "one two"}],
                                                 stream=True, stream_options={"include_usage": True}))
    *answer, last = chunks
    assert last.choices == [] and last.usage.completion_tokens == 3  # "Echo: one two"
    assert last.usage.total_tokens == last.usage.prompt_tokens + 3 and last.usage.prompt_tokens > 0
    assert all(c.usage is None for c in answer) and answer[-1].choices[0].finish_reason == "stop"
    plain = list(client.chat.completions.create(model="kaizen", messages=[{"role": "user", "content": "x"}],
                                                stream=True))
    assert all(c.choices for c in plain)  # no usage chunk unless asked
    r = http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}],
                                                "stream_options": {"include_usage": True}})
    assert r.status_code == 400 and "stream" in r.json()["error"]["message"]


# ---- every request field the openai client can send: honoured, or 400 naming it (issue 14, kind 1) ----

REFUSED = [
    ("n", 2), ("tools", [{"type": "function", "function": {"name": "f", "parameters": {}}}]),
    ("tool_choice", "required"), ("functions", [{"name": "f", "parameters": {}}]), ("function_call", "auto"),
    ("response_format", {"type": "json_object"}),
    ("response_format", {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}),
    ("logprobs", True), ("top_logprobs", 2), ("logit_bias", {"50256": -100}), ("frequency_penalty", 0.5),
    ("presence_penalty", -1.0), ("audio", {"voice": "alloy", "format": "mp3"}), ("modalities", ["text", "audio"]),
    ("prediction", {"type": "content", "content": "x"}), ("reasoning_effort", "low"), ("verbosity", "low"),
    ("web_search_options", {}), ("store", False), ("metadata", {"k": "v"}), ("service_tier", "flex"),
    ("stop", ["a", "b", "c", "d", "e"]), ("stop", [""]),
]


@pytest.mark.parametrize(("field", "value"), REFUSED)
@pytest.mark.parametrize("stream", [False, True])
def test_a_field_kaizen_cannot_honour_is_refused_with_400_naming_it(client, kaizen, field, value, stream):
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="kaizen", messages=[{"role": "user", "content": "hi"}], stream=stream,
                                       **{field: value})
    assert err.value.status_code == 400
    assert err.value.body["param"] == field and err.value.body["type"] == "invalid_request_error"
    with kaizen.db.session() as s:
        assert store.totals(session=s)["exchanges"] == 0  # refused before anything ran or was stored


def test_an_unknown_field_is_refused_and_kaizens_own_fields_are_not(client, http):
    r = http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}], "temprature": 0.2})
    assert r.status_code == 400 and r.json()["error"]["param"] == "temprature"
    ok = client.chat.completions.create(model="kaizen", messages=[{"role": "user", "content": "hi"}],
                                        extra_body={"memory": False, "conversation_id": "abc"})
    assert ok.choices[0].message.content == "Echo: hi"


@pytest.mark.parametrize("stream", [False, True])
def test_fields_that_ask_for_nothing_kaizen_cannot_do_are_accepted(client, fake_engine, stream):
    kw: dict[str, Any] = {
        "n": 1, "response_format": {"type": "text"}, "user": "u1", "safety_identifier": "s", "prompt_cache_key": "k",
        "tool_choice": "none", "parallel_tool_calls": False, "logprobs": False, "frequency_penalty": 0,
        "presence_penalty": 0.0, "modalities": ["text"], "store": True, "service_tier": "auto", "seed": 7,
        "max_completion_tokens": 2}
    r = client.chat.completions.create(model="kaizen", messages=[{"role": "user", "content": "one two three"}],
                                       stream=stream, **kw)
    text = "".join(c.choices[0].delta.content or "" for c in r) if stream else r.choices[0].message.content
    assert text == "Echo: one "  # max_completion_tokens is max_tokens' newer name
    params = fake_engine.history[-1]["params"]
    assert (params.max_new_tokens, params.seed) == (2, 7)


@pytest.mark.parametrize("stream", [False, True])
def test_stop_ends_the_reply_before_the_stop_string_on_every_path(client, kaizen, fake_engine, stream):
    def ask(question: str, stop: str | list[str], **extra: Any) -> tuple[str, str]:
        r = client.chat.completions.create(model="kaizen", messages=[{"role": "user", "content": question}],
                                           stop=stop, stream=stream, **extra)
        if not stream:
            return r.choices[0].message.content, r.choices[0].finish_reason
        chunks = list(r)
        return ("".join(c.choices[0].delta.content or "" for c in chunks),
                next(c.choices[0].finish_reason for c in chunks if c.choices[0].finish_reason))

    fake_engine.enqueue("The capital of France is Paris. It is big.")
    assert ask("What is the capital of France?", ["Paris"]) == ("The capital of France is ", "stop")
    with kaizen.db.write() as s:
        store.add_knowledge(session=s, question="Thủ đô của Pháp là gì?", answer="Thủ đô của Pháp là Paris.",
                            verbatim=True)
    assert ask("Thủ đô của Pháp là gì?", "Paris", extra_body={"memory": True}) == ("Thủ đô của Pháp là ", "stop")


@pytest.mark.parametrize("stream", [False, True])
def test_a_fact_put_in_place_of_the_models_reply_obeys_max_tokens_and_stop(client, kaizen, fake_engine, stream):
    # Found by a new-user trial: the fact check replaced a cut reply with the whole fact (issue 14, kind 3).
    with kaizen.db.write() as s:
        store.add_knowledge(session=s, question="Fansipan cao mấy mét?", answer="Đỉnh Fansipan cao 3.147 mét.")
    ask = {"model": "kaizen", "messages": [{"role": "user", "content": "Fansipan cao mấy mét?"}],
           "extra_body": {"memory": True}, "stream": stream}

    def answer(**kw: Any) -> tuple[str, str, str]:
        r = client.chat.completions.create(**ask, **kw)
        if not stream:
            return r.choices[0].message.content, r.choices[0].finish_reason, r.model_extra["kaizen"]["source"]
        chunks = list(r)
        return ("".join(c.choices[0].delta.content or "" for c in chunks),
                next(c.choices[0].finish_reason for c in chunks if c.choices[0].finish_reason), "rag")

    fake_engine.enqueue(*["Fansipan rất cao."] * 3)  # a reply without the fact's number, three times
    assert answer() == ("Đỉnh Fansipan cao 3.147 mét.", "stop", "rag")
    assert answer(max_tokens=3) == ("Đỉnh Fansipan cao", "length", "rag")
    assert answer(stop=["3.147"]) == ("Đỉnh Fansipan cao ", "stop", "rag")


def test_a_limit_smaller_than_the_first_word_cuts_inside_it_and_nothing_is_invented(client, kaizen):
    with kaizen.db.write() as s:
        store.add_knowledge(session=s, question="Giờ mở cửa?", answer="Supercalifragilistic 8 giờ.", verbatim=True)
    r = client.chat.completions.create(model="kaizen", messages=[{"role": "user", "content": "Giờ mở cửa?"}],
                                       max_tokens=1, extra_body={"memory": True})
    assert r.choices[0].finish_reason == "length" and r.choices[0].message.content == "Supercalifragilistic"
    with kaizen.db.write() as s:
        store.add_knowledge(session=s, question="Chào", answer="Xin chào quý khách.", verbatim=True)
    r = client.chat.completions.create(model="kaizen", messages=[{"role": "user", "content": "Chào"}],
                                       stop=["Xin"], extra_body={"memory": True})
    assert r.choices[0].message.content == ""  # nothing before the stop string: nothing, not "…"


def test_openai_error_shapes_developer_role_and_one_model(client, http):
    for body, param in (({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}, "max_tokens"),
                        ({"messages": [{"role": "user", "content": "hi"}], "temperature": 3}, "temperature"),
                        ({"messages": [{"role": "assistant", "content": "hi"}]}, "messages")):
        r = http.post("/v1/chat/completions", json=body)
        assert r.status_code == 400, body
        assert r.json()["error"]["type"] == "invalid_request_error" and r.json()["error"]["param"] == param
    resp = client.chat.completions.create(model="kaizen", messages=[
        {"role": "developer", "content": "Answer briefly."}, {"role": "user", "content": "hi"}])
    assert resp.choices[0].message.content == "Echo: hi"
    [card] = client.models.list().data
    assert client.models.retrieve(card.id).id == card.id
    r = http.get("/v1/models/no-such-model")
    assert r.status_code == 404 and "does not exist" in r.json()["error"]["message"]


@pytest.mark.postgres
@pytest.mark.parametrize("database_kind", ["postgresql"], indirect=True)
def test_a_database_outage_is_a_503_with_retry_after_and_healthz_says_so(http, kaizen, fake_engine, postgres_cluster):
    """PostgreSQL goes away under a running replica (here: its database is dropped, every connection
    ended): requests get OpenAI's JSON error shape with 503 and Retry-After, not a bare 500, and
    /healthz answers 503 so a load balancer sends users to another replica."""
    assert http.get("/healthz").status_code == 200
    assert http.head("/healthz").status_code == 200  # what some load balancers send
    postgres_cluster.drop_database(kaizen.settings.database_url)
    health = http.get("/healthz")
    assert health.status_code == 503 and health.headers["retry-after"] == "2"
    assert health.json()["status"] == "unavailable" and health.json()["error"]
    fake_engine.enqueue("a reply")
    for resp in (http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]}),
                 http.post("/v1/feedback", json={"id": "0" * 32, "rating": "up"})):
        assert resp.status_code == 503, resp.text
        assert resp.headers["retry-after"] == "2"
        assert resp.json()["error"]["type"] == "server_error" and "database" in resp.json()["error"]["message"]
