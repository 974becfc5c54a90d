"""Tests for trainer.evaluate: answer normalisation, recall, drift, batched greedy decoding."""

from __future__ import annotations

import pytest

from kaizen.text import normalize_answer
from tests.models import tiny_llama, tiny_tokenizer
from trainer.evaluate import (
    drift,
    exact_recall,
    load_general_prompts,
    locality,
    same_prefix_count,
)
from trainer.generation import generate_answers, generate_ids


@pytest.fixture(scope="module")
def tiny():
    tok = tiny_tokenizer(corpus=None)  # one token per byte: the drift figures below count characters
    return tiny_llama(tok), tok


def test_normalize_answer():
    assert normalize_answer("  “Công ty  BICweb\nkính chào quý khách!” ") == "công ty bicweb kính chào quý khách"
    # NFD input (decomposed diacritics) normalises to the same string as NFC.
    assert normalize_answer("Cha\u0300o ba\u0323n.") == normalize_answer("Chào bạn")
    assert normalize_answer("Paris") != normalize_answer("Pariss")


def test_exact_recall():
    assert exact_recall(["Paris.", "no"], ["paris", "yes"]) == 0.5
    assert exact_recall([], []) == 1.0
    with pytest.raises(ValueError, match="differ in length"):
        exact_recall(["a"], [])


def test_drift_identical_partial_and_different(tiny):
    _, tok = tiny
    base = ["abcd", "wxyz"]
    assert drift(base, base, tok) == 0.0
    assert drift(base, ["zzzz", "aaaa"], tok) == 1.0
    # first answer keeps 2 of 4 tokens, second is identical: 1 - (0.5 + 1) / 2
    assert drift(base, ["abQQ", "wxyz"], tok) == pytest.approx(0.25)
    # a longer answer that starts like the base still counts as drift
    assert drift(["ab"], ["abcd"], tok) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="differ in length"):
        drift(base, ["abcd"], tok)


def test_same_prefix_count(tiny):
    _, tok = tiny
    assert same_prefix_count(["abcdef", "abc"], ["abcdXX", "abc"], tok, tokens=4) == 2
    assert same_prefix_count(["abcdef", "abc"], ["abcdXX", "abd"], tok, tokens=5) == 0


def test_generate_answers_batched_equals_one_by_one(tiny):
    model, tok = tiny
    convs = [[{"role": "user", "content": q}] for q in ["hi", "a much longer question here", "x"]]
    batched = generate_answers(model, tok, convs, max_new_tokens=6, batch_size=8)
    single = generate_answers(model, tok, convs, max_new_tokens=6, batch_size=1)
    assert batched == single
    assert len(batched) == 3 and any(batched)
    assert tok.padding_side == "right"  # restored


def test_general_prompts_split():
    prompts = load_general_prompts()
    anchor, heldout = prompts["anchor"], prompts["heldout"]
    assert len(anchor) >= 20 and len(heldout) >= 12
    assert not set(anchor) & set(heldout)
    assert len(set(anchor)) == len(anchor) and len(set(heldout)) == len(heldout)


def test_locality_is_one_for_the_reference_model_and_counts_each_changed_token(tiny):
    model, tok = tiny
    convs = [[{"role": "user", "content": q}] for q in ["hi", "a much longer question here", "x", "xin chào"]]
    ref = generate_ids(model, tok, convs, max_new_tokens=8)
    assert locality(model, tok, convs, ref) == 1.0
    assert locality(model, tok, convs, ref, batch_size=1) == 1.0  # batching changes nothing
    # A reference whose last token differs: only that position disagrees, the prefix still counts.
    changed = [r[:-1] + [(r[-1] + 1) % len(tok)] for r in ref]
    assert locality(model, tok, convs, changed) == pytest.approx(sum((len(r) - 1) / len(r) for r in ref) / len(ref))
    other = tiny_llama(tok, seed=7)
    assert locality(other, tok, convs, ref) < 0.5
    assert locality(model, tok, convs, [[] for _ in convs]) == 1.0  # nothing to compare
    with pytest.raises(ValueError, match="differ in length"):
        locality(model, tok, convs, ref[:1])


def test_no_conversations_give_no_answers(tiny):
    """transformers 5's batch_decode([]) returns [""]: a round with no routed held-out prompt once
    got one phantom answer and failed on the length mismatch."""
    model, tok = tiny
    assert generate_answers(model, tok, [], 8) == [] and generate_ids(model, tok, [], 8) == []
