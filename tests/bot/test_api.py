"""The HTTP API through the real `openai` client (and httpx for raw bodies) on a local port."""

import httpx
import openai
import pytest

from feedback_db import store


@pytest.fixture
def client(live_app):
    return openai.OpenAI(base_url=live_app.url + "/v1", api_key="unused", max_retries=0, timeout=30)


def _stored(kaizen, exchange_id):
    with kaizen.db.session() as s:
        return store.get_exchange(session=s, exchange_id=exchange_id)


def test_non_streaming_completion_id_is_the_stored_exchange(client, kaizen, fake_engine):
    fake_engine.enqueue("Công ty BICweb kính chào quý khách!")
    resp = client.chat.completions.create(model="kaizen", messages=[{"role": "user", "content": "Xin chào"}])
    assert resp.choices[0].message.content == "Công ty BICweb kính chào quý khách!"
    ex = _stored(kaizen, resp.id)
    assert ex.bot_text == "Công ty BICweb kính chào quý khách!" and ex.user_text == "Xin chào"
    assert resp.usage.completion_tokens == ex.completion_tokens > 0


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


def test_models_and_health(client, live_app):
    assert [m.id for m in client.models.list().data] == ["kaizen-fake"]
    assert httpx.get(live_app.url + "/healthz").json() == {"status": "ok", "adapter": "base"}


def test_feedback_up_then_down_with_correction(client, live_app, kaizen):
    resp = client.chat.completions.create(model="kaizen", messages=[{"role": "user", "content": "hi"}])
    r = httpx.post(live_app.url + "/v1/feedback", json={"id": resp.id, "rating": "up"})
    assert r.status_code == 200 and r.json()["status"] == "approved"
    r = httpx.post(live_app.url + "/v1/feedback", json={"id": resp.id, "rating": "down", "correction": "Hello!"})
    assert r.status_code == 200 and r.json()["status"] == "pending"
    with kaizen.db.session() as s:
        fb = store.feedback_for_exchange(session=s, exchange_id=resp.id)
        assert (fb.rating, fb.correction, fb.status) == ("down", "Hello!", "pending")


@pytest.mark.parametrize("body, status", [
    ({"id": "no-such-exchange", "rating": "up"}, 404),
    ({"id": "x", "rating": "sideways"}, 422),
    ({"rating": "up"}, 422),
    ({"id": 5, "rating": "up"}, 422),
    ({"id": "x", "rating": "up", "correction": "y" * 5000}, 422),
    ([1, 2], 422),
])
def test_feedback_errors(live_app, body, status):
    r = httpx.post(live_app.url + "/v1/feedback", json=body)
    assert r.status_code == status
    assert r.json()["error"]["message"]


def test_invalid_json_is_422(live_app):
    r = httpx.post(live_app.url + "/v1/feedback", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422
    r = httpx.post(live_app.url + "/v1/chat/completions", content=b"\xff\xfe", headers={"content-type": "application/json"})
    assert r.status_code == 422


def test_chat_errors_through_the_openai_client(client, kaizen, fake_engine):
    with pytest.raises(openai.UnprocessableEntityError, match="empty"):
        client.chat.completions.create(model="kaizen", messages=[{"role": "user", "content": "   "}])
    with pytest.raises(openai.UnprocessableEntityError, match="limit"):
        client.chat.completions.create(model="kaizen", messages=[{"role": "user", "content": "x" * 5000}])
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
