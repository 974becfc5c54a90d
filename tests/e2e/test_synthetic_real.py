"""Synthetic paraphrases written by the real embedded model and filtered by the real memory (slow).

Two facts, one Vietnamese and one English, are taught into a fresh data directory; the serving side
(real engine, real MiniLM + e5 memory) paraphrases each with `Paraphraser`, five lines asked per item.
The mechanics are checked line by line against an independent replay of the filter: the model was
asked once per item in the question's language; every question line it wrote (up to five per item)
is either kept or dropped for a known reason; a kept line maps back to its own item alone under the
real memory and is stored with origin "synthetic" and the train/check use of `bot.synthetic.use_of`.

SmolLM2-135M-Instruct barely paraphrases (measured: gibberish for the Vietnamese prompt, the question
itself for the English one, so nothing is kept), so a second test gives the real memory a scripted
model's list with known true paraphrases, the other item's question, an untaught question and a
repeat, and checks what it keeps and stores.
"""

from __future__ import annotations

import pytest

from bot.admin_service import PARAPHRASE_TOKENS
from bot.engine_api import GenParams
from bot.fallback import language
from bot.services import Kaizen, build_services
from bot.synthetic import Paraphraser, use_of
from feedback_db import store
from feedback_db.models import KnowledgeItem
from kaizen.settings import Settings
from kaizen.text import fold, question_key, question_lines
from tests.fakes import FakeEngine

pytestmark = pytest.mark.slow


def _teach(kz: Kaizen) -> list[KnowledgeItem]:
    """FACTS taught as approved knowledge (as `kaizen teach` stores them); the items, detached."""
    with kz.db.write() as s:
        for question, answer in FACTS:
            store.add_knowledge(session=s, question=question, answer=answer, origin="teach", verbatim=True)
    with kz.db.session() as s:
        items = store.list_knowledge(session=s, enabled_only=True)
        for item in items:
            s.expunge(item)
    return items

FACTS = [
    ("Văn phòng BICweb ở đâu?", "Văn phòng BICweb ở số 12 phố Duy Tân, Hà Nội."),
    ("What is the BICweb support email?", "Write to hotro@bicweb.vn for support."),
]
PER_ITEM = 5
REPEAT, ELSEWHERE = "the question itself, a repeat, or one deleted before", "the memory maps it elsewhere"
OTHER = "in the other language"


def test_real_model_paraphrases_are_kept_only_when_the_real_memory_maps_them_back(tmp_path, embedded_model_dir):
    kz = build_services(Settings(data_dir=tmp_path / "data", model=str(embedded_model_dir), memory=True))
    try:
        assert kz.recall is not None
        items = _teach(kz)
        asked: list[str] = []
        written: list[str] = []

        def generate(messages: list[dict[str, str]]) -> str:
            asked.append(messages[-1]["content"])
            text = kz.engine.generate(messages, GenParams(max_new_tokens=PARAPHRASE_TOKENS))
            written.append(text)
            return text

        paraphraser = Paraphraser(kz.db, generate=generate, memory=kz.recall)
        report = paraphraser.write(items, per_item=PER_ITEM)
        with kz.db.session() as s:
            stored = store.list_paraphrases(session=s)
            stored_rows = [(p.item_id, p.question, p.origin, p.use) for p in stored]

        for item, text in zip(items, written, strict=True):
            print(f"\n#{item.id} {item.question!r}: the model wrote {text!r}")
            print(f"  kept: {report.kept.get(item.id, [])}")
        print(f"dropped: {report.dropped}")

        # The model was asked once per item, in the item's language, for five lines.
        assert len(asked) == len(items) == 2
        assert all(item.question in prompt and str(PER_ITEM) in prompt for item, prompt in zip(items, asked,
                                                                                                strict=True))
        assert "tiếng Việt" in asked[0] and "in English" in asked[1]
        assert report.items == 2

        # An independent replay of the filter, line by line: each judged line is kept or has a reason.
        expected_kept: dict[int, list[str]] = {}
        expected_dropped: dict[str, int] = {}
        judged = 0
        for item, text in zip(items, written, strict=True):
            seen = {fold(question_key(item.question))}
            for line in question_lines(text)[:PER_ITEM]:
                judged += 1
                key = fold(question_key(line))
                if key in seen:
                    reason: str | None = REPEAT
                elif language(line) != language(item.question):
                    reason = OTHER
                elif not paraphraser.maps_to(line, item.id):
                    reason = ELSEWHERE
                else:
                    reason = None
                    expected_kept.setdefault(item.id, []).append(line)
                if reason is not None:
                    expected_dropped[reason] = expected_dropped.get(reason, 0) + 1
                seen.add(key)
        assert judged > 0, f"the model wrote no question line at all: {written}"
        assert report.total + sum(report.dropped.values()) == judged
        assert set(report.dropped) <= {REPEAT, ELSEWHERE, OTHER}
        assert report.dropped == expected_dropped
        assert report.kept == expected_kept

        # Every kept line maps back to its own item alone under the real memory, and is stored as synthetic
        # with the use use_of gives it; nothing else was stored.
        kept = [(item_id, line) for item_id, lines in report.kept.items() for line in lines]
        for item_id, line in kept:
            assert paraphraser.maps_to(line, item_id), (item_id, line, kz.recall.recall(line))
            other = next(i.id for i in items if i.id != item_id)
            assert not paraphraser.maps_to(line, other)
        assert sorted(stored_rows) == sorted((i, line, "synthetic", use_of(line)) for i, line in kept)
        assert {use for *_, use in stored_rows} <= {"train", "check"}
    finally:
        kz.close()


# A scripted model's lists: two true paraphrases, the other item's question, an untaught question, a
# repeat of the taught question or of a line before, and one line beyond the five asked for (ignored).
SCRIPTED = {
    FACTS[0][0]: ("1. Văn phòng của BICweb nằm ở đâu?\n2. BICweb có văn phòng ở đâu?\n"
                  "3. What is the BICweb support email?\n4. Thủ đô của Pháp là gì?\n5. Văn phòng BICweb ở đâu?\n"
                  "6. Địa chỉ văn phòng BICweb là gì?"),
    FACTS[1][0]: ("Sure! Here they are:\n- How can I email BICweb support?\n- What is the support email of BICweb?\n"
                  "- How can I email BICweb support?\n- Văn phòng BICweb ở đâu?\n- What is the capital of France?"),
}


def test_the_real_memory_keeps_true_paraphrases_and_drops_the_others(tmp_path):
    kz = build_services(Settings(data_dir=tmp_path / "data", memory=True), engine=FakeEngine())
    try:
        assert kz.recall is not None
        items = _teach(kz)
        vi, en = (i.id for i in items)

        def scripted(messages: list[dict[str, str]]) -> str:
            return next(text for question, text in SCRIPTED.items() if question in messages[-1]["content"])

        paraphraser = Paraphraser(kz.db, generate=scripted, memory=kz.recall)
        report = paraphraser.write(items, per_item=PER_ITEM)
        print(f"kept: {report.kept}; dropped: {report.dropped}")
        assert report.kept == {vi: ["Văn phòng của BICweb nằm ở đâu?", "BICweb có văn phòng ở đâu?"],
                               en: ["How can I email BICweb support?", "What is the support email of BICweb?"]}
        # The other item's question is in the other language; the untaught ones map nowhere.
        assert report.dropped == {OTHER: 2, ELSEWHERE: 2, REPEAT: 2}
        assert report.total + sum(report.dropped.values()) == 10  # five judged lines per item, the sixth ignored
        with kz.db.session() as s:
            stored = sorted((p.item_id, p.question, p.origin, p.use) for p in store.list_paraphrases(session=s))
        assert stored == sorted((i, line, "synthetic", use_of(line)) for i, lines in report.kept.items()
                                for line in lines)
        assert all(paraphraser.maps_to(line, i) for i, line, *_ in stored)

        # Written again: every kept line is already stored, so nothing new is kept or stored.
        again = paraphraser.write(items, per_item=PER_ITEM)
        assert again.kept == {} and again.dropped == {OTHER: 2, ELSEWHERE: 2, REPEAT: 6}
        with kz.db.session() as s:
            assert len(store.list_paraphrases(session=s)) == len(stored)
    finally:
        kz.close()
