"""Turn what users taught into training rows, and what the gate must check into probes.

Sources, each row remembering where it came from:
- knowledge items (imported, `kaizen teach`, and approved corrections, which the store turns into
  verbatim knowledge items): SFT rows, one per augmented question variant;
- thumbs-up replies: "up" rows (SFT on the bot's own good answer);
- thumbs-down replies: "down" rows (pushed away from by the trainer's unlikelihood term).

Every round replays all approved items, not only the new ones, so old facts are kept. The system
prompt on each row is the one served (persona plus a tone sentence); the tone cycles over the
three emotions so that recall does not depend on the user's mood.

`kaizen export OUT.jsonl` writes the SFT and up rows as chat JSONL, one standalone row a line.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from feedback_db import store
from feedback_db.db import Database
from feedback_db.models import KnowledgeItem
from kaizen.knowledge_files import question_key
from kaizen.prompts import Persona, build_system_prompt, load_persona, tone_instruction
from trainer.augment import clean_question, heldout_questions, variants
from trainer.lora import Example

TONES = ("neutral", "positive", "negative")


@dataclass(frozen=True)
class Fact:
    """A taught question and its answer, as the gate checks it."""

    item_id: int
    question: str
    answer: str
    new: bool  # added or changed since the last finished round


@dataclass
class TrainingSet:
    examples: list[Example]
    facts: list[Fact]
    system_prompt: str
    counts: dict = field(default_factory=dict)

    @property
    def new_facts(self) -> list[Fact]:
        return [f for f in self.facts if f.new]

    @property
    def old_facts(self) -> list[Fact]:
        return [f for f in self.facts if not f.new]

    def conversation(self, question: str) -> list[dict]:
        return [{"role": "system", "content": self.system_prompt}, {"role": "user", "content": question}]

    def paraphrases(self, facts: list[Fact]) -> list[tuple[str, str]]:
        """(held-out phrasing, answer): question forms never used for training."""
        return [(q, f.answer) for f in facts for q in heldout_questions(f.question)[:2]]


def system_prompt(persona: Persona, tone: str = "neutral") -> str:
    return build_system_prompt(persona, tone=tone_instruction(tone))


def _row(persona: Persona, tone: str, user: str, answer: str, kind: str, source: str) -> Example:
    return Example(
        messages=(
            {"role": "system", "content": system_prompt(persona, tone)},
            {"role": "user", "content": user},
            {"role": "assistant", "content": answer},
        ),
        kind=kind,
        source=source,
    )


def _newest_per_question(items: Sequence[KnowledgeItem]) -> list[KnowledgeItem]:
    """Two answers to the same question would teach a contradiction: the newer one wins."""
    newest: dict[str, KnowledgeItem] = {}
    for item in items:
        key = question_key(item.question)
        if key not in newest or (item.updated_at, item.id) > (newest[key].updated_at, newest[key].id):
            newest[key] = item
    return sorted(newest.values(), key=lambda i: i.id)


def build_training_set(*, db: Database, persona: Persona, n_variants: int = 10, seed: int = 0,
                       since: dt.datetime | None = None) -> TrainingSet:
    """All approved data as training rows; facts changed after `since` are marked new."""
    examples: list[Example] = []
    facts: list[Fact] = []
    with db.session() as s:
        items = _newest_per_question(store.list_knowledge(session=s, enabled_only=True))
        rated = store.rated_exchanges(session=s)
    for item in items:
        question = clean_question(item.question)
        source = f"knowledge:{item.id}"
        for i, variant in enumerate(variants(question, n_variants, seed=seed + item.id)):
            examples.append(_row(persona, TONES[i % len(TONES)], variant, item.answer, "sft", source))
        facts.append(Fact(item.id, question, item.answer, since is None or item.updated_at > since))
    ups = downs = 0
    for fb, ex in rated:
        kind = "up" if fb.rating == "up" else "down"
        examples.append(_row(persona, ex.emotion_label if ex.emotion_label in TONES else "neutral",
                             ex.user_text, ex.bot_text, kind, f"feedback:{fb.id}"))
        ups, downs = ups + (kind == "up"), downs + (kind == "down")
    counts = {
        "knowledge_items": len(items),
        "new_items": sum(f.new for f in facts),
        "sft_rows": sum(e.kind == "sft" for e in examples),
        "up_rows": ups,
        "down_rows": downs,
    }
    return TrainingSet(examples=examples, facts=facts, system_prompt=system_prompt(persona), counts=counts)


def export_jsonl(training: TrainingSet, path: Path) -> int:
    """Write the SFT and thumbs-up rows as chat JSONL; returns the number of rows written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    n = 0
    with tmp.open("w", encoding="utf-8") as f:
        for e in training.examples:
            if e.kind in ("sft", "up"):
                f.write(json.dumps({"messages": list(e.messages)}, ensure_ascii=False) + "\n")
                n += 1
    tmp.replace(path)
    return n


def export_training_set(*, db: Database, path: Path) -> int:
    """The training set built with the stored persona, written as chat JSONL (`kaizen export`, the
    admin tab's Export); returns the number of rows. A `kaizen.ports.DatasetExporter`."""
    return export_jsonl(build_training_set(db=db, persona=load_persona(db)), path)
