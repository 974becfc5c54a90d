"""The peft LoraConfig built from the round's knobs (`kaizen.settings.TrainConfig`).

The defaults come from first measurements on the embedded SmolLM2-135M model on two CPU cores:
a small LoRA on the MLP of the upper half of the layers, the base model's own answers mixed into
every step as anchor rows, and an early stop as soon as every taught question is recalled exactly.
Against an all-layer r=16 LoRA without anchors (every held-out prompt then answered the taught
sentence) this kept most held-out prompts on topic; see the trainer report for the numbers. Each
field carries a help string, as TRL's `*_config.py` do, so a command line or an admin form can show
it.
"""

from __future__ import annotations

from peft import LoraConfig

from kaizen.settings import TrainConfig


def lora_config(cfg: TrainConfig, *, num_layers: int) -> LoraConfig:
    """The peft LoraConfig for `cfg` on a model with `num_layers` transformer layers
    (model.config.num_hidden_layers); built outside train_round and passed in (TRL's scripts/sft.py)."""
    return LoraConfig(
        r=cfg.rank,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=list(cfg.target_modules),
        layers_to_transform=cfg.layers_to_transform(num_layers),
        bias="none",
        task_type="CAUSAL_LM",
    )
