"""Keeps the retrieval memory in step with the `knowledge_items` table.

Before each lookup a cheap query (item count and newest update time) tells whether anything
changed, in this process or another one (`kaizen import`, an admin approving a correction).
Unchanged questions keep their cached embeddings, so a newly approved answer is served on the very
next message, and a disabled or deleted item is gone from the index before it could be served.
"""

from __future__ import annotations

import threading

from bot.memory import Memory, MemoryItem, Recall
from feedback_db import store
from feedback_db.db import Database
from kaizen.identity import addresses_bot, identity_facts
from kaizen.prompts import Persona, load_persona

# Identity phrasings said to the bot, not in kaizen.identity.QUESTIONS, score 0.65-1.0 against them in
# their own index; other questions said to the bot ("How old are you?", "Em tên là An.") much less
# (tests/bot/test_identity.py holds both lists).
IDENTITY_VERBATIM = 0.6


class KnowledgeRecall:
    """The memory over the enabled knowledge items and, with `identity`, the persona's identity
    answers (`kaizen.identity`) in a small index of their own: they never compete with taught items
    in the memory's calibrated ranking (its cross-lingual leg compares a message with the items of
    its own language), and they answer only a message said to the bot. A taught answer to the same
    question (a verbatim match) wins over them."""

    def __init__(self, *, db: Database, memory: Memory, identity: bool = True):
        self.db = db
        self.memory = memory
        # Identity questions are all question frame ("Who are you?"): every word counts in full.
        self.identity = Memory(memory.embedder, cross=None, frame_weight=1.0) if identity else None
        self._lock = threading.Lock()
        self._fingerprint: tuple | None = None
        self._persona: Persona | None = None
        self._items: dict[int, MemoryItem] = {}

    def sync(self) -> None:
        persona = load_persona(self.db) if self.identity is not None else None
        with self.db.session() as s:
            fingerprint = store.knowledge_fingerprint(session=s)
            if fingerprint == self._fingerprint and persona == self._persona:
                return
            rows = store.list_knowledge(session=s, enabled_only=True) if fingerprint != self._fingerprint else None
        with self._lock:
            if rows is not None:
                fresh = {
                    r.id: MemoryItem(id=r.id, question=r.question, answer=r.answer, verbatim=r.verbatim,
                                     updated=r.updated_at.timestamp())
                    for r in rows
                    if self.memory.indexable(r.question)  # a question of only punctuation cannot be matched
                }
                if fresh != self._items:
                    # One rebuild for any number of changes; vectors of unchanged questions are reused.
                    self.memory.replace_all(fresh.values())
                self._items = fresh
                self._fingerprint = fingerprint
            if self.identity is not None and persona is not None and persona != self._persona:
                # Negative ids: they are not rows of knowledge_items, the persona is their one source.
                self.identity.replace_all(MemoryItem(id=-n, question=q, answer=a, verbatim=True, updated=0.0)
                                          for n, (q, a) in enumerate(identity_facts(persona), start=1))
                self._persona = persona

    def recall(self, text: str) -> Recall:
        self.sync()
        found = self.memory.recall(text)
        if self.identity is None or found.source == "memory" or not addresses_bot(text):
            return found
        # Said to the bot ("you", "bạn"): "What is my name?" and "Ai tạo ra Facebook?" never get here.
        hits = self.identity.search(text, k=1)
        if hits and hits[0].score >= IDENTITY_VERBATIM:
            return Recall("memory", (hits[0],))
        return found

    def in_scope(self, text: str) -> bool:
        """Routing by scope (`kaizen.ports.ScopeRouter`): a taught question scores at least the memory's
        calibrated context threshold (bot/memory.py: where unrelated questions stop matching)."""
        return self.recall(text).source != "model"

    def __len__(self) -> int:
        """The number of taught items indexed (identity answers not counted)."""
        return len(self._items)
