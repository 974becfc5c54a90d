"""Synthetic practice data: model-written paraphrases of each taught question.

Our brief's pipeline turns 100 seed Q&A rows into 1,000 with an LLM ("đảo ngữ, đổi từ đồng nghĩa":
reorder the words, use synonyms), beside the template variants the trainer already makes
(trainer/augment.py). `Paraphraser.write` asks a model (the serving one by default, see
`Settings.paraphrase_url` for another) for `per_item` rephrasings of a taught question, in the
question's language, and keeps a line only if

- it is a question of 3 to 200 characters in the question's language, not the question itself or one
  already stored or deleted before (folded), and
- the retrieval memory still maps it to that item and no other (`recall(line)` answers from the
  taught scope, the item first, and no other item in the line's language): a paraphrase the memory
  would send elsewhere teaches the weights a mapping the memory contradicts.

Kept ones are stored with provenance (`paraphrases`, origin "synthetic"); a stable third of them
(by a hash of the folded text) is kept for the generality check and never trained ("check"), the rest
are trained beside the template variants ("train"). The trainer never uses one that reads as a
held-out phrasing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from bot.fallback import language
from bot.memory import Recall
from feedback_db import store
from feedback_db.db import Database
from feedback_db.models import KnowledgeItem
from kaizen.errors import InputError
from kaizen.text import fold, question_key, question_lines

PROMPTS = {
    "vi": ("Viết lại câu hỏi sau theo {n} cách khác nhau, cùng một nghĩa, bằng tiếng Việt (đảo ngữ, đổi từ đồng "
           "nghĩa). Mỗi câu hỏi trên một dòng, kết thúc bằng dấu chấm hỏi.\nCâu hỏi: {question}"),
    "en": ("Rewrite the following question in {n} different ways with the same meaning, in English (change the "
           "word order, use synonyms). One question per line, each ending with a question mark.\n"
           "Question: {question}"),
}
CHECK_SHARE = 3  # one in CHECK_SHARE kept paraphrases is kept for the generality check


class Recaller(Protocol):
    def recall(self, text: str) -> Recall: ...


@dataclass
class ParaphraseReport:
    """What `Paraphraser.write` did: per item, the kept paraphrases; and why lines were dropped."""

    items: int = 0
    kept: dict[int, list[str]] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> lines

    def drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1

    @property
    def total(self) -> int:
        return sum(len(v) for v in self.kept.values())


def use_of(question: str) -> str:
    """"check" for a stable third of phrasings (a hash of the folded text), "train" for the rest."""
    digest = hashlib.sha256(fold(question_key(question)).encode()).digest()
    return "check" if digest[0] % CHECK_SHARE == 0 else "train"


class Paraphraser:
    """Writes, filters and stores synthetic paraphrases. `generate(messages) -> str` is a model's greedy
    chat completion; `memory` the serving side's `KnowledgeRecall` (the filter)."""

    def __init__(self, db: Database, *, generate: Callable[[list[dict[str, str]]], str], memory: Recaller) -> None:
        self.db, self.generate, self.memory = db, generate, memory

    def maps_to(self, text: str, item_id: int) -> bool:
        """Whether the memory answers `text` from the taught scope with item `item_id` first and no other
        item in `text`'s language (the same fact taught in the other language may match too: it is the
        cross-lingual twin, not a rival)."""
        found = self.memory.recall(text)
        if found.source == "model" or not found.hits or found.hits[0].item.id != item_id:
            return False
        lang = language(text)
        return all(language(h.item.question) != lang for h in found.hits[1:])

    def write(self, items: Iterable[KnowledgeItem], *, per_item: int = 5,
              progress: Callable[[int, int], None] | None = None) -> ParaphraseReport:
        """Paraphrase each item's question, keep what passes the filters, and store it. Raises
        InputError for `per_item` out of 1..20."""
        if not 1 <= per_item <= 20:
            raise InputError("Ask for 1 to 20 paraphrases per item.")
        items = list(items)
        report = ParaphraseReport(items=len(items))
        with self.db.session() as s:
            stored = {(p.item_id, fold(question_key(p.question)))
                      for p in store.list_paraphrases(session=s, item_ids=[i.id for i in items], deleted=True)}
        for n, item in enumerate(items, start=1):
            prompt = PROMPTS[language(item.question)].format(n=per_item, question=item.question)
            seen = {fold(question_key(item.question))}
            for line in question_lines(self.generate([{"role": "user", "content": prompt}]))[:per_item]:
                key = fold(question_key(line))
                if key in seen or (item.id, key) in stored:
                    report.drop("the question itself, a repeat, or one deleted before")
                elif language(line) != language(item.question):
                    report.drop("in the other language")
                elif not self.maps_to(line, item.id):
                    report.drop("the memory maps it elsewhere")
                else:
                    report.kept.setdefault(item.id, []).append(line)
                seen.add(key)
            if progress is not None:
                progress(n, len(items))
        with self.db.write() as s:
            for item_id, lines in report.kept.items():
                for line in lines:
                    store.add_paraphrase(session=s, item_id=item_id, question=line, use=use_of(line))
        return report
