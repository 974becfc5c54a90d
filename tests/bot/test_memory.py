"""Tests for the retrieval memory: mechanics with the hashing embedder and fakes, quality with MiniLM and
multilingual e5 (slow)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from bot.memory import (
    XL_FLOOR,
    XL_SCORES,
    E5Embedder,
    HashingEmbedder,
    Hit,
    Memory,
    MemoryItem,
    Recall,
    Thresholds,
    _normalize,
    cross_lingual,
    decide,
    load_cross_embedder,
    load_embedder,
)
from kaizen.errors import InputError
from kaizen.text import fold

GREETING = MemoryItem(1, "Xin chào", "Công ty BICweb kính chào quý khách!", True, 1.0)
HOURS = MemoryItem(2, "Công ty mở cửa lúc mấy giờ?", "Từ 8h00 đến 17h30.", True, 2.0)
CHOREI = MemoryItem(3, "What is CHOREI?", "CHOREI is BICweb's work-management platform.", False, 3.0)


class CountingEmbedder(HashingEmbedder):
    def __init__(self) -> None:
        super().__init__()
        self.texts: list[str] = []

    def encode(self, texts: list[str]) -> np.ndarray:
        self.texts += texts
        return super().encode(texts)


@pytest.fixture
def memory() -> Memory:
    m = Memory(HashingEmbedder())
    m.replace_all([GREETING, HOURS, CHOREI])
    return m


def test_taught_question_answers_verbatim_with_templates_case_and_without_diacritics(memory):
    for text in ["Xin chào", "xin chao", "XIN CHÀO!", "Ê ad ơi, xin chào", "Dạ xin chào ạ"]:
        r = memory.recall(text)
        assert r.source == "memory", text
        assert r.hits[0].item == GREETING
    for text in ["Cho mình hỏi công ty mở cửa lúc mấy giờ?", "cong ty mo cua luc may gio vay"]:
        assert memory.recall(text).hits[0].item == HOURS


def test_non_verbatim_item_is_context_even_when_identical(memory):
    r = memory.recall("Could you tell me what is CHOREI?")
    assert r.source == "rag"
    assert r.hits[0].item == CHOREI


def test_untaught_question_goes_to_the_model():
    m = Memory(None)
    m.replace_all([GREETING, HOURS, CHOREI])
    assert m.recall("Write a poem about the sea") == Recall("model", ())


def test_empty_memory_and_empty_query(memory):
    assert Memory(HashingEmbedder()).recall("Xin chào") == Recall("model", ())
    assert Memory(HashingEmbedder()).search("Xin chào") == []
    for text in ["", "   ", "?!"]:
        assert memory.recall(text) == Recall("model", ())
        assert memory.search(text) == []


def test_remove_stops_serving_at_once(memory):
    memory.remove(GREETING.id)
    assert len(memory) == 2
    assert all(h.item.id != GREETING.id for h in memory.search("Xin chào", k=5))
    assert memory.recall("Xin chào").source == "model"
    memory.remove(12345)  # unknown ids are ignored
    assert len(memory) == 2


def test_upsert_with_a_new_question_leaves_no_stale_entry(memory):
    memory.upsert(MemoryItem(GREETING.id, "Tạm biệt", "Hẹn gặp lại quý khách!", True, 5.0))
    assert len(memory) == 3
    assert all(h.item.id != GREETING.id for h in memory.search("Xin chào", k=5))
    assert memory.recall("tam biet").hits[0].item.answer == "Hẹn gặp lại quý khách!"


def test_replace_all_drops_items_not_given(memory):
    memory.replace_all([CHOREI])
    assert len(memory) == 1
    assert memory.recall("Xin chào").source == "model"


def test_newer_item_for_the_same_question_wins(memory):
    # The newer item has the lower id, so the order cannot come from ids.
    newer = MemoryItem(0, "xin chao", "BICweb xin chào bạn!", True, 10.0)
    memory.upsert(newer)
    assert memory.recall("Xin chào").hits[0].item == newer
    assert [h.item for h in memory.search("Xin chào", k=5)].count(GREETING) == 0
    memory.remove(newer.id)
    assert memory.recall("Xin chào").hits[0].item == GREETING


def test_equal_scores_list_the_newer_item_first():
    m = Memory(None)
    old = MemoryItem(1, "giá gói Pro", "199k", True, 1.0)
    new = MemoryItem(2, "gói Pro giá", "249k", True, 2.0)  # same words, another order
    m.replace_all([new, old])
    hits = m.search("Pro giá gói")
    assert hits[0].score == pytest.approx(hits[1].score)
    assert [h.item for h in hits[:2]] == [new, old]


def test_question_without_words_is_rejected(memory):
    with pytest.raises(InputError, match="no words"):
        memory.upsert(MemoryItem(9, "???", "x", True, 1.0))
    assert len(memory) == 3


def test_item_embeddings_are_cached():
    embedder = CountingEmbedder()
    m = Memory(embedder)
    m.replace_all([GREETING, HOURS])
    embedder.texts.clear()
    m.upsert(CHOREI)
    m.remove(HOURS.id)
    m.replace_all([GREETING, CHOREI])
    assert embedder.texts == ["what is chorei"]


def test_scores_are_in_unit_range_and_best_first(memory):
    hits = memory.search("mấy giờ công ty mở cửa", k=3)
    assert hits[0].item == HOURS
    assert all(0 <= h.score <= 1 for h in hits)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_decide_uses_both_thresholds():
    t = Thresholds(verbatim=0.8, context=0.5)
    fact = MemoryItem(5, "q", "a", False, 1.0)
    assert decide([], t) == Recall("model", ())
    assert decide([Hit(GREETING, 0.9), Hit(HOURS, 0.6)], t) == Recall("memory", (Hit(GREETING, 0.9),))
    assert decide([Hit(GREETING, 0.7), Hit(HOURS, 0.6), Hit(CHOREI, 0.4)], t) == Recall(
        "rag", (Hit(GREETING, 0.7), Hit(HOURS, 0.6))
    )
    assert decide([Hit(fact, 0.95)], t) == Recall("rag", (Hit(fact, 0.95),))
    assert decide([Hit(GREETING, 0.49)], t) == Recall("model", ())


def test_readers_and_a_writer_run_concurrently(memory):
    errors: list[BaseException] = []
    stop = threading.Event()

    def read() -> None:
        try:
            while not stop.is_set():
                r = memory.recall("Xin chào")
                assert r.source in ("memory", "model")
                memory.search("công ty mở cửa")
        except BaseException as e:
            errors.append(e)

    readers = [threading.Thread(target=read) for _ in range(4)]
    for t in readers:
        t.start()
    for n in range(30):
        memory.upsert(MemoryItem(100 + n, f"câu hỏi số {n}", "x", True, float(n)))
        memory.remove(GREETING.id if n % 2 else 100 + n - 1)
        if n % 2 == 0:
            memory.upsert(GREETING)
    stop.set()
    for t in readers:
        t.join()
    assert errors == []
    assert memory.recall("Xin chào").source == "model"  # the last step removed it
    memory.upsert(GREETING)
    assert memory.recall("Xin chào").hits[0].item == GREETING


# ---- the cross-lingual leg, with a fake embedder --------------------------------------------


class TableEmbedder:
    """Fixed unit vectors per normalized text: a fake with the Embedder interface."""

    def __init__(self, table: dict[str, list[float]]) -> None:
        self.table = {t: np.array(v, dtype=np.float32) / np.linalg.norm(v) for t, v in table.items()}
        self.calls = 0

    def encode(self, texts: list[str]) -> np.ndarray:
        self.calls += 1
        return np.stack([self.table[t] for t in texts])


def _vec(cos: float, axis: int, dim: int = 4) -> list[float]:
    """A unit vector whose cosine with the query vector e0 is `cos`, leaning along `axis`."""
    v = [0.0] * dim
    v[0], v[axis] = cos, float(np.sqrt(1 - cos * cos))
    return v


DELIVERY = MemoryItem(10, "Có giao hàng toàn quốc không?", "Có, giao hàng toàn quốc.", True, 1.0)
TRIAL = MemoryItem(11, "Do you offer a free trial?", "Yes, 14 days.", True, 2.0)
WEATHER = MemoryItem(12, "Thời tiết ở Đà Lạt hôm nay thế nào?", "Se lạnh, 16-22°C.", True, 3.0)


def _cross_memory(cosines: dict[int, float], query: str) -> tuple[Memory, TableEmbedder]:
    items = [DELIVERY, TRIAL, WEATHER]
    table = {query: [1.0, 0.0, 0.0, 0.0]}
    for axis, item in enumerate(items, start=1):
        table[_normalize(item.question).embed_text] = _vec(
            cosines.get(item.id, 0.5), axis
        )
    cross = TableEmbedder(table)
    m = Memory(None, cross=cross)
    m.replace_all(items)
    return m, cross


def test_cross_lingual_hit_is_context_never_verbatim():
    m, _ = _cross_memory({DELIVERY.id: 0.95, WEATHER.id: 0.80}, "do you deliver nationwide")
    r = m.recall("Do you deliver nationwide?")
    assert r.source == "rag"
    assert r.hits[0].item == DELIVERY
    assert XL_SCORES[0] <= r.hits[0].score < Thresholds().verbatim


def test_cross_lingual_leg_needs_the_floor_and_a_margin_over_the_next_item():
    # Below the floor.
    m, _ = _cross_memory({DELIVERY.id: XL_FLOOR - 0.01}, "do you deliver nationwide")
    assert m.recall("Do you deliver nationwide?").source == "model"
    # Above the floor, but the next Vietnamese item is as close: e5 cannot tell them apart.
    m, _ = _cross_memory({DELIVERY.id: 0.90, WEATHER.id: 0.89}, "do you deliver nationwide")
    assert m.recall("Do you deliver nationwide?").source == "model"


def test_cross_lingual_leg_ignores_items_in_the_same_language():
    # An English item with a high e5 cosine is judged by BM25 + MiniLM, not by the e5 leg.
    m, _ = _cross_memory({TRIAL.id: 0.99}, "is the free trial long")
    assert all(h.item != TRIAL or h.score < XL_SCORES[0] for h in m.search("Is the free trial long?"))


def test_cross_lingual_leg_defers_to_a_closer_item_in_the_own_language():
    cos = np.array([0.90, 0.95, 0.70])
    other = np.array([True, False, True])
    assert cross_lingual(cos, other) == (None, 0.0)  # 0.90 is more than XL_BIAS below 0.95
    n, score = cross_lingual(np.array([0.90, 0.89, 0.70]), other)
    assert n == 0 and XL_SCORES[0] < score < XL_SCORES[1]
    assert cross_lingual(cos, np.zeros(3, dtype=bool)) == (None, 0.0)


def test_cross_embedder_embeds_items_once_and_skips_exact_questions():
    m, cross = _cross_memory({DELIVERY.id: 0.95}, "do you deliver nationwide")
    calls = cross.calls
    m.upsert(DELIVERY)  # unchanged question: its vector is reused
    assert cross.calls == calls
    assert m.recall("Có giao hàng toàn quốc không?").source == "memory"  # the key matches: no embedding
    assert cross.calls == calls


def test_e5_embedder_caches_and_is_thread_safe():
    class FakeE5:
        def __init__(self) -> None:
            self.batches: list[list[str]] = []
            self.busy = False

        def query(self, texts: list[str]) -> np.ndarray:
            assert not self.busy, "called from two threads at once"
            self.busy = True
            self.batches.append(list(texts))
            out = HashingEmbedder(8).encode(texts)
            self.busy = False
            return out

    fake = FakeE5()
    e5 = E5Embedder(fake)
    a = e5.encode(["xin chào", "hello"])
    b = e5.encode(["hello", "xin chào"])
    assert np.allclose(a[::-1], b) and a.dtype == np.float32
    assert fake.batches == [["xin chào", "hello"]]
    threads = [threading.Thread(target=e5.encode, args=([f"t{n % 7}", "hello"],)) for n in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    embedded = sorted(t for batch in fake.batches for t in batch)
    assert embedded == sorted(["xin chào", "hello"] + [f"t{n}" for n in range(7)])


# ---- the real MiniLM over the eval set -------------------------------------------------------


def _is_vi(text: str) -> bool:
    return any(ord(c) > 127 for c in text)


@pytest.fixture(scope="module")
def eval_set() -> dict:
    return json.loads(resources.files("bot.data").joinpath("memory_eval.json").read_text("utf-8"))


@pytest.fixture(scope="module")
def minilm_memory(eval_set) -> Iterator[Memory]:
    import torch

    # Two torch threads on a busy 2-core machine spin for ~0.7 s per message; one takes ~10 ms.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    m = Memory(load_embedder(), cross=load_cross_embedder())
    m.replace_all(MemoryItem(d["id"], d["question"], d["answer"], d["verbatim"], 0.0) for d in eval_set["items"])
    yield m
    torch.set_num_threads(threads)


def _queries(eval_set: dict, item: dict, field: str) -> list[str]:
    if field == "paraphrases":
        return item["paraphrases"]
    questions = (item["question"], fold(item["question"]))
    return item["variants"] + [t.format(q=q) for t in eval_set["templates"] for q in questions]


def _found_rate(memory: Memory, eval_set: dict, field: str, vi: bool) -> float:
    recalls = [
        (d["id"], memory.recall(q))
        for d in eval_set["items"]
        if _is_vi(d["question"]) == vi
        for q in _queries(eval_set, d, field)
    ]
    return sum(bool(r.hits) and r.hits[0].item.id == want for want, r in recalls) / len(recalls)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("field", "vi", "minimum"),
    # measured: 0.93, 1.00, 0.84, 0.77 (VI paraphrases 0.68 before e5 scored Vietnamese pairs)
    [("variants", True, 0.9), ("variants", False, 0.95), ("paraphrases", True, 0.8), ("paraphrases", False, 0.7)],
)
def test_minilm_finds_taught_items(minilm_memory, eval_set, field, vi, minimum):
    assert _found_rate(minilm_memory, eval_set, field, vi) >= minimum


@pytest.mark.slow
@pytest.mark.parametrize(("vi", "minimum"), [(True, 0.8), (False, 0.9)])  # measured: 0.80, 0.96
def test_minilm_rejects_untaught_questions(minilm_memory, eval_set, vi, minimum):
    untaught = [q for q in eval_set["untaught"] if _is_vi(q) == vi]
    rejected = [minilm_memory.recall(q).source == "model" for q in untaught]
    assert sum(rejected) / len(rejected) >= minimum


@pytest.mark.slow
def test_minilm_never_answers_untaught_or_wrong_item_verbatim(minilm_memory, eval_set):
    for q in eval_set["untaught"] + eval_set["untaught_context_ok"]:
        assert minilm_memory.recall(q).source != "memory", q
    for d in eval_set["items"]:
        for q in d["variants"] + d["paraphrases"]:
            r = minilm_memory.recall(q)
            assert r.source != "memory" or r.hits[0].item.id == d["id"], q


@pytest.mark.slow
def test_minilm_verbatim_and_context_decisions(minilm_memory):
    r = minilm_memory.recall("xin chao")
    assert r.source == "memory"
    assert r.hits[0].item.answer == "Công ty BICweb kính chào quý khách!"
    assert minilm_memory.recall("Chào bạn").source != "memory"
    r = minilm_memory.recall("Thứ Bảy công ty có làm việc không?")  # a non-verbatim item
    assert (r.source, r.hits[0].item.id) == ("rag", 20)
    r = minilm_memory.recall("What's the return policy")  # a paraphrase of a verbatim item
    assert r.source in ("memory", "rag") and r.hits[0].item.id == 9
    assert minilm_memory.recall("What is the capital of France?").source == "model"


# ---- cross-lingual recall with the real e5 (the same memory: MiniLM + BM25 + e5) -------------


def _crosslingual(eval_set: dict, vi_taught: bool) -> list[tuple[int, str]]:
    return [
        (d["id"], q)
        for d in eval_set["items"]
        if _is_vi(d["question"]) == vi_taught
        for q in d.get("crosslingual", [])
    ]


@pytest.mark.slow
@pytest.mark.parametrize(("vi_taught", "minimum"), [(True, 0.75), (False, 0.45)])  # measured: 12/15, 5/10
def test_crosslingual_facts_are_recalled(minilm_memory, eval_set, vi_taught, minimum):
    pairs = _crosslingual(eval_set, vi_taught)
    assert len(pairs) >= 10
    found = [(r := minilm_memory.recall(q)).source != "model" and r.hits[0].item.id == want for want, q in pairs]
    assert sum(found) / len(found) >= minimum


@pytest.mark.slow
@pytest.mark.parametrize(
    ("question", "want"),
    [
        ("What's the weather like in Da Lat today?", 35),  # taught in Vietnamese, asked in English
        ("When was BICweb founded?", 23),
        ("Where is my data stored?", 37),
        ("CHOREI có tích hợp với Slack không?", 29),  # taught in English, asked in Vietnamese
        ("Có dùng thử miễn phí không?", 17),
        ("Dung lượng tải tệp lên tối đa là bao nhiêu?", 44),
    ],
)
def test_crosslingual_examples(minilm_memory, question, want):
    r = minilm_memory.recall(question)
    assert r.source in ("rag", "memory") and r.hits[0].item.id == want


@pytest.mark.slow
def test_crosslingual_out_of_scope_questions_go_to_the_model(minilm_memory, eval_set):
    for q in eval_set["untaught_crosslingual"]:
        assert minilm_memory.recall(q).source == "model", q


@pytest.mark.slow
def test_related_question_about_a_taught_place_is_not_answered_verbatim(minilm_memory):
    assert minilm_memory.recall("Đà Lạt có gì vui?").source != "memory"
    assert minilm_memory.recall("What's fun to do in Da Lat?").source == "model"


# ---- imported facts asked in other words (bench/data/travel_facts.json, issue 13 section 6) ----


@pytest.fixture(scope="module")
def travel(minilm_memory) -> tuple[Memory, list[tuple[int, int, str]]]:
    data = json.loads((Path(__file__).parents[2] / "bench" / "data" / "travel_facts.json").read_text("utf-8"))
    m = Memory(minilm_memory.embedder, cross=minilm_memory.cross)
    m.replace_all(MemoryItem(n, f["question"], f["answer"], False, 0.0) for n, f in enumerate(data["facts"], 1))
    return m, [(n, i, q) for n, f in enumerate(data["facts"], 1) for i, q in enumerate(f["asked"])]


@pytest.mark.slow
@pytest.mark.parametrize(("english", "minimum"), [(False, 0.9), (True, 0.6)])  # measured: 23/24, 11/16
def test_imported_facts_asked_in_other_words_are_found(travel, english, minimum):
    memory, asked = travel
    found = [(r := memory.recall(q)).source == "rag" and r.hits[0].item.id == n
             for n, i, q in asked if (i >= 3) == english]  # the first three wordings of each fact are Vietnamese
    assert sum(found) / len(found) >= minimum


@pytest.mark.slow
@pytest.mark.parametrize(
    ("question", "want"),
    [
        ("Khi nào có tour Sa Pa?", 6),  # question frame ("khi nào có") unexplained: costs little
        ("Tour Sa Pa xuất phát lúc mấy giờ?", 6),  # "xuất phát" for "khởi hành": e5 scores the pair
        ("Đặt tour phải cọc bao nhiêu phần trăm?", 7),
        ("Đi Hạ Long 2 ngày 1 đêm hết bao nhiêu tiền?", 5),  # "2 ngày 1 đêm" is in the answer, not the question
        ("Cho mình xin địa chỉ văn phòng", 1),
        ("Chính sách hoàn tiền khi hủy tour?", 8),
    ],
)
def test_imported_fact_examples(travel, question, want):
    r = travel[0].recall(question)
    assert r.source == "rag" and r.hits[0].item.id == want, r


@pytest.mark.slow
def test_a_topic_word_no_item_explains_still_keeps_the_message_out(minilm_memory):
    # The frame words weigh less, a missing topic word never does ("siêu thị" / "bệnh viện" are in no item).
    assert minilm_memory.recall("Siêu thị đóng cửa lúc mấy giờ?").source == "model"
    assert minilm_memory.recall("Địa chỉ bệnh viện gần nhất ở đâu?").source == "model"
