"""Turn what users taught into training rows, and what the gate must check into probes.

Sources, each row remembering where it came from:
- knowledge items (imported, `kaizen teach`, and approved corrections, which the store turns into
  verbatim knowledge items): SFT rows, one per augmented question variant;
- thumbs-up replies: "up" rows (SFT on the bot's own good answer);
- thumbs-down replies: "down" rows (pushed away from by the trainer's unlikelihood term).

A round's size is bounded whatever the history (TrainConfig budgets): at most `max_new_facts`
facts from the training queue (not learned yet, not parked; oldest first), `replay_facts` learned
facts sampled anew each round (seeded by the round index) so old facts are kept, and
`replay_ratings` ratings (every rating since the last round first, then a sample of older ones).
So a round has at most (max_new_facts + replay_facts) x n_variants + replay_ratings taught rows.
Parked facts are served by the memory only and are not trained. The system prompt on each row is
the one served (persona plus a tone sentence); the tone cycles over the three emotions so that
recall does not depend on the user's mood.

`kaizen export OUT.jsonl` writes the SFT and up rows as chat JSONL, one standalone row a line.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from feedback_db import store
from feedback_db.db import Database
from feedback_db.models import KnowledgeItem, Paraphrase
from kaizen.knowledge_files import question_key
from kaizen.prompts import Persona, build_system_prompt, load_persona, tone_instruction
from kaizen.text import fold
from trainer.augment import clean_question, heldout_questions, variants
from trainer.lora import Example
from trainer.preference import Rated

TONES = ("neutral", "positive", "negative")


@dataclass(frozen=True)
class Fact:
    """A taught question and its answer, as the gate checks it."""

    item_id: int
    question: str
    answer: str
    new: bool  # from the training queue (not learned yet); False: a learned fact, replayed
    attempts: int = 0  # rounds that trained it without learning it


@dataclass
class TrainingSet:
    examples: list[Example]
    facts: list[Fact]
    system_prompt: str
    counts: dict = field(default_factory=dict)
    learned_ids: frozenset[str] = frozenset()  # every learned, unparked fact (str ids, as in RoundMetrics.facts)
    superseded_ids: tuple[int, ...] = ()  # queued items a newer answer to the same question replaced: never trained
    ratings: list[Rated] = field(default_factory=list)  # rated replies for KTO (preference="kto"), oldest first
    # Synthetic (model-written) phrasings kept for the generality check, never trained: item id -> questions.
    synthetic_checks: dict[int, list[str]] = field(default_factory=dict)

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

    def synthetic_paraphrases(self, facts: list[Fact]) -> list[tuple[str, str]]:
        """(synthetic "check" phrasing, answer) of `facts`: model-written, never trained on."""
        return [(q, f.answer) for f in facts for q in self.synthetic_checks.get(f.item_id, [])]


def _synthetic(rows: Sequence[Paraphrase], items: Sequence[KnowledgeItem],
               ) -> tuple[dict[int, list[str]], dict[int, list[str]]]:
    """The synthetic phrasings of `items` as (train, check): item id -> questions. One that reads as a
    held-out phrasing of its item (trainer.augment.HELDOUT_TEMPLATES) is never used: those measure
    generality for every version and must stay unseen."""
    heldout = {i.id: {fold(question_key(q)) for q in heldout_questions(clean_question(i.question))} for i in items}
    train: dict[int, list[str]] = {}
    check: dict[int, list[str]] = {}
    for p in rows:
        if p.item_id in heldout and fold(question_key(p.question)) not in heldout[p.item_id]:
            (train if p.use == "train" else check).setdefault(p.item_id, []).append(clean_question(p.question))
    return train, check


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


T = TypeVar("T")


def _sample(items: Sequence[T], k: int | None, rng: random.Random) -> list[T]:
    """k of `items` drawn with `rng`, in their original order (all of them if k is None or large enough)."""
    if k is None or k >= len(items):
        return list(items)
    return [items[i] for i in sorted(rng.sample(range(len(items)), k))]


def build_training_set(*, db: Database, persona: Persona, n_variants: int = 10, seed: int = 0, round_index: int = 0,
                       max_new_facts: int | None = None, replay_facts: int | None = None,
                       replay_ratings: int | None = None, include_parked: bool = False,
                       replay_variants: int | None = None, preference: str = "kto") -> TrainingSet:
    """A round's training rows within the budgets (None: no limit, as `kaizen export` uses it).

    New facts are the oldest `max_new_facts` of the training queue; `replay_facts` learned facts and
    the older ratings are sampled with a seed that depends on `seed` and `round_index`, so each round
    replays a different sample. Parked facts are left out unless `include_parked`. A new fact gets
    `n_variants` phrasings, a replayed one `replay_variants` (None: as many). The ratings become KTO rows
    (`ratings`) with preference "kto", 👍 SFT and 👎 unlikelihood rows with "unlikelihood", nothing with "off".
    """
    rng = random.Random(f"kaizen-replay:{seed}:{round_index}")
    with db.session() as s:
        # every enabled item is read (a cheap row read) so that a newer answer to the same question wins
        enabled = store.list_knowledge(session=s, enabled_only=True)
        items = _newest_per_question(enabled)
        last = store.last_finished_run(session=s)
        since = last.started_at if last else None
        recent = store.rated_exchanges(session=s, since=since, limit=replay_ratings, newest_first=True) \
            if since is not None else []
        room = None if replay_ratings is None else replay_ratings - len(recent)
        older = store.rated_feedback_ids(session=s, until=since) if room is None or room > 0 else []
        picked = _sample(older, room, rng)
        rated = sorted(recent + store.rated_exchanges(session=s, ids=picked), key=lambda r: r[0].id)
        synthetic_train, synthetic_check = _synthetic(store.list_paraphrases(session=s), items)
    queue = [i for i in items if i.learned_version is None and (include_parked or not i.parked)]
    new_items = queue if max_new_facts is None else queue[:max_new_facts]
    learned = [i for i in items if i.learned_version is not None and (include_parked or not i.parked)]
    replayed = _sample(learned, replay_facts, rng)
    examples: list[Example] = []
    facts: list[Fact] = []
    for item, new in [(i, True) for i in new_items] + [(i, False) for i in replayed]:
        question = clean_question(item.question)
        source = f"knowledge:{item.id}"
        n = n_variants if new or replay_variants is None else replay_variants  # rehearsal needs fewer phrasings
        for i, variant in enumerate(variants(question, n, seed=seed + item.id)):
            examples.append(_row(persona, TONES[i % len(TONES)], variant, item.answer, "sft", source))
        # Model-written phrasings: all of them for a new fact, one for a replayed one (rehearsal).
        for i, variant in enumerate(synthetic_train.get(item.id, [])[:None if new else 1]):
            examples.append(_row(persona, TONES[i % len(TONES)], variant, item.answer, "sft", f"synthetic:{item.id}"))
        facts.append(Fact(item.id, question, item.answer, new, item.train_attempts))
    ups = downs = 0
    ratings: list[Rated] = []
    for fb, ex in rated if preference != "off" else []:
        kind = "up" if fb.rating == "up" else "down"
        row = _row(persona, ex.emotion_label if ex.emotion_label in TONES else "neutral",
                   ex.user_text, ex.bot_text, kind, f"feedback:{fb.id}")
        if preference == "kto":
            ratings.append(Rated(fb.id, row.messages[:-1], ex.bot_text, kind == "up"))
        else:
            examples.append(row)
        ups, downs = ups + (kind == "up"), downs + (kind == "down")
    counts = {
        "knowledge_items": len(items),
        "new_items": len(new_items),
        "queued_items": len(queue),
        "replayed_items": len(replayed),
        "learned_items": len(learned),
        "parked_items": sum(i.parked for i in items),
        "sft_rows": sum(e.kind == "sft" for e in examples),
        "synthetic_rows": sum(e.source.startswith("synthetic:") for e in examples),
        "up_rows": ups if preference == "unlikelihood" else 0,
        "down_rows": downs if preference == "unlikelihood" else 0,
        "kto_desirable": ups if preference == "kto" else 0,
        "kto_undesirable": downs if preference == "kto" else 0,
        "recent_ratings": len(recent),
        "budget": {"max_new_facts": max_new_facts, "replay_facts": replay_facts, "replay_ratings": replay_ratings},
    }
    return TrainingSet(examples=examples, facts=facts, system_prompt=system_prompt(persona), counts=counts,
                       learned_ids=frozenset(str(i.id) for i in learned),
                       superseded_ids=tuple(sorted({i.id for i in enabled if i.learned_version is None and not i.parked}
                                                   - {i.id for i in items})), ratings=ratings,
                       synthetic_checks=synthetic_check)


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
    return export_jsonl(build_training_set(db=db, persona=load_persona(db), include_parked=True,
                                           preference="unlikelihood"), path)  # 👍 replies as chat rows too
