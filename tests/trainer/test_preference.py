"""Preference learning from thumbs (trainer/preference.py): KTO rows, weights, the held-out split, the
reward AUC, and a real TRL KTOTrainer run on the tiny random model."""

import pytest
import torch
from safetensors import safe_open

from kaizen.base_model import load_model
from kaizen.errors import InputError
from kaizen.settings import TrainConfig
from trainer.config import lora_config
from trainer.preference import (
    Rated,
    auc,
    auc_difference_se,
    balanced_weights,
    can_train,
    is_heldout,
    kto_records,
    reward_auc,
    reward_scores,
    sequence_logps,
    split_heldout,
    train_preference,
)

SYSTEM = {"role": "system", "content": "You are Kai."}


def _rows(n=8):
    """Short replies rated 👍, long ones 👎: the kind of preference the study hides."""
    rows = []
    for i in range(n):
        prompt = (SYSTEM, {"role": "user", "content": f"hello {i}"})
        good = i % 2 == 0
        reply = "hi there" if good else "hello hello hello hello hello hello hello hello hello"
        rows.append(Rated(feedback_id=i + 1, prompt=prompt, completion=reply, label=good))
    return rows


def test_kto_records_are_trl_unpaired_conversational_rows():
    [row] = kto_records(_rows(1))
    assert row == {"prompt": [SYSTEM, {"role": "user", "content": "hello 0"}],
                   "completion": [{"role": "assistant", "content": "hi there"}], "label": True}


def test_the_rarer_rating_is_weighted_up_as_the_kto_paper_recommends():
    assert balanced_weights(9, 71) == pytest.approx((71 / 9, 1.0))
    assert balanced_weights(10, 5) == (1.0, 2.0)
    assert balanced_weights(4, 4) == (1.0, 1.0)
    assert balanced_weights(0, 5) == (1.0, 1.0)


def test_the_heldout_split_is_fixed_by_rating_id():
    ids = range(1, 2001)
    held = [i for i in ids if is_heldout(i, 0.2)]
    assert 0.17 < len(held) / 2000 < 0.23
    assert held == [i for i in ids if is_heldout(i, 0.2)]  # the same every round
    assert not any(is_heldout(i, 0.0) for i in ids)
    train, heldout = split_heldout(_rows(8), 0.5)
    assert sorted(r.feedback_id for r in train + heldout) == list(range(1, 9))
    assert not {r.feedback_id for r in train} & {r.feedback_id for r in heldout}


def test_auc_is_the_chance_a_liked_reply_outscores_a_disliked_one():
    assert auc([3.0, 1.0, 2.0], [True, False, False]) == 1.0
    assert auc([1.0, 3.0, 2.0], [True, False, False]) == 0.0
    assert auc([2.0, 2.0], [True, False]) == 0.5
    assert auc([1.0, 3.0, 2.0, 0.0], [True, True, False, False]) == 0.75
    assert auc([1.0], [True]) is None


def test_the_auc_difference_has_delongs_standard_error():
    labels = [True, True, False, False]
    # worked by hand: placements of the 👍 rows 1 and 0.5, of the 👎 rows 1 and 0.5 (AUC 0.75) against a
    # scoring that ties everything (0.5 each): each set of differences {0.5, 0} has variance 0.125
    assert auc_difference_se([2.0, 1.0, 0.0, 1.5], [0.0] * 4, labels) == pytest.approx((0.125 / 2 + 0.125 / 2) ** 0.5)
    assert auc_difference_se([2.0, 1.0, 0.0, 1.5], [2.0, 1.0, 0.0, 1.5], labels) == 0.0  # the same scoring
    assert auc_difference_se([1.0, 2.0, 0.0], [0.0] * 3, [True, True, False]) is None  # one 👎: no variance
    # against the textbook form, var(A1) + var(A2) - 2 cov(A1, A2) from the placements' covariance matrices
    import numpy as np
    rng = np.random.default_rng(0)
    labels = [bool(x) for x in rng.integers(0, 2, 30)]
    a, b = rng.normal(size=30), rng.normal(size=30) + np.array(labels)
    pos, neg = [i for i, y in enumerate(labels) if y], [i for i, y in enumerate(labels) if not y]

    def placements(s):
        psi = (s[pos][:, None] > s[neg][None, :]) + 0.5 * (s[pos][:, None] == s[neg][None, :])
        return psi.mean(axis=1), psi.mean(axis=0)

    (a10, a01), (b10, b01) = placements(a), placements(b)
    s10, s01 = np.cov(np.vstack([a10, b10])), np.cov(np.vstack([a01, b01]))
    contrast = np.array([1.0, -1.0])
    expected = (contrast @ s10 @ contrast / len(pos) + contrast @ s01 @ contrast / len(neg)) ** 0.5
    assert auc_difference_se(list(a), list(b), labels) == pytest.approx(float(expected))


def test_can_train_needs_both_ratings_and_enough_rows():
    rows = _rows(6)
    assert can_train(rows, 6) and not can_train(rows, 7)
    assert not can_train([r for r in rows if r.label], 2)
    assert not can_train(rows[:1], 1)


@pytest.fixture
def tiny(tiny_model_dir):
    return load_model(str(tiny_model_dir), "float32")


def test_kto_trains_a_preference_adapter_with_the_base_as_reference(tiny, tmp_path):
    from peft import PeftModel

    model, tok = tiny
    rows = _rows(8)
    probe = tok("hello 1 hi there", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        before = model(probe).logits
    cfg = TrainConfig(kto_lr=5e-3, kto_batch_size=4, kto_max_steps=6, kto_epochs=3)
    seen = []
    out = tmp_path / "preference"
    result = train_preference(model=model, tokenizer=tok, rows=rows, lora=lora_config(cfg, num_layers=2), cfg=cfg,
                              out_dir=out, progress=seen.append)
    assert result.steps == 6 and (result.desirable, result.undesirable) == (4, 4)
    assert [p.step for p in seen] == [1, 2, 3, 4, 5, 6] and len(result.loss_curve) == 6
    assert (out / "adapter_config.json").is_file()
    with safe_open(str(out / "adapter_model.safetensors"), "pt") as f:
        assert any("lora_B" in k and f.get_tensor(k).abs().sum() > 0 for k in f.keys())  # noqa: SIM118
    # The caller's model comes back clean: no LoRA layers, the same outputs.
    assert not isinstance(model, PeftModel) and not any("lora" in n for n, _ in model.named_modules())
    with torch.no_grad():
        assert torch.equal(model(probe).logits, before)
    # Served with the adapter, the implicit reward (policy vs the adapter disabled) ranks 👍 above 👎.
    base_logps = sequence_logps(model, tok, rows, 64)
    tuned = PeftModel.from_pretrained(model, str(out), adapter_name="preference")  # injects LoRA layers in place
    try:
        assert reward_auc(tuned, tok, rows, adapter=None, max_len=64) == 0.5  # the base: every reward is 0
        trained = reward_auc(tuned, tok, rows, adapter="preference", max_len=64)
        assert trained is not None and trained > 0.5
        # Several adapters in one call share the reference pass: each list is that adapter's alone, None's all 0.
        tuned.load_adapter(str(out), adapter_name="again")
        first, none, again = reward_scores(tuned, tok, rows, adapters=["preference", None, "again"], max_len=64)
        assert none == [0.0] * len(rows) and first == pytest.approx(again)
        assert auc(first, [r.label for r in rows]) == trained
        with tuned.disable_adapter():
            ref = sequence_logps(tuned, tok, rows, 64)
        assert ref == pytest.approx(base_logps, abs=1e-4)  # the reference is the base weights
        assert sequence_logps(tuned, tok, rows, 64) != pytest.approx(base_logps, abs=1e-4)
        means = sequence_logps(tuned, tok, rows, 64, per_token=True)  # the AUC's length-normalised reward
        assert all(m > s for m, s in zip(means, sequence_logps(tuned, tok, rows, 64), strict=True))
    finally:
        tuned.unload()


def test_kto_refuses_rows_it_cannot_learn_from(tiny, tmp_path):
    model, tok = tiny
    cfg = TrainConfig()
    only_good = [r for r in _rows(6) if r.label]
    with pytest.raises(InputError, match="both"):
        train_preference(model=model, tokenizer=tok, rows=only_good, lora=lora_config(cfg, num_layers=2), cfg=cfg,
                         out_dir=tmp_path / "p")
