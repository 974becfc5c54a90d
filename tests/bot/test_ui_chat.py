"""The chat tab's handlers (bot/ui_chat.py), called directly as Gradio calls them, on the fake engine:
sending (streaming, history, errors), 👍/👎, the better answer, and a new conversation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gradio as gr
import pytest

from bot.services import Kaizen
from bot.ui_chat import ChatState, build_chat_ui
from feedback_db import store
from tests.fakes import FakeEngine

Handlers = dict[str, Callable[..., Any]]


@pytest.fixture
def ui(kaizen: Kaizen) -> Handlers:
    """The handlers wired to the chat tab's events, by function name."""
    fns = {f.fn.__name__: f.fn for f in build_chat_ui(kaizen).fns.values() if f.fn is not None}
    assert {"respond", "on_like", "on_correct", "new_conversation"} <= set(fns)
    return fns


def refused(match: str) -> pytest.WarningsRecorder:
    """A refusal shows a fading warning and changes no output (bot/ui_errors.py); outside a page
    Gradio issues it as a UserWarning."""
    return pytest.warns(UserWarning, match=match)


def send(ui: Handlers, state: ChatState, message: str) -> list[tuple]:
    """Every update `respond` streams for one message."""
    return list(ui["respond"](message, state))


def like(ui: Handlers, state: ChatState, message_index: int, liked: bool | str) -> tuple[ChatState, str, str, dict]:
    return ui["on_like"](state, gr.LikeData(None, {"index": message_index, "value": "", "liked": liked}))


def feedback(kaizen: Kaizen) -> list[tuple[str, str, str | None, str]]:
    """(question, rating, correction, status) of every stored rating."""
    with kaizen.db.session() as s:
        return [(ex.user_text, fb.rating, fb.correction, fb.status) for fb, ex in store.list_feedback(session=s)]


def test_a_reply_streams_in_and_then_is_stored(kaizen: Kaizen, ui: Handlers, fake_engine: FakeEngine) -> None:
    fake_engine.enqueue("Công ty mở cửa lúc tám giờ sáng.")
    state = ChatState()
    updates = send(ui, state, "Mấy giờ mở cửa?")
    shown = [u[1]["value"][-1]["content"] for u in updates[:-1]]
    assert len(shown) > 2 and shown == sorted(shown, key=len)  # the answer grows a piece at a time
    box, messages, state, better, info, count = updates[-1]
    assert box == "" and better == {"__type__": "update", "value": ""}
    # The messages are exactly the texts: version, source and emotion are metadata beside them (issue 13),
    # so copying an answer copies only the answer.
    assert messages["value"] == [{"role": "user", "content": "Mấy giờ mở cửa?"},
                                 {"role": "assistant", "content": "Công ty mở cửa lúc tám giờ sáng."}]
    assert messages["feedback_value"] == [None]  # not rated yet
    assert info["value"] == "Answered by **base** · 🤖 the model alone · your message read as 😐\ufe0f neutral"
    [turn] = state.turns
    with kaizen.db.session() as s:
        stored = store.get_exchange(session=s, exchange_id=turn.exchange_id)
    assert stored.bot_text == turn.bot and stored.conversation_id == state.conversation_id


def test_the_history_goes_with_the_next_message_in_one_conversation(kaizen: Kaizen, ui: Handlers,
                                                                     fake_engine: FakeEngine) -> None:
    state = ChatState()
    send(ui, state, "My name is An.")
    send(ui, state, "What is my name?")
    sent = fake_engine.history[-1]["messages"]
    assert [(m["role"], m["content"]) for m in sent[1:]] == [
        ("user", "My name is An."), ("assistant", "Echo: My name is An."), ("user", "What is my name?")]
    with kaizen.db.session() as s:
        assert {e.conversation_id for e in store.list_exchanges(session=s)} == {state.conversation_id}


def test_an_empty_message_does_nothing_and_a_bad_one_is_refused_with_a_warning(kaizen: Kaizen, ui: Handlers,
                                                                       fake_engine: FakeEngine) -> None:
    state = ChatState()
    assert len(send(ui, state, "   ")) == 1 and state.turns == []
    with refused(match="control"):
        send(ui, state, "a\x00b")
    fake_engine.busy = True
    with refused(match="too many people"):
        send(ui, state, "hello")
    assert state.turns == []
    with kaizen.db.session() as s:
        assert store.list_exchanges(session=s) == []


def test_a_reply_that_fails_midway_is_dropped_from_the_chat_and_not_stored(kaizen: Kaizen, ui: Handlers,
                                                                           fake_engine: FakeEngine) -> None:
    state = ChatState()
    send(ui, state, "first")
    fake_engine.fail_midway = True
    with pytest.raises(gr.Error, match="Generation failed"):
        send(ui, state, "second")
    assert [t.user for t in state.turns] == ["first"]
    with kaizen.db.session() as s:
        assert [e.user_text for e in store.list_exchanges(session=s)] == ["first"]


def test_thumbs_up_and_down_rate_the_answer_they_are_on(kaizen: Kaizen, ui: Handlers) -> None:
    state = ChatState()
    send(ui, state, "first question")
    send(ui, state, "second question")
    state, note, info, chat = like(ui, state, 1, "Like")  # message 1: the first answer
    assert note.startswith("Rated 👍") and state.selected == 0 and info.startswith("Answered by **base**")
    assert chat["feedback_value"] == ["Like", None]
    state, note, _, chat = like(ui, state, 3, False)  # message 3: the second answer
    assert note.startswith("Rated 👎") and "better answer" in note and state.selected == 1
    # Every answer's rating stays shown: the chat tab lost the first one when the second was rated.
    assert chat["feedback_value"] == ["Like", "Dislike"]
    send(ui, state, "third question")
    assert send(ui, state, "fourth question")[-1][1]["feedback_value"] == ["Like", "Dislike", None, None]
    assert sorted(feedback(kaizen)) == [("first question", "up", None, "approved"),
                                        ("second question", "down", None, "approved")]
    state, *_ = like(ui, state, 1, "Dislike")  # rating again replaces the rating
    assert ("first question", "down", None, "approved") in feedback(kaizen) and len(feedback(kaizen)) == 2


def test_an_answer_still_streaming_cannot_be_rated(kaizen: Kaizen, ui: Handlers) -> None:
    state = ChatState()
    stream = ui["respond"]("hello there", state)
    next(stream)  # the first piece is shown; the exchange is not stored yet
    with refused(match="not stored yet"):
        like(ui, state, 1, True)
    with refused(match="not stored yet"):
        like(ui, state, 7, True)
    list(stream)
    assert feedback(kaizen) == []


def test_the_better_answer_goes_to_the_rated_answer_or_else_the_newest(kaizen: Kaizen, ui: Handlers) -> None:
    state = ChatState()
    send(ui, state, "first question")
    send(ui, state, "second question")
    box, state, note, chat = ui["on_correct"]("The newest one, corrected.", state)
    assert box == "" and "An admin will review it" in note and chat["feedback_value"] == [None, "Dislike"]
    like(ui, state, 1, False)
    ui["on_correct"]("The first one, corrected.", state)
    assert sorted(feedback(kaizen)) == [("first question", "down", "The first one, corrected.", "pending"),
                                        ("second question", "down", "The newest one, corrected.", "pending")]


def test_with_auto_approve_a_better_answer_is_used_at_once(kaizen: Kaizen, ui: Handlers) -> None:
    with kaizen.db.write() as s:
        store.set_setting(session=s, key="auto_approve", value=True)
    state = ChatState()
    send(ui, state, "Giờ mở cửa?")
    _, _, note, _ = ui["on_correct"]("8 giờ sáng.", state)
    assert "used right away" in note
    with kaizen.db.session() as s:
        [item] = store.list_knowledge(session=s, enabled_only=True)
    assert (item.question, item.answer) == ("Giờ mở cửa?", "8 giờ sáng.")


def test_a_better_answer_needs_text_and_an_answer(kaizen: Kaizen, ui: Handlers) -> None:
    state = ChatState()
    with refused(match="no answer to correct"):
        ui["on_correct"]("Something.", state)
    send(ui, state, "hello")
    with refused(match="Type the answer"):
        ui["on_correct"]("  ", state)
    assert feedback(kaizen) == []


@pytest.mark.parametrize("text", ["x" * 5000, "8 giờ\x00 sáng", "lone \ud800 surrogate"])
def test_a_better_answer_is_checked_as_the_api_checks_it(kaizen: Kaizen, ui: Handlers, text: str) -> None:
    state = ChatState()
    send(ui, state, "hello")
    with refused(match="limit is 4,000|control characters"):
        ui["on_correct"](text, state)
    assert feedback(kaizen) == []  # nothing stored


def test_a_new_conversation_starts_empty(kaizen: Kaizen, ui: Handlers, fake_engine: FakeEngine) -> None:
    state = ChatState()
    send(ui, state, "My name is An.")
    state, messages, better, note, info = ui["new_conversation"]()
    assert state == ChatState() and better == "" and "new conversation" in note and info == ""
    assert (messages["value"], messages["feedback_value"]) == ([], [])
    send(ui, state, "What is my name?")
    assert [m["role"] for m in fake_engine.history[-1]["messages"]] == ["system", "user"]
    with kaizen.db.session() as s:
        assert len({e.conversation_id for e in store.list_exchanges(session=s)}) == 2


def test_the_size_of_a_long_message_is_shown_in_tokens_before_it_is_sent(kaizen: Kaizen, ui: Handlers) -> None:
    """Issue 13: a 20,000-character paste was cut to 4,000 characters by the box, then refused for the
    context. The box cuts nothing; the count says where the limit is, in tokens, before sending."""
    [box] = [b for b in build_chat_ui(kaizen).blocks.values() if getattr(b, "elem_id", None) == "message"]
    assert box.max_length is None
    assert ui["message_count"]("Xin chào") == ""  # short: nothing to say
    _, limit = kaizen.chat.message_budget("x")
    near = ui["message_count"]("word " * (limit - 10))
    assert near == f"{limit - 10:,} / {limit:,} tokens"
    over = ui["message_count"]("từ " * 5_000)
    assert over.startswith("⚠️ The message is 5,000 tokens; the limit is") and f"{limit:,} tokens" in over
    state = ChatState()
    with refused(match="5,000 tokens"):
        send(ui, state, "từ " * 5_000)
    assert state.turns == []


@pytest.mark.parametrize("first", ["Like", "Dislike"])
def test_clicking_the_chosen_thumb_again_withdraws_the_rating(kaizen: Kaizen, ui: Handlers, first: str) -> None:
    # Gradio 6 sends liked="" when the selected 👍/👎 is clicked again (issue 14: it was stored as 👎).
    state = ChatState()
    send(ui, state, "Mấy giờ mở cửa?")
    state, *_ = like(ui, state, 1, first)
    assert [r[1] for r in feedback(kaizen)] == ["up" if first == "Like" else "down"]
    state, note, _, chat = like(ui, state, 1, "")
    assert "withdrawn" in note and feedback(kaizen) == [] and chat["feedback_value"] == [None]
