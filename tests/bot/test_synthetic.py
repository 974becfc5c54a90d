"""Synthetic practice data (issue 17, part 2): model-written paraphrases, filtered by the memory,
stored with provenance, listed and removable, trained beside the template variants and measured."""

import pytest

from bot.synthetic import Paraphraser, use_of
from feedback_db import store
from kaizen.prompts import Persona
from kaizen.settings import Settings
from tests.bot.test_admin_api import PASSWORD, RIGHT, api  # noqa: F401 (the admin routes on the fake engine)
from trainer.augment import heldout_questions
from trainer.dataset import build_training_set

pytestmark = pytest.mark.both_databases

HOURS = "Công ty mở cửa lúc mấy giờ?"
PRICE = "Gói CHOREI Pro giá bao nhiêu?"


@pytest.fixture
def settings(tmp_path, settings_db_url) -> Settings:
    """The admin API's settings, with the memory on: it is the paraphrases' filter."""
    return Settings(data_dir=tmp_path / "data", schedule=False, admin_password=PASSWORD, db_url=settings_db_url)


def teach(db):
    with db.write() as s:
        hours = store.add_knowledge(session=s, question=HOURS, answer="Công ty mở cửa lúc 8 giờ sáng.")
        price = store.add_knowledge(session=s, question=PRICE, answer="490.000 đồng mỗi tháng.")
        return hours.id, price.id


def test_the_model_writes_paraphrases_and_the_memory_keeps_only_those_that_map_back(kaizen, api):  # noqa: F811
    hours, price = teach(kaizen.db)
    kaizen.engine.enqueue(
        "1. Mấy giờ công ty mở cửa?\n"  # kept
        "2. Công ty mở cửa lúc mấy giờ?\n"  # the question itself
        "3. Gói CHOREI Pro giá bao nhiêu tiền?\n"  # the memory maps it to the other item
        "4. Công ty thường mở cửa vào lúc mấy giờ?\n"  # kept
        "Hy vọng giúp được bạn!")  # not a question
    r = api.post("/paraphrases", auth=RIGHT, json={"item_ids": [hours], "per_item": 5})
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["items"] == 1 and got["kept"] == 2
    assert [p["question"] for p in got["paraphrases"]] == ["Mấy giờ công ty mở cửa?",
                                                           "Công ty thường mở cửa vào lúc mấy giờ?"]
    assert got["dropped"] == {"the question itself, a repeat, or one deleted before": 1,
                              "the memory maps it elsewhere": 1}
    assert {p["origin"] for p in got["paraphrases"]} == {"synthetic"}
    assert [p["use"] for p in got["paraphrases"]] == [use_of(p["question"]) for p in got["paraphrases"]]
    prompt = kaizen.engine.history[-1]["messages"][-1]["content"]
    assert HOURS in prompt and "đảo ngữ" in prompt  # asked in the question's language, as the brief's pipeline
    listed = api.get("/paraphrases", auth=RIGHT, params={"item_id": hours}).json()["paraphrases"]
    assert [p["id"] for p in listed] == [p["id"] for p in got["paraphrases"]]
    assert api.get("/paraphrases", auth=RIGHT, params={"item_id": price}).json()["paraphrases"] == []

    # Asked again: what is stored is not stored twice.
    kaizen.engine.enqueue("Mấy giờ công ty mở cửa?")
    again = api.post("/paraphrases", auth=RIGHT, json={"item_ids": [hours]}).json()
    assert again["kept"] == 0 and again["dropped"] == {"the question itself, a repeat, or one deleted before": 1}

    # Removable one by one (and not written again), and with their item.
    left = api.delete(f"/paraphrases/{listed[0]['id']}", auth=RIGHT).json()["paraphrases"]
    assert [p["id"] for p in left] == [listed[1]["id"]]
    assert api.delete(f"/paraphrases/{listed[0]['id']}", auth=RIGHT).status_code == 404
    kaizen.engine.enqueue(listed[0]["question"])
    assert api.post("/paraphrases", auth=RIGHT, json={"item_ids": [hours]}).json()["kept"] == 0
    assert api.delete(f"/knowledge/{hours}", auth=RIGHT).status_code == 200
    assert api.get("/paraphrases", auth=RIGHT).json()["paraphrases"] == []


def test_a_paraphrase_in_the_other_language_is_dropped_and_a_cross_lingual_twin_is_no_rival(kaizen, api):  # noqa: F811
    hours, _price = teach(kaizen.db)
    with kaizen.db.write() as s:  # the same fact taught in English: its twin
        twin = store.add_knowledge(session=s, question="What time does the company open?", answer="At 8 a.m.")
    kaizen.engine.enqueue("What time does the company open?\nMấy giờ công ty mở cửa?")
    got = api.post("/paraphrases", auth=RIGHT, json={"item_ids": [hours]}).json()
    assert got["dropped"] == {"in the other language": 1} and got["kept"] == 1
    kaizen.engine.enqueue("When does the company open?")
    got = api.post("/paraphrases", auth=RIGHT, json={"item_ids": [twin.id]}).json()
    assert got["kept"] == 1, got  # the Vietnamese twin may match too: it is not a rival


def test_by_default_every_approved_item_without_paraphrases_is_asked_about(kaizen, api):  # noqa: F811
    teach(kaizen.db)
    with kaizen.db.write() as s:
        store.add_knowledge(session=s, question="Pending?", answer="x", pending=True)
    kaizen.engine.enqueue("Mấy giờ công ty mở cửa?", "CHOREI Pro giá bao nhiêu một tháng?")
    got = api.post("/paraphrases", auth=RIGHT).json()
    assert got["items"] == 2 and got["kept"] == 2  # the pending item is not paraphrased
    assert api.post("/paraphrases", auth=RIGHT).json()["items"] == 0  # each has some now
    assert api.post("/paraphrases", auth=RIGHT, json={"item_ids": [3]}).status_code == 409
    assert api.post("/paraphrases", auth=RIGHT, json={"item_ids": [99]}).status_code == 404
    assert api.post("/paraphrases", auth=RIGHT, json={"per_item": 0}).status_code == 422


def test_without_a_memory_nothing_can_check_a_paraphrase(kaizen, api):  # noqa: F811
    teach(kaizen.db)
    kaizen.recall = None
    r = api.post("/paraphrases", auth=RIGHT)
    assert r.status_code == 422 and "memory is off" in r.json()["error"]["message"]


def test_the_split_is_stable_and_keeps_a_share_for_the_generality_check():
    phrasings = [f"Câu hỏi số {n} là gì?" for n in range(300)]
    uses = [use_of(p) for p in phrasings]
    assert uses == [use_of(p) for p in phrasings]
    assert use_of("Mấy giờ mở cửa?") == use_of("  mấy giờ mở cửa ")  # the folded text decides
    assert 0.25 < uses.count("check") / len(uses) < 0.42


def test_rounds_train_the_train_share_and_check_the_rest_never_a_heldout_phrasing(kaizen):
    hours, _price = teach(kaizen.db)
    heldout = heldout_questions(HOURS)[0]
    train = next(q for q in (f"Cho hỏi {n}: công ty mở cửa lúc mấy giờ?" for n in range(50)) if use_of(q) == "train")
    check = next(q for q in (f"Xin hỏi {n}, mấy giờ công ty mở?" for n in range(50)) if use_of(q) == "check")
    with kaizen.db.write() as s:
        for q in (train, check, heldout):
            store.add_paraphrase(session=s, item_id=hours, question=q, use=use_of(q))
    ts = build_training_set(db=kaizen.db, persona=Persona(), n_variants=3)
    synthetic = [e for e in ts.examples if e.source.startswith("synthetic:")]
    users = [e.messages[1]["content"] for e in ts.examples]
    assert [e.messages[1]["content"] for e in synthetic] == [train]
    assert train in users and check not in users and heldout not in users
    assert ts.counts["synthetic_rows"] == len(synthetic) >= 1
    assert ts.synthetic_checks.get(hours, []) == [check]  # the held-out phrasing is never a check either
    facts = [f for f in ts.facts if f.item_id == hours]
    assert ts.synthetic_paraphrases(facts) == [(check, "Công ty mở cửa lúc 8 giờ sáng.")]


def test_the_paraphraser_refuses_a_silly_count(kaizen):
    with pytest.raises(Exception, match="1 to 20"):
        Paraphraser(kaizen.db, generate=lambda m: "", memory=kaizen.recall).write([], per_item=0)


def test_the_same_fact_taught_in_the_other_language_is_no_rival_but_another_item_in_the_same_one_is(kaizen):
    """`maps_to` with a memory that also returns the cross-lingual twin (the real e5 leg can): the twin
    does not count against a paraphrase, a second item in the paraphrase's own language does."""
    from bot.memory import Hit, MemoryItem, Recall

    en = MemoryItem(1, "What time does the company open?", "At 8 a.m.", False, 0.0)
    vi_twin = MemoryItem(2, HOURS, "Công ty mở cửa lúc 8 giờ sáng.", False, 0.0)
    en_other = MemoryItem(3, "What time does the company close?", "At 5 p.m.", False, 0.0)

    class Scripted:  # the Recaller interface, as KnowledgeRecall
        def __init__(self, *hits: MemoryItem) -> None:
            self.hits = hits

        def recall(self, text: str) -> Recall:
            return Recall("rag", tuple(Hit(item, 0.9 - 0.1 * n) for n, item in enumerate(self.hits)))

    def maps(*hits: MemoryItem) -> bool:
        return Paraphraser(kaizen.db, generate=lambda m: "", memory=Scripted(*hits)).maps_to(
            "When does the company open?", 1)

    assert maps(en) and maps(en, vi_twin)
    assert not maps(en, en_other) and not maps(vi_twin, en)
