"""The chat tab (Gradio 6 Blocks), served at `/`.

Replies stream in. Every bot message has thumbs up/down (`feedback_options` and `.like`); the
"better answer" box stores a correction for the selected answer (the last one rated, or else the
newest). Each user turn shows a small emotion marker, and a bot turn answered from the
retrieval memory or with retrieved facts shows a badge.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import gradio as gr

from bot.engine_api import Message
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
    """The chatbot's messages: two per turn, so message index // 2 is the turn index."""
    messages: list[Message] = []
    for t in state.turns:
        marker = EMOTION_ICONS.get(t.emotion, "")
        user = f"{t.user}\n\n<sub>{marker} {t.emotion}</sub>" if marker else t.user
        messages.append({"role": "user", "content": user})
        badge = SOURCE_BADGES.get(t.source)
        bot = f"{t.bot}\n\n<sub>{badge}</sub>" if badge and t.exchange_id else t.bot
        messages.append({"role": "assistant", "content": bot})
    return messages


def build_chat_ui(kaizen: Kaizen) -> gr.Blocks:
    def respond(message: str, state: ChatState) -> Iterator[tuple[str | Update, list[Message], ChatState, Update]]:
        if not (message or "").strip():
            yield gr.update(), render(state), state, gr.update()
            return
        try:
            reply = kaizen.chat.start(message=message, history=state.history(),
                                      conversation_id=state.conversation_id, client="ui")
        except KaizenError as exc:
            raise gr.Error(exc.message) from exc
        turn = Turn(user=reply.message, bot="", emotion=reply.emotion.label, source=reply.source)
        state.turns.append(turn)
        try:
            for piece in reply:
                turn.bot += piece
                yield "", render(state), state, gr.update()
        except KaizenError as exc:
            state.turns.pop()
            raise gr.Error(exc.message) from exc
        turn.bot = reply.text
        turn.exchange_id = reply.exchange_id
        state.conversation_id = reply.conversation_id
        yield "", render(state), state, gr.update(value="")

    def _exchange_id(state: ChatState, index: int | tuple[int, ...] | list[int]) -> str:
        """Select the turn of chatbot message `index`; returns its stored exchange's id."""
        i = (index[0] if isinstance(index, (list, tuple)) else index) // 2
        exchange_id = state.turns[i].exchange_id if 0 <= i < len(state.turns) else None
        if exchange_id is None:
            raise gr.Error("That answer is not stored yet; wait for it to finish.")
        state.selected = i
        return exchange_id

    def on_like(state: ChatState, data: gr.LikeData) -> tuple[ChatState, str]:
        exchange_id = _exchange_id(state, data.index)
        rating = "up" if data.liked is True or data.liked == "Like" else "down"
        with kaizen.db.write() as s:
            store.rate_exchange(session=s, exchange_id=exchange_id, rating=rating)
        hint = "Thanks!" if rating == "up" else "Thanks. You can type a better answer below."
        return state, f"Rated 👍 — {hint}" if rating == "up" else f"Rated 👎 — {hint}"

    def on_correct(text: str, state: ChatState) -> tuple[str, ChatState, str]:
        if not (text or "").strip():
            raise gr.Error("Type the answer you wanted first.")
        if not state.turns:
            raise gr.Error("There is no answer to correct yet.")
        try:
            text = check_correction(text)
        except KaizenError as exc:
            raise gr.Error(exc.message) from exc
        index = state.selected if state.selected is not None else len(state.turns) - 1
        exchange_id = _exchange_id(state, index * 2 + 1)
        try:
            with kaizen.db.write() as s:
                fb = store.rate_exchange(session=s, exchange_id=exchange_id, rating="down", correction=text,
                                         auto_approve=kaizen.auto_approve())
                status = fb.status
        except (KaizenError, store.StoreError) as exc:
            raise gr.Error(str(exc)) from exc
        note = "It is used right away." if status == "approved" else "An admin will review it before the bot uses it."
        return "", state, f"Saved your better answer. {note}"

    def new_conversation() -> tuple[ChatState, list[Message], str, str]:
        return ChatState(), [], "", "Started a new conversation."

    with gr.Blocks(title="Kaizen") as ui:
        gr.Markdown("## Kaizen\nA chatbot that learns from you. Rate answers 👍/👎 and type the answer you wanted.")
        state = gr.State(ChatState())
        chatbot = gr.Chatbot(label="Chat", height=480, feedback_options=("Like", "Dislike"), elem_id="chatbot",
                             sanitize_html=True)
        with gr.Row():
            box = gr.Textbox(placeholder="Type a message… / Nhập tin nhắn…", show_label=False, scale=5,
                             max_length=kaizen.settings.max_message_chars, elem_id="message")
            send = gr.Button("Send", variant="primary", scale=1, elem_id="send")
        with gr.Accordion("Better answer", open=True):
            better = gr.Textbox(label="The answer you wanted (for the answer you rated, or the last one)",
                                lines=2, max_length=MAX_CORRECTION_CHARS, elem_id="better")
            submit_better = gr.Button("Submit better answer", elem_id="submit-better")
        status = gr.Markdown("", elem_id="status")
        new = gr.Button("New conversation", size="sm", elem_id="new-conversation")

        for trigger in (box.submit, send.click):
            trigger(respond, [box, state], [box, chatbot, state, status], concurrency_limit=None,
                    show_progress="hidden", api_visibility="private")
        chatbot.like(on_like, [state], [state, status], api_visibility="private")
        submit_better.click(on_correct, [better, state], [better, state, status], api_visibility="private")
        new.click(new_conversation, None, [state, chatbot, better, status], api_visibility="private")
    return ui
