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


class KnowledgeRecall:
    def __init__(self, *, db: Database, memory: Memory):
        self.db = db
        self.memory = memory
        self._lock = threading.Lock()
        self._fingerprint: tuple | None = None
        self._items: dict[int, MemoryItem] = {}

    def sync(self) -> None:
        with self.db.session() as s:
            fingerprint = store.knowledge_fingerprint(session=s)
            if fingerprint == self._fingerprint:
                return
            rows = store.list_knowledge(session=s, enabled_only=True)
        with self._lock:
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

    def recall(self, text: str) -> Recall:
        self.sync()
        return self.memory.recall(text)

    def in_scope(self, text: str) -> bool:
        """Routing by scope (`kaizen.ports.ScopeRouter`): a taught question scores at least the memory's
        calibrated context threshold (bot/memory.py: where unrelated questions stop matching)."""
        return self.recall(text).source != "model"

    def __len__(self) -> int:
        return len(self._items)
