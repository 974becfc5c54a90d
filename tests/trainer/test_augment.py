"""Tests for trainer.augment: question cleanup, seeded variants, and the 100 x 10 recipe."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kaizen.text import fold
from trainer.augment import (
    HELDOUT_TEMPLATES,
    TRAIN_TEMPLATES,
    augment_rows,
    clean_question,
    heldout_questions,
    variants,
)


@pytest.mark.parametrize(
    ("raw", "cleaned"),
    [
        ("1. giờ mở cửa là mấy giờ", "Giờ mở cửa là mấy giờ?"),
        ("2) Phí ship bao nhiêu?", "Phí ship bao nhiêu?"),
        ("(3) Shop ở đâu", "Shop ở đâu?"),
        ("Câu 3: có giao hàng không", "Có giao hàng không?"),
        ("câu 12. Đổi trả thế nào", "Đổi trả thế nào?"),
        ("Q4: what is CHOREI", "What is CHOREI?"),
        ("Question 5) how do I reset it", "How do I reset it?"),
        ("- Ai là giám đốc", "Ai là giám đốc?"),
        ("  bạn   tên\tgì  ??  ", "Bạn tên gì?"),
        ("Bạn tên gì?!", "Bạn tên gì?"),
        ("Giá bao nhiêu.", "Giá bao nhiêu?"),
        ("Is it free？", "Is it free?"),
        ("xin chào", "Xin chào"),
        ("Cảm ơn nhé!", "Cảm ơn nhé!"),
        ("Giới thiệu về công ty.", "Giới thiệu về công ty."),
        ("1.5 lít là bao nhiêu", "1.5 lít là bao nhiêu?"),
        ("3D printing costs", "3D printing costs"),
        ("BICweb có miễn phí không", "BICweb có miễn phí không?"),
        ("iPhone 15 giá bao nhiêu", "iPhone 15 giá bao nhiêu?"),
        ("   ", ""),
    ],
)
def test_clean_question(raw, cleaned):
    assert clean_question(raw) == cleaned


def test_clean_question_is_idempotent_on_examples():
    for raw in ["1. giờ mở cửa là mấy giờ", "xin chào", "Is it free？ ?", "Câu 3: BICweb?"]:
        once = clean_question(raw)
        assert clean_question(once) == once


def test_fold():
    assert fold("Đường đi Hà Nội, giờ mở cửa?") == "Duong di Ha Noi, gio mo cua?"


def test_variants_are_n_distinct_with_the_cleaned_original_first():
    result = variants("1. giờ mở cửa là mấy giờ", n=10)
    assert len(result) == 10
    assert result[0] == "Giờ mở cửa là mấy giờ?"
    assert len({v.casefold() for v in result}) == 10
    assert result[1] == "gio mo cua la may gio"
    for v in result[1:]:
        assert "giờ mở cửa là mấy giờ?" in v or v == "gio mo cua la may gio"


def test_variants_lowercase_the_question_inside_a_template_except_names():
    assert "Xin hỏi, giờ mở cửa?" in variants("Giờ mở cửa?", n=50, templates=("Xin hỏi, {q}",))
    for question in [
        "CHOREI là gì?",
        "BICweb có miễn phí không?",
        "I forgot my password?",
        "Hà Nội có chi nhánh không?",
    ]:
        assert variants(question, n=2, templates=("Xin hỏi, {q}",), casual=False) == [
            question,
            f"Xin hỏi, {question}",
        ]


def test_variants_are_deterministic_per_seed():
    first = variants("What is CHOREI?", n=10, seed=7)
    assert first == variants("What is CHOREI?", n=10, seed=7)
    assert first != variants("What is CHOREI?", n=10, seed=8)
    assert first[0] == "What is CHOREI?"


def test_variants_stop_when_the_templates_run_out():
    templates = ("Xin hỏi, {q}", "Please tell me: {q}", "XIN HỎI, {q}")
    result = variants("What is CHOREI?", n=10, templates=templates)
    # The third template differs from the first only in case, so it is a duplicate.
    assert sorted(result) == sorted(
        ["What is CHOREI?", "Xin hỏi, what is CHOREI?", "Please tell me: what is CHOREI?"]
    )


def test_casual_variant_only_for_text_with_diacritics_and_only_when_asked():
    assert "gio mo cua" in variants("Giờ mở cửa?", n=30)
    assert "gio mo cua" not in variants("Giờ mở cửa?", n=30, casual=False)
    assert not any(v == v.lower() for v in variants("What is CHOREI?", n=30))


def test_variants_edge_counts():
    assert variants("Hi?", n=0) == []
    assert variants("Hi?", n=1) == ["Hi?"]
    assert variants("   ", n=5) == []


def test_train_and_heldout_templates_are_disjoint():
    assert len(TRAIN_TEMPLATES) >= 15 and len(HELDOUT_TEMPLATES) >= 6
    assert len(set(TRAIN_TEMPLATES)) == len(TRAIN_TEMPLATES)
    train = {t.casefold() for t in TRAIN_TEMPLATES}
    assert not train & {t.casefold() for t in HELDOUT_TEMPLATES}
    for template in TRAIN_TEMPLATES + HELDOUT_TEMPLATES:
        assert template.count("{q}") == 1 and template != "{q}"


def test_heldout_questions_never_appear_in_training_rows():
    rows = [("Câu 1: shop ở đâu", "Số 1 Tràng Tiền."), ("What is CHOREI", "Our morning meeting.")]
    trained = {q.casefold() for q, _ in augment_rows(rows, n=len(TRAIN_TEMPLATES) + 2)}
    heldout = heldout_questions("Câu 1: shop ở đâu")
    assert heldout[0] == "Mình muốn biết shop ở đâu?"
    assert len(heldout) == len(HELDOUT_TEMPLATES)
    assert heldout_questions(" ") == []
    assert not trained & {q.casefold() for q in heldout + heldout_questions("What is CHOREI")}


def test_augment_rows_100_by_10_is_1000_with_answers_unchanged():
    rows = [
        (f"{i}. Sản phẩm số {i} giá bao nhiêu", f"Giá {i}.000đ\nLiên hệ: 0123") for i in range(100)
    ]
    augmented = augment_rows(rows, n=10, seed=3)
    assert len(augmented) == 1000
    for i, (_, answer) in enumerate(rows):
        block = augmented[i * 10 : (i + 1) * 10]
        assert {a for _, a in block} == {answer}
        assert block[0][0] == f"Sản phẩm số {i} giá bao nhiêu?"
        assert len({q.casefold() for q, _ in block}) == 10
    assert augmented == augment_rows(rows, n=10, seed=3)
    assert augmented != augment_rows(rows, n=10, seed=4)


def test_augment_rows_varies_the_template_order_between_rows():
    augmented = augment_rows([("What is A?", "a"), ("What is A?", "a")], n=5)
    assert augmented[:5] != augmented[5:]


@settings(max_examples=200, deadline=None)
@given(
    question=st.text(max_size=80),
    n=st.integers(0, len(TRAIN_TEMPLATES) + 1),
    seed=st.integers(0, 2**32),
)
def test_property_variants(question, n, seed):
    result = variants(question, n=n, seed=seed)
    assert len({v.casefold() for v in result}) == len(result)
    if clean_question(question):
        # Every template gives a distinct phrasing, so n is always reached within this range.
        assert len(result) == n
        assert n == 0 or result[0] == clean_question(question)
    else:
        assert result == []


def test_heldout_phrasings_in_the_questions_own_language_come_first():
    """Generality is measured on the first two: an English question must not be checked as
    "Mình muốn biết who founded X?" (found by the synthetic-paraphrase bench)."""
    assert heldout_questions("Who founded Hoa Sen Travel?")[:2] == [
        "Hey, quick question: who founded Hoa Sen Travel?", "Do you know who founded Hoa Sen Travel?"]
    assert heldout_questions("Số hotline của Hoa Sen Travel là gì?")[:2] == [
        "Mình muốn biết số hotline của Hoa Sen Travel là gì?",
        "Anh/chị cho em hỏi số hotline của Hoa Sen Travel là gì?"]
    assert len(heldout_questions("Who founded Hoa Sen Travel?")) == len(HELDOUT_TEMPLATES)
