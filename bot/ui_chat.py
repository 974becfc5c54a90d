"""The chat tab (Gradio 6 Blocks), served at `/`.

Replies stream in. Every bot message has thumbs up/down (`feedback_options` and `.like`); the
"better answer" box stores a correction for the selected answer (the last one rated, or else the
newest). Under the chat, a line of metadata tells, for the newest answer (or the one just rated),
which adapter version answered, whether its adapter was applied, where the answer came from (the
retrieval memory, taught facts, or the model alone) and the emotion read in the message. It is
not part of the messages, so copying an answer copies only the answer (issue 13).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import gradio as gr

from bot.chat import too_long
from bot.engine_api import Message
from bot.ui_errors import Refusal, refusals_as_warnings
from feedback_db import store
from kaizen.errors import KaizenError
from kaizen.prompts import MAX_CORRECTION_CHARS, check_correction

if TYPE_CHECKING:
    from bot.services import Kaizen

Update = dict[str, Any]  # what gr.update() returns: new properties for an output component

EMOTION_ICONS = {"positive": "🙂", "negative": "🙁", "neutral": "😐\ufe0f"}  # VS16: colour, not DejaVu black
SOURCE_BADGES = {"memory": "🧠 from memory", "rag": "📚 used taught facts"}


@dataclass
class Turn:
    user: str
    bot: str
    emotion: str
    source: str = "model"
    exchange_id: str | None = None
    adapter: str = ""  # the version that answered
    applied: bool = False  # whether its adapter produced the answer
    feedback: str | None = None  # the rating shown under it: "Like", "Dislike" or None


@dataclass
class ChatState:
    conversation_id: str | None = None
    turns: list[Turn] = field(default_factory=list)
    selected: int | None = None  # index into turns of the answer the better-answer box applies to

    def history(self) -> list[Message]:
        out: list[Message] = []
        for t in self.turns:
            if t.exchange_id:
                out += [{"role": "user", "content": t.user}, {"role": "assistant", "content": t.bot}]
        return out


def render(state: ChatState) -> list[Message]:
    """The chatbot's messages, exactly the texts (no badges): two per turn, so message index // 2 is
    the turn index."""
    messages: list[Message] = []
    for t in state.turns:
        messages += [{"role": "user", "content": t.user}, {"role": "assistant", "content": t.bot}]
    return messages


def shown(state: ChatState) -> Update:
    """The chatbot's messages with each answer's rating selected (`feedback_value`, one entry per
    assistant message). Gradio keeps a click's selection only in the message's own component, which a
    re-render replaces: without this, rating one answer or a new answer arriving cleared the others."""
    return gr.update(value=render(state), feedback_value=[t.feedback for t in state.turns])


def reply_info(turn: Turn | None) -> str:
    """The metadata line of one answer: version, adapter applied, source, the message's emotion."""
    if turn is None or not turn.exchange_id:
        return ""
    parts = [f"Answered by **{turn.adapter}**" + (" (adapter applied)" if turn.applied else ""),
             SOURCE_BADGES.get(turn.source, "🤖 the model alone"),
             f"your message read as {EMOTION_ICONS.get(turn.emotion, '')} {turn.emotion}"]
    return " · ".join(parts)


def build_chat_ui(kaizen: Kaizen) -> gr.Blocks:
    def respond(message: str, state: ChatState) -> Iterator[tuple[str | Update, Update, ChatState, Update,
                                                                  Update, str]]:
        if not (message or "").strip():
            yield gr.update(), shown(state), state, gr.update(), gr.update(), ""
            return
        try:
            reply = kaizen.chat.start(message=message, history=state.history(),
                                      conversation_id=state.conversation_id, client="ui")
        except KaizenError as exc:  # refused before anything streamed: the message stays in the box
            raise Refusal(exc.message) from exc
        turn = Turn(user=reply.message, bot="", emotion=reply.emotion.label, source=reply.source)
        state.turns.append(turn)
        try:
            for piece in reply:
                turn.bot += piece
                yield "", shown(state), state, gr.update(), gr.update(), ""
        except KaizenError as exc:
            state.turns.pop()
            raise gr.Error(exc.message) from exc
        turn.bot = reply.text
        turn.exchange_id = reply.exchange_id
        turn.adapter = str(reply.meta.get("adapter_version", ""))
        turn.applied = bool(reply.meta.get("adapter_applied"))
        state.conversation_id = reply.conversation_id
        yield "", shown(state), state, gr.update(value=""), gr.update(value=reply_info(turn)), ""

    def _exchange_id(state: ChatState, index: int | tuple[int, ...] | list[int]) -> str:
        """Select the turn of chatbot message `index`; returns its stored exchange's id."""
        i = (index[0] if isinstance(index, (list, tuple)) else index) // 2
        exchange_id = state.turns[i].exchange_id if 0 <= i < len(state.turns) else None
        if exchange_id is None:
            raise Refusal("That answer is not stored yet; wait for it to finish.")
        state.selected = i
        return exchange_id

    def on_like(state: ChatState, data: gr.LikeData) -> tuple[ChatState, str, str, Update]:
        exchange_id = _exchange_id(state, data.index)
        rated = state.turns[state.selected] if state.selected is not None else None
        # Gradio sends True/"Like", False/"Dislike", or "" when the selected button is clicked again.
        if data.liked in ("", None):
            with kaizen.db.write() as s:
                store.withdraw_rating(session=s, exchange_id=exchange_id)
            if rated is not None:
                rated.feedback = None
            return (state, "Rating withdrawn (with any better answer you typed for it).", reply_info(rated),
                    shown(state))
        rating = "up" if data.liked is True or data.liked == "Like" else "down"
        with kaizen.db.write() as s:
            store.rate_exchange(session=s, exchange_id=exchange_id, rating=rating)
        if rated is not None:
            rated.feedback = "Like" if rating == "up" else "Dislike"
        hint = "Thanks!" if rating == "up" else "Thanks. You can type a better answer below."
        return (state, f"Rated 👍 — {hint}" if rating == "up" else f"Rated 👎 — {hint}", reply_info(rated),
                shown(state))

    def on_correct(text: str, state: ChatState) -> tuple[str, ChatState, str, Update]:
        if not (text or "").strip():
            raise Refusal("Type the answer you wanted first.")
        if not state.turns:
            raise Refusal("There is no answer to correct yet.")
        try:
            text = check_correction(text)
        except KaizenError as exc:
            raise Refusal(exc.message) from exc
        index = state.selected if state.selected is not None else len(state.turns) - 1
        exchange_id = _exchange_id(state, index * 2 + 1)
        try:
            with kaizen.db.write() as s:
                fb = store.rate_exchange(session=s, exchange_id=exchange_id, rating="down", correction=text,
                                         auto_approve=kaizen.auto_approve())
                status = fb.status
        except (KaizenError, store.StoreError) as exc:
            raise Refusal(str(exc)) from exc
        note = "It is used right away." if status == "approved" else "An admin will review it before the bot uses it."
        state.turns[index].feedback = "Dislike"  # a better answer is a 👎 with the answer wanted
        return "", state, f"Saved your better answer. {note}", shown(state)

    def message_count(message: str) -> str:
        """The message's size against the limit, once it is over half of it; a warning when over."""
        if len(message or "") > kaizen.settings.max_message_chars:
            return f"⚠️ {len(message):,} characters: over the {kaizen.settings.max_message_chars:,}-character limit."
        tokens, limit = kaizen.chat.message_budget(message or "")
        if tokens > limit:
            return f"⚠️ {too_long(tokens, limit)}"
        return f"{tokens:,} / {limit:,} tokens" if tokens > limit // 2 else ""

    def new_conversation() -> tuple[ChatState, Update, str, str, str]:
        return ChatState(), gr.update(value=[], feedback_value=[]), "", "Started a new conversation.", ""

    with gr.Blocks(title="Kaizen") as ui:
        gr.Markdown("## Kaizen\nA chatbot that learns from you. Rate answers 👍/👎 and type the answer you wanted.")
        state = gr.State(ChatState())
        chatbot = gr.Chatbot(label="Chat", height=480, feedback_options=("Like", "Dislike"), elem_id="chatbot",
                             sanitize_html=True)
        info = gr.Markdown("", elem_id="reply-info")  # metadata of the newest (or rated) answer, not its text
        with gr.Row():
            # No max_length: the browser would cut a long paste silently. The count below (on every change,
            # typed or pasted) says, before sending, how many tokens the message has against the limit.
            box = gr.Textbox(placeholder="Type a message… / Nhập tin nhắn…", show_label=False, scale=5,
                             elem_id="message")
            send = gr.Button("Send", variant="primary", scale=1, elem_id="send")
        with gr.Accordion("Better answer", open=True):
            better = gr.Textbox(label="The answer you wanted (for the answer you rated, or the last one)",
                                lines=2, max_length=MAX_CORRECTION_CHARS, elem_id="better")
            submit_better = gr.Button("Submit better answer", elem_id="submit-better")
        count = gr.Markdown("", elem_id="message-count")
        status = gr.Markdown("", elem_id="status")
        new = gr.Button("New conversation", size="sm", elem_id="new-conversation")

        for trigger in (box.submit, send.click):
            trigger(refusals_as_warnings(respond), [box, state], [box, chatbot, state, status, info, count],
                    concurrency_limit=None,
                    show_progress="hidden", api_visibility="private")
        box.change(message_count, box, count, trigger_mode="always_last", show_progress="hidden",
                  api_visibility="private")
        chatbot.like(refusals_as_warnings(on_like), [state], [state, status, info, chatbot], api_visibility="private")
        submit_better.click(refusals_as_warnings(on_correct), [better, state], [better, state, status, chatbot],
                            api_visibility="private")
        new.click(new_conversation, None, [state, chatbot, better, status, info], api_visibility="private")
    return ui
