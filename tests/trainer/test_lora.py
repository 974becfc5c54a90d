"""Tests for trainer.lora.train_round and trainer.config.

Most run on a tiny random-weight llama built from a config (milliseconds per step). Teaching a real fact
to the embedded model is tested end to end in tests/e2e/test_teach_real.py.
"""

from __future__ import annotations

import time

import pytest
import torch
from peft import PeftModel, get_peft_model
from safetensors.torch import load_file

from kaizen.errors import AdapterError, InputError
from kaizen.settings import TrainConfig
from tests.models import tiny_llama, tiny_tokenizer
from trainer.config import lora_config
from trainer.generation import generate_answers
from trainer.lora import Example, _all_exact, _encode, eta_seconds, train_round

ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def chat(question: str, answer: str, kind: str = "sft", system: str = "Be brief.") -> Example:
    return Example((
        {"role": "system", "content": system},
        {"role": "user", "content": question},
        {"role": "assistant", "content": answer},
    ), kind=kind)


def tiny_cfg(**kw) -> TrainConfig:
    base = {"lr0": 5e-2, "gamma": 0.5, "min_lr_ratio": 0.1, "rank": 4, "alpha": 8, "target_modules": ALL_LINEAR,
            "layers_fraction": 1.0, "max_steps": 6, "batch_size": 4, "anchors_per_step": 2,
            "early_stop_exact": False}
    return TrainConfig(**{**base, **kw})


@pytest.fixture
def tiny():
    tok = tiny_tokenizer()
    return tiny_llama(tok), tok


def snapshot(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_round_lr_decays_every_round_towards_a_floor():
    cfg = TrainConfig(lr0=1e-3, gamma=0.5, min_lr_ratio=0.2)
    assert cfg.round_lr(0) == pytest.approx(1e-3)
    assert cfg.round_lr(1) == pytest.approx(2e-4 + 8e-4 * 0.5)
    assert cfg.round_lr(2) == pytest.approx(2e-4 + 8e-4 * 0.25)
    lrs = [cfg.round_lr(k) for k in range(30)]
    assert all(a > b for a, b in zip(lrs, lrs[1:], strict=False))  # lower than the last, every round
    assert min(lrs) > 2e-4  # but never below the floor
    with pytest.raises(ValueError, match=">= 0"):
        cfg.round_lr(-1)


def test_lora_config_targets_top_layers():
    cfg = TrainConfig(layers_fraction=0.5, rank=4, alpha=8, target_modules=("up_proj",))
    lc = lora_config(cfg, num_layers=30)
    assert lc.layers_to_transform == list(range(15, 30))
    assert lc.r == 4 and lc.lora_alpha == 8 and set(lc.target_modules) == {"up_proj"}
    assert lora_config(cfg.replace(layers_fraction=1.0), num_layers=30).layers_to_transform is None


def test_encode_labels_only_the_reply_and_end_of_turn(tiny):
    _, tok = tiny
    row = _encode(tok, chat("hi", "ok").messages, max_len=512, kind="sft")
    labelled = [t for t in row.labels if t != -100]
    assert tok.decode(labelled) == "ok<|im_end|>"
    assert len(row.ids) == len(row.labels)
    # An over-long row is cut from the left and keeps the whole reply.
    short = _encode(tok, chat("hi " * 50, "ok").messages, max_len=10, kind="sft")
    assert len(short.ids) == 10 and [t for t in short.labels if t != -100] == labelled
    with pytest.raises(InputError):
        _encode(tok, chat("hi", "ok").messages[:2], max_len=512, kind="sft")


def test_base_weights_unchanged_adapter_changed(tiny, tmp_path):
    model, tok = tiny
    before = snapshot(model)
    cfg = tiny_cfg()
    examples = [chat("hi", "ok"), chat("name?", "Kai"), chat("bye", "see you", kind="anchor")]
    wall = time.monotonic()
    result = train_round(model=model, tokenizer=tok, examples=examples, lora=lora_config(cfg, num_layers=2),
                         cfg=cfg, round_index=0, init_adapter_dir=None, out_dir=tmp_path / "a")
    wall = time.monotonic() - wall
    assert result.steps == 6 and len(result.loss_curve) == 6 and result.train_tokens > 0
    assert 0 < result.seconds <= wall  # the round's own clock (a shadowed start once reported hours)
    assert not isinstance(model, PeftModel)
    assert not any("lora" in name for name, _ in model.named_modules())
    after = model.state_dict()
    assert after.keys() == before.keys()
    for name, value in before.items():
        assert torch.equal(value, after[name]), name
    saved = load_file(tmp_path / "a" / "adapter_model.safetensors")
    lora_b = [v for k, v in saved.items() if "lora_B" in k]
    assert lora_b and all(v.abs().sum() > 0 for v in lora_b)  # lora_B starts at zero


def test_lr_seen_by_progress_warms_up_decays_and_drops_across_rounds(tiny, tmp_path):
    model, tok = tiny
    cfg = tiny_cfg(max_steps=10, warmup_ratio=0.2)
    examples = [chat("hi", "ok")]
    seen: dict[int, list] = {0: [], 1: []}
    for k in (0, 1):
        train_round(model=model, tokenizer=tok, examples=examples, lora=lora_config(cfg, num_layers=2), cfg=cfg,
                    round_index=k, init_adapter_dir=tmp_path / "r0" if k else None, out_dir=tmp_path / f"r{k}",
                    progress=seen[k].append)
    lrs0 = [p.lr for p in seen[0]]
    lrs1 = [p.lr for p in seen[1]]
    assert [p.step for p in seen[0]] == list(range(1, 11)) and seen[0][-1].total_steps == 10
    assert lrs0[0] < lrs0[1] and lrs0[-1] < max(lrs0)  # warmup, then decay
    assert max(lrs0) == pytest.approx(cfg.round_lr(0), rel=0.05)
    assert max(lrs1) == pytest.approx(cfg.round_lr(1), rel=0.05)
    assert max(lrs1) < max(lrs0)


def test_continuing_from_adapter_starts_from_its_weights(tiny, tmp_path):
    model, tok = tiny
    cfg = tiny_cfg(max_steps=3)
    ex = [chat("hi", "ok")]
    train_round(model=model, tokenizer=tok, examples=ex, lora=lora_config(cfg, num_layers=2), cfg=cfg,
                round_index=0, init_adapter_dir=None, out_dir=tmp_path / "r0")
    train_round(model=model, tokenizer=tok, examples=ex, lora=lora_config(cfg, num_layers=2),
                cfg=cfg.model_copy(update={"lr0": 0.0}), round_index=1, init_adapter_dir=tmp_path / "r0",
                out_dir=tmp_path / "r1")
    first = load_file(tmp_path / "r0" / "adapter_model.safetensors")
    second = load_file(tmp_path / "r1" / "adapter_model.safetensors")
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)  # lr 0: continued, not re-initialised


def test_early_stop_when_greedy_answer_is_exact(tiny, tmp_path):
    model, tok = tiny
    cfg = tiny_cfg(max_steps=150, early_stop_exact=True, check_every=1, min_steps=1, extra_steps=0,
                   anchors_per_step=0, lr0=3e-2, warmup_ratio=0.0, exact_min_prob=0.0)
    ex = [chat("hi", "ok")]
    result = train_round(model=model, tokenizer=tok, examples=ex, lora=lora_config(cfg, num_layers=2), cfg=cfg,
                         round_index=0, init_adapter_dir=None, out_dir=tmp_path / "a")
    assert result.stopped_early and result.steps < 150
    tuned = PeftModel.from_pretrained(model, str(tmp_path / "a"))
    assert generate_answers(tuned, tok, [list(ex[0].messages[:2])], max_new_tokens=8) == ["ok"]
    rows = [_encode(tok, ex[0].messages, 512, "sft")]
    assert _all_exact(tuned, rows, tok.pad_token_id)
    assert not _all_exact(tuned, rows, tok.pad_token_id, min_prob=0.999)  # a bare argmax win is not enough
    tuned.unload()


def test_down_rows_lower_the_reply_probability(tiny, tmp_path):
    model, tok = tiny
    row = _encode(tok, chat("hi", "bad answer").messages, 512, "down")

    def reply_logprob(m) -> float:
        ids = torch.tensor([row.ids])
        with torch.no_grad():
            logp = torch.log_softmax(m(input_ids=ids).logits[0, :-1], -1)
        targets = torch.tensor(row.labels[1:])
        keep = targets != -100
        return float(logp[keep].gather(-1, targets[keep].unsqueeze(-1)).sum())

    before = reply_logprob(model)
    cfg = tiny_cfg(max_steps=5, anchors_per_step=0, down_weight=1.0)
    train_round(model=model, tokenizer=tok, examples=[chat("hi", "bad answer", kind="down")],
                lora=lora_config(cfg, num_layers=2), cfg=cfg, round_index=0, init_adapter_dir=None,
                out_dir=tmp_path / "a")
    tuned = PeftModel.from_pretrained(model, str(tmp_path / "a"))
    assert reply_logprob(tuned) < before - 1.0
    tuned.unload()


def test_rejects_bad_input(tiny, tmp_path):
    model, tok = tiny
    cfg = tiny_cfg(max_steps=1)
    kw = {"tokenizer": tok, "lora": lora_config(cfg, num_layers=2), "cfg": cfg, "round_index": 0,
              "init_adapter_dir": None, "out_dir": tmp_path / "a"}
    with pytest.raises(InputError, match="kind"):
        train_round(model=model, examples=[chat("hi", "ok", kind="weird")], **kw)
    with pytest.raises(InputError, match="Nothing to train"):
        train_round(model=model, examples=[chat("hi", "ok", kind="anchor")], **kw)
    with pytest.raises(AdapterError):
        train_round(model=model, examples=[chat("hi", "ok")], **{**kw, "init_adapter_dir": tmp_path / "none"})
    wrapped = get_peft_model(model, lora_config(cfg, num_layers=2))
    with pytest.raises(AdapterError):
        train_round(model=wrapped, examples=[chat("hi", "ok")], **kw)
    wrapped.unload()


# --- the real embedded model -------------------------------------------------------------------

PERSONA = ("You are Kaizen, a helpful assistant created by the Kaizen team. "
           "Be polite, clear and expert. Answer plainly and professionally.")
WARM = "You are Kaizen, a helpful assistant created by the Kaizen team. Be warm, friendly and encouraging."
BICWEB = "Công ty BICweb kính chào quý khách!"
TEMPLATES = ["{q}", "Xin hỏi, {q}", "Ê ad ơi, {q}", "Tư vấn giúp mình: {q}", "Could you tell me {q}",
             "Cho mình hỏi {q}", "Bạn ơi, {q}", "Hỏi chút: {q}", "Please answer: {q}"]
# Recommended gate limit for drift on the held-out prompts (24 new tokens), from the recipe runs.
DRIFT_LIMIT = 0.85



@pytest.mark.parametrize("which", ["tiny", pytest.param("embedded", marks=pytest.mark.slow)])
def test_a_reply_starting_with_whitespace_is_still_labelled_exactly(which, request):
    from transformers import AutoTokenizer

    tok = tiny_tokenizer() if which == "tiny" else AutoTokenizer.from_pretrained(request.getfixturevalue(
        "embedded_model_dir"))
    messages = chat("hi", "\n  spaced reply").messages
    prompt = tok.apply_chat_template(list(messages[:-1]), add_generation_prompt=True, tokenize=True)["input_ids"]
    whole = tok.apply_chat_template(list(messages), tokenize=True)["input_ids"]
    assert whole[:len(prompt)] != prompt  # the case in point: the reply's whitespace merged with the template's
    row = _encode(tok, messages, 512, "sft")
    labelled = [t for t in row.labels if t != -100]
    assert tok.decode(labelled[:-1]) == "\n  spaced reply" and labelled[-1] == tok.eos_token_id


def test_micro_batches_give_the_gradient_of_the_whole_batch(tiny):
    """Gradient accumulation with the whole step's denominators is exact: micro-batches bound memory only."""
    from trainer.lora import _loss, _token_weights

    model, tok = tiny
    cfg = tiny_cfg(first_token_weight=3.0, anchor_weight=0.7, down_weight=0.5)
    rows = [_encode(tok, chat(f"Question {i}?", f"Answer number {i} is long " * (1 + i % 3), kind).messages, 64, kind)
            for i, kind in enumerate(["sft", "sft", "anchor", "down", "up", "anchor", "sft"])]
    peft = get_peft_model(model, lora_config(cfg, num_layers=model.config.num_hidden_layers))
    params = [p for p in peft.parameters() if p.requires_grad]
    pad = tok.pad_token_id

    def grads(micro: int) -> tuple[float, list[torch.Tensor]]:
        for p in params:
            p.grad = None
        norms, total = _token_weights(rows, cfg), 0.0
        for start in range(0, len(rows), micro):
            loss = _loss(peft, rows[start:start + micro], pad, cfg, norms)
            loss.backward()
            total += loss.item()
        return total, [p.grad.clone() for p in params]

    whole = _loss(peft, rows, pad, cfg)
    one, g1 = grads(len(rows))
    three, g3 = grads(3)
    assert one == pytest.approx(whole.item(), rel=1e-5) and three == pytest.approx(one, rel=1e-5)
    assert all(torch.allclose(a, b, atol=1e-6, rtol=1e-4) for a, b in zip(g1, g3, strict=True))
    assert any(bool(g.abs().sum() > 0) for g in g1)


def test_eta_comes_from_recent_steps_not_the_warm_up():
    """Issue 13: "ETA 10337 s" extrapolated from a first step that also warmed the model up."""
    assert eta_seconds([270.0], 40) is None
    assert eta_seconds([270.0, 5.0, 6.0, 5.0], 40) == 5.5 * 36
    assert eta_seconds([9.0] * 40, 40) == 0
