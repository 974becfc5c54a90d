"""Two LoRA adapters combined into one compute what peft computes with both active (kaizen/lora_merge.py)."""

import json

import pytest
import torch
from peft import LoraConfig, PeftModel

from kaizen.base_model import load_model
from kaizen.errors import AdapterError
from kaizen.lora_merge import combine_loras, zero_lora
from tests.models import random_adapter

IDS = torch.tensor([[5, 17, 42, 9, 100, 3, 77, 12]])


def _logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(IDS).logits


def _both_active(model_dir, knowledge, preference) -> torch.Tensor:
    model = PeftModel.from_pretrained(load_model(str(model_dir), "float32")[0], str(knowledge), adapter_name="a")
    model.load_adapter(str(preference), adapter_name="b")
    model.base_model.set_adapter(["a", "b"])
    return _logits(model)


def _served(model_dir, path) -> torch.Tensor:
    return _logits(PeftModel.from_pretrained(load_model(str(model_dir), "float32")[0], str(path)))


@pytest.mark.parametrize("second", [
    None,  # Kaizen's own case: both adapters from the round's LoraConfig (the MLP of the upper layers)
    LoraConfig(r=4, lora_alpha=32, target_modules=["q_proj", "v_proj", "gate_proj"], use_rslora=True),
], ids=["same-config", "other-modules-rank-and-rslora"])
def test_the_combined_adapter_computes_both_adapters_at_once(tmp_path, tiny_model_dir, second):
    knowledge = random_adapter(tmp_path / "k", tiny_model_dir, 1)
    preference = random_adapter(tmp_path / "p", tiny_model_dir, 2, lora=second)
    combined = combine_loras([knowledge, preference], tmp_path / "kp")
    expected = _both_active(tiny_model_dir, knowledge, preference)
    base = _logits(load_model(str(tiny_model_dir), "float32")[0])
    assert (expected - base).abs().max() > 0.1  # the adapters change the answer: the comparison means something
    torch.testing.assert_close(_served(tiny_model_dir, combined), expected, atol=1e-4, rtol=1e-4)
    config = json.loads((combined / "adapter_config.json").read_text())
    ranks = 8 + (second.r if second else 8)
    assert config["r"] == config["lora_alpha"] == ranks


def test_one_adapter_alone_is_served_unchanged(tmp_path, tiny_model_dir):
    preference = random_adapter(tmp_path / "p", tiny_model_dir, 3)
    torch.testing.assert_close(_served(tiny_model_dir, combine_loras([preference], tmp_path / "c")),
                               _served(tiny_model_dir, preference), atol=1e-5, rtol=1e-5)


def test_the_zero_adapter_serves_the_base_model(tmp_path, tiny_model_dir):
    zero = zero_lora(tiny_model_dir, tmp_path / "zero")
    torch.testing.assert_close(_served(tiny_model_dir, zero), _logits(load_model(str(tiny_model_dir), "float32")[0]))


@pytest.mark.parametrize(("change", "named"), [
    ({"use_dora": True}, "DoRA"),
    ({"modules_to_save": ["lm_head"]}, "modules_to_save"),
    ({"rank_pattern": {"gate_proj": 4}}, "rank_pattern"),
    ({"bias": "all"}, "bias"),
    ({"peft_type": "IA3"}, "IA3"),
])
def test_an_adapter_that_is_no_plain_lora_is_refused_by_name(tmp_path, tiny_model_dir, change, named):
    odd = random_adapter(tmp_path / "odd", tiny_model_dir, 4)
    config = json.loads((odd / "adapter_config.json").read_text())
    (odd / "adapter_config.json").write_text(json.dumps({**config, **change}))
    with pytest.raises(AdapterError, match=named):
        combine_loras([odd], tmp_path / "out")


def test_missing_files_and_an_empty_list_are_clear_errors(tmp_path, tiny_model_dir):
    with pytest.raises(AdapterError, match="cannot be read"):
        combine_loras([tmp_path / "nothing-here"], tmp_path / "out")
    with pytest.raises(AdapterError, match="no adapter"):
        combine_loras([], tmp_path / "out")
    with pytest.raises(AdapterError, match="hidden_size"):
        zero_lora(tmp_path / "no-model", tmp_path / "zero")
