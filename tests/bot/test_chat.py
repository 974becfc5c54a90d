"""The chat service on the fake engine: tone from emotion, persona, storage, and bad input."""

import pytest

from bot.fallback import NO_ANSWER
from feedback_db import store
from kaizen.errors import BusyError, InputError, ModelError
from kaizen.prompts import Persona
from tests import fakes


def _exchanges(kaizen):
    with kaizen.db.session() as s:
        return store.list_exchanges(session=s)


def test_reply_streams_and_is_stored_when_finished(kaizen, fake_engine):
    fake_engine.enqueue("Xin chào! Tôi có thể giúp gì?")
    reply = kaizen.chat.start(message="  Xin chào  ")
    assert _exchanges(kaizen) == []  # nothing is stored before the reply is complete
    chunks = list(reply)
    assert "".join(chunks) == "Xin chào! Tôi có thể giúp gì?" and len(chunks) > 1
    [ex] = _exchanges(kaizen)
    assert ex.id == reply.exchange_id
    assert (ex.user_text, ex.bot_text, ex.adapter_version, ex.source) == (
        "Xin chào", "Xin chào! Tôi có thể giúp gì?", "base", "model")
    assert ex.completion_tokens == len(chunks) and ex.prompt_tokens > 0 and ex.latency_ms >= 0
    assert ex.confidence == fakes.CONFIDENCE  # the model's mean log-probability per token, as the engine reported it


def test_the_models_confidence_is_stored_with_the_exchange(kaizen, fake_engine):
    fake_engine.enqueue("Paris is the capital of France.", confidence=-0.125)
    reply = kaizen.chat.start(message="What is the capital of France?")
    assert reply.stream.confidence is None  # known once the reply is read
    reply.read()
    assert reply.stream.confidence == -0.125
    assert [ex.confidence for ex in _exchanges(kaizen)] == [-0.125]


def test_a_taught_answer_or_a_fact_in_place_of_the_models_reply_stores_no_confidence(kaizen, fake_engine):
    with kaizen.db.write() as s:
        store.add_knowledge(session=s, question="Công ty mở cửa lúc mấy giờ?", verbatim=True,
                            answer="Công ty mở cửa từ 8 giờ đến 17 giờ 30, thứ Hai đến thứ Sáu.")
        store.add_knowledge(session=s, question="Fansipan cao mấy mét?", answer="Đỉnh Fansipan cao 3.147 mét.")
    taught = kaizen.chat.answer("Công ty mở cửa lúc mấy giờ?", use_memory=True)
    assert taught.source == "memory" and taught.stream.confidence is None
    fake_engine.enqueue("Fansipan rất cao.", confidence=-0.75)  # without the fact's number: the fact replaces it
    replaced = kaizen.chat.answer("Fansipan cao mấy mét?", use_memory=True)
    assert replaced.source == "rag" and replaced.text == "Đỉnh Fansipan cao 3.147 mét."
    assert replaced.stream.confidence is None and replaced.stream.model_confidence == -0.75
    fake_engine.enqueue("Fansipan cao 3147 mét.", confidence=-0.75)  # carries it: the model's own reply
    carried = kaizen.chat.answer("Fansipan cao mấy mét?", use_memory=True)
    assert carried.source == "rag" and carried.text == "Fansipan cao 3147 mét."
    stored = {ex.id: ex.confidence for ex in _exchanges(kaizen)}
    assert stored == {taught.exchange_id: None, replaced.exchange_id: None, carried.exchange_id: -0.75}


@pytest.mark.parametrize(("message", "label", "tone_word"), [
    ("This is terrible, I am really angry and disappointed.", "negative", "calm"),
    ("Tôi rất thất vọng vì giao hàng chậm quá", "negative", "calm"),
    ("Thank you so much, this is wonderful!", "positive", "warm"),
    ("What time does the office open?", "neutral", "professional"),
])
def test_emotion_sets_the_tone_in_the_system_prompt(kaizen, fake_engine, message, label, tone_word):
    reply = kaizen.chat.answer(message)
    assert reply.emotion.label == label
    system = fake_engine.history[-1]["messages"][0]
    assert system["role"] == "system" and tone_word in system["content"].lower()
    assert _exchanges(kaizen)[0].emotion_label == label


def test_persona_from_settings_table_is_used(kaizen, fake_engine):
    with kaizen.db.write() as s:
        store.set_setting(session=s, key="persona",
                          value=Persona(agent_name="Bé Na", creator="BICweb", company="BICweb làm web.").to_dict())
    kaizen.chat.answer("Bạn là ai?")
    system = fake_engine.history[-1]["messages"][0]["content"]
    assert system.startswith("You are Bé Na, a helpful assistant created by BICweb.") and "BICweb làm web." in system


def test_history_is_passed_and_conversation_kept(kaizen, fake_engine):
    first = kaizen.chat.answer("My name is An.")
    kaizen.chat.answer("What is my name?", history=[{"role": "user", "content": "My name is An."},
                                                    {"role": "assistant", "content": first.text}],
                       conversation_id=first.conversation_id)
    sent = fake_engine.history[-1]["messages"]
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "user"]
    exs = _exchanges(kaizen)
    assert len(exs) == 2 and exs[0].conversation_id == exs[1].conversation_id


def test_a_looping_reply_and_its_question_are_kept_out_of_the_history_sent_back(kaizen, fake_engine):
    """Issue 13: one looping reply poisoned the next three messages, which copied the loop."""
    history = [{"role": "user", "content": "Xin chào, bạn là ai?"},
               {"role": "assistant", "content": "Xin chào, bạn là ai" + ", bạn là ai" * 40},
               {"role": "user", "content": "My name is An."},
               {"role": "assistant", "content": "Nice to meet you, An."}]
    kaizen.chat.answer("What is my name?", history=history)
    sent = fake_engine.history[-1]["messages"]
    assert [m["content"] for m in sent[1:]] == ["My name is An.", "Nice to meet you, An.", "What is my name?"]


@pytest.mark.parametrize(("message", "model_reply", "shown"), [
    ("Bạn tên gì?", "Bạn tên gì?", NO_ANSWER["vi"]),  # the question given back (issue 13)
    ("Bạn tên gì?", "bạn tên gì", NO_ANSWER["vi"]),
    ("What is your name?", "", NO_ANSWER["en"]),  # nothing at all
    ("What is your name?", " ... ", NO_ANSWER["en"]),  # nothing but marks
    ("Copy this: 🎉🎉🎉", "🎉🎉🎉", "🎉🎉🎉"),  # emoji are an answer, though they have no letters (issue 14)
    ("Bạn thấy sao?", "👍", "👍"),
    ("Xin chào, bạn là ai?", "Xin chào", "Xin chào"),  # a part of the question is a reply of its own
    ("What is your name?", "What is your name? My name is Mai.", "My name is Mai."),  # the echo is dropped
    ("Đà Lạt có gì vui?", "Đà Lạt có gì vui?  Bạn có thể đi hồ Xuân Hương.", "Bạn có thể đi hồ Xuân Hương."),
    # Given back, then again until the token limit cut it (a new user's trial): all echo.
    ("Bạn có thể giới thiệu về Hà Nội không?",
     "Bạn có thể giới thiệu về Hà Nội không?\n\nBạn có thể giới thiệu về Hà Nội khô", NO_ANSWER["vi"]),
    ("What is your name?", "What is your name? What is your name?", NO_ANSWER["en"]),
    ("What is your name?", "What is your name? What is your name? My name is Mai.", "My name is Mai."),
    ("Đà Lạt có gì vui?", "Đà Lạt có gì vui? Đà Lạt có hồ Xuân Hương.", "Đà Lạt có hồ Xuân Hương."),
])
def test_an_empty_or_echoed_reply_says_briefly_that_there_is_no_good_answer(kaizen, fake_engine, message,
                                                                            model_reply, shown):
    fake_engine.enqueue(model_reply, confidence=-1.25)
    reply = kaizen.chat.start(message=message)
    assert "".join(reply) == shown
    [ex] = _exchanges(kaizen)
    assert ex.bot_text == shown
    # The fallback's text is not the model's: no confidence; the model's own reply (echo dropped or not) has its own.
    assert ex.confidence == (None if shown in NO_ANSWER.values() else -1.25)
    assert reply.stream.confidence == ex.confidence


@pytest.mark.parametrize(("message", "match"), [
    ("", "empty"), ("   \n\t ", "empty"), ("x" * 32_001, "limit is 32,000"),
    ("word " * 3000, r"3,000 tokens; the limit is [\d,]+ tokens"), ("a\x00b", "control"), (123, "text"),
])
def test_bad_messages_are_refused_and_nothing_is_stored(kaizen, fake_engine, message, match):
    with pytest.raises(InputError, match=match):
        kaizen.chat.start(message=message)
    assert fake_engine.history == [] and _exchanges(kaizen) == []


def test_a_reply_that_fails_midway_is_not_stored(kaizen, fake_engine):
    fake_engine.fail_midway = True
    reply = kaizen.chat.start(message="hello")
    chunks = iter(reply)
    assert next(chunks)  # the first chunk arrived, then the model failed
    with pytest.raises(ModelError):
        next(chunks)
    assert _exchanges(kaizen) == []


def test_busy_engine_refuses_before_streaming(kaizen, fake_engine):
    fake_engine.busy = True
    with pytest.raises(BusyError):
        kaizen.chat.start(message="hello")
    assert _exchanges(kaizen) == []


def test_the_message_limit_follows_the_persona(kaizen):
    """The limit leaves room for the system prompt, so a longer persona leaves less for the message."""
    _, before = kaizen.chat.message_budget("hi")
    with kaizen.db.write() as s:
        store.set_setting(session=s, key="persona", value=Persona(company="word " * 100).to_dict())
    _, after = kaizen.chat.message_budget("hi")
    assert before - after >= 100
