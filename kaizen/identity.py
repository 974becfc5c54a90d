"""The persona as knowledge: identity questions and their answers, in Vietnamese and English.

A 135M model given "You are Mai, created by BICweb" in its system prompt still answers "What is
your name?" with "Mai, a lễn. I am a lễn." (issue 13). The brief's point, that a short persona
makes the bot say who it is, holds when the answers are served word for word: `identity_facts`
turns the persona into question/answer pairs in the usual phrasings, which the retrieval memory
serves like taught items (bot/recall.py adds them to the index, rebuilt whenever the persona
changes, so they are always in step with it). They are not rows of `knowledge_items`: the persona
is their one source, and an admin who teaches an answer to the same question overrides them.
"""

from __future__ import annotations

import re

from kaizen.prompts import Persona
from kaizen.text import fold

# Words that say a message is addressed to the bot: "you"/"your" and Vietnamese "bạn", "cậu", "em"
# (folded: "ban", "cau", "em"), plus "bot" and "ad".
_ADDRESS = re.compile(r"\b(you|your|yours|yourself|u|ur|ya|ban|cau|em|bot|ad)\b")

# (topic, language): phrasings users type. The memory also matches other wordings close to these.
QUESTIONS: dict[tuple[str, str], tuple[str, ...]] = {
    ("name", "en"): ("What is your name?", "What's your name?", "Who are you?", "Tell me your name.",
                     "Hello, who are you?", "Hi, what should I call you?", "May I know your name?"),
    ("name", "vi"): ("Bạn tên gì?", "Bạn tên là gì?", "Tên bạn là gì?", "Bạn là ai?", "Xin chào, bạn là ai?",
                     "Em tên gì?", "Em là ai?", "Mình nên gọi bạn là gì?"),
    ("creator", "en"): ("Who created you?", "Who made you?", "Who built you?", "Who developed you?",
                        "Who is your creator?"),
    ("creator", "vi"): ("Ai tạo ra bạn?", "Ai đã tạo ra bạn?", "Ai làm ra bạn?", "Bạn do ai tạo ra?",
                        "Ai phát triển bạn?", "Ai là người tạo ra bạn?"),
    ("company", "en"): ("Which company are you from?", "What company do you work for?", "Who do you work for?",
                        "Which company made you?", "Tell me about your company."),
    ("company", "vi"): ("Bạn thuộc công ty nào?", "Bạn làm cho công ty nào?", "Công ty của bạn là gì?",
                        "Giới thiệu về công ty của bạn."),
    ("abilities", "en"): ("What can you do?", "What can you help me with?", "How can you help me?"),
    ("abilities", "vi"): ("Bạn làm được gì?", "Bạn có thể làm gì?", "Bạn giúp được gì cho mình?",
                          "Bạn có thể giúp gì cho tôi?"),
}


def addresses_bot(text: str) -> bool:
    """True if `text` speaks to the bot ("What is your name?", "Bạn tên gì?"), not about the user or
    someone else ("What is my name?", "Ai tạo ra Facebook?"): only then may an identity answer serve."""
    return _ADDRESS.search(fold(text).casefold()) is not None


def identity_answers(persona: Persona) -> dict[tuple[str, str], str]:
    """The answer for each (topic, language), from the persona's fields only."""
    name, creator, company = persona.agent_name, persona.creator, persona.company.strip()
    about = f" {company}" if company else ""
    return {
        ("name", "en"): f"I'm {name}, an assistant created by {creator}.",
        ("name", "vi"): f"Mình là {name}, trợ lý ảo do {creator} tạo ra.",
        ("creator", "en"): f"I was created by {creator}.",
        ("creator", "vi"): f"Mình được {creator} tạo ra.",
        ("company", "en"): f"I'm {name}, made by {creator}.{about}",
        ("company", "vi"): f"Mình là {name}, do {creator} tạo ra.{about}",
        ("abilities", "en"): (f"I'm {name}. I can answer your questions, explain things and help you with "
                              "everyday tasks, in English and Vietnamese."),
        ("abilities", "vi"): (f"Mình là {name}. Mình có thể trả lời câu hỏi, giải thích và hỗ trợ bạn trong "
                              "công việc hằng ngày, bằng tiếng Việt và tiếng Anh."),
    }


def identity_facts(persona: Persona) -> list[tuple[str, str]]:
    """(question, answer) pairs: every phrasing of `QUESTIONS` with its topic's answer in its language."""
    answers = identity_answers(persona)
    return [(q, answers[key]) for key, phrasings in QUESTIONS.items() for q in phrasings]
