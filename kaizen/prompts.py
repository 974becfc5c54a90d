"""The persona: who the bot says it is, and the system prompt built from it.

From the brief: give the bot an agent name, a creator and company information, and an expert,
polite style. The prompt is kept short on purpose: a 135M model attends poorly to long system
messages, and every token of it is re-read for every reply. The persona lives in the `settings`
table (key "persona") and is edited from the admin tab.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from feedback_db import store
from feedback_db.db import Database
from kaizen.errors import InputError

Message = dict[str, str]  # a chat message: {"role": "system" | "user" | "assistant", "content": text}

SETTING_KEY = "persona"
TONES = MappingProxyType({
    "negative": "The user seems upset: reply calmly, with empathy, and keep it brief.",
    "positive": "The user is in a good mood: reply warmly.",
    "neutral": "Reply in a plain, professional tone.",
})

MAX_FIELD_CHARS = 1000
# Control characters other than \t \n \r, and lone surrogates (valid in JSON escapes and Python
# strings): the tokenizer cannot encode them. Messages, corrections and the persona (part of every
# prompt) are all checked against this one pattern.
INVALID_CHARS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")

MAX_CORRECTION_CHARS = 4000  # longest answer a user or an admin may teach


def check_correction(text: str) -> str:
    """The taught answer (a user's better answer, an admin's edit), stripped, or InputError: empty,
    longer than MAX_CORRECTION_CHARS characters, or holding control/invalid characters. The chat
    tab, the HTTP API and the admin review all check corrections with this one function."""
    if INVALID_CHARS.search(text):
        raise InputError("The answer contains control characters (such as NUL) or invalid characters; "
                         "please remove them.")
    if len(text) > MAX_CORRECTION_CHARS:
        raise InputError(f"The answer is {len(text):,} characters; the limit is {MAX_CORRECTION_CHARS:,}.")
    text = text.strip()
    if not text:
        raise InputError("The answer is empty.")
    return text


@dataclass(frozen=True)
class Persona:
    agent_name: str = "Kaizen"
    creator: str = "the Kaizen team"
    company: str = ""
    style: str = "Be polite, clear and expert, like an experienced practitioner. Keep answers short."

    @classmethod
    def from_dict(cls, data: dict | None) -> Persona:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: str(v) for k, v in (data or {}).items() if k in known})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def validated(self) -> Persona:
        if not self.agent_name.strip():
            raise InputError("The agent name cannot be empty.")
        for field in dataclasses.fields(self):
            if len(getattr(self, field.name)) > MAX_FIELD_CHARS:
                raise InputError(f"The persona's {field.name} is longer than {MAX_FIELD_CHARS} characters.")
            if INVALID_CHARS.search(getattr(self, field.name)):
                raise InputError(f"The persona's {field.name} contains control or invalid characters.")
        return dataclasses.replace(self, **{f.name: getattr(self, f.name).strip() for f in dataclasses.fields(self)})


def tone_instruction(label: str) -> str:
    """One short sentence for the system prompt that sets the reply's tone for this emotion."""
    try:
        return TONES[label]
    except KeyError:
        raise ValueError(f"Unknown emotion label {label!r}; expected one of {sorted(TONES)}.") from None


def load_persona(db: Database) -> Persona:
    """The persona stored in the `settings` table, or the default one."""
    with db.session() as s:
        return Persona.from_dict(store.get_setting(session=s, key=SETTING_KEY))


CONTEXT_RULE = "Answer from the context given with the question; it overrides anything you remember."


def build_system_prompt(persona: Persona, *, tone: str = "", with_context: bool = False) -> str:
    """The system message: identity, company, style, and the tone for this message.

    With retrieved facts, one more sentence says the context given with the question wins over
    what the model remembers (retrieval wins over the weights for facts).
    """
    parts = [f"You are {persona.agent_name}, a helpful assistant created by {persona.creator}."]
    if persona.company:
        parts.append(persona.company)
    if persona.style:
        parts.append(persona.style)
    if tone:
        parts.append(tone)
    if with_context:
        parts.append(CONTEXT_RULE)
    return " ".join(parts)


def with_context(message: str, facts: Sequence[str]) -> str:
    """The user turn with retrieved facts in front of the question.

    Measured on the 135M model with five taught facts: the context in the user turn was used in
    5 of 5 answers, the same facts in a system-prompt block in 3 of 5.
    """
    if not facts:
        return message
    return "Context: " + "\n".join(facts) + "\n\n" + message


def budget_warning(prompt: str, count_tokens: Callable[[str], int], budget: int) -> str | None:
    """A warning if the system prompt is over the token budget, else None."""
    n = count_tokens(prompt)
    if n > budget:
        return (
            f"The system prompt is {n} tokens, over the budget of {budget}. "
            "Long system prompts slow every reply; shorten the company info or style."
        )
    return None
