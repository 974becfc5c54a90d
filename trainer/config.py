"""The knobs of one LoRA training round, and the peft LoraConfig built from them.

The defaults come from first measurements on the embedded SmolLM2-135M model on two CPU cores:
a small LoRA on the MLP of the upper half of the layers, the base model's own answers mixed into
every step as anchor rows, and an early stop as soon as every taught question is recalled exactly.
Against an all-layer r=16 LoRA without anchors (every held-out prompt then answered the taught
sentence) this kept most held-out prompts on topic; see the trainer report for the numbers. Each field carries a help string, as TRL's
`*_config.py` do, so a command line or an admin form can show it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from peft import LoraConfig


def _f(default, help: str):
    return field(default=default, metadata={"help": help})


@dataclass
class TrainConfig:
    lr0: float = _f(2e-3, "Peak learning rate of round 0.")
    gamma: float = _f(0.85, "Decay per round: lr_k = floor + (lr0 - floor) * gamma**k, lower every round.")
    min_lr_ratio: float = _f(
        0.5, "The floor the per-round lr approaches (never reaches), as a fraction of lr0, so late rounds still learn."
    )
    warmup_ratio: float = _f(0.1, "Fraction of max_steps spent warming the learning rate up from 0.")
    rank: int = _f(8, "LoRA rank r.")
    alpha: int = _f(16, "LoRA alpha; the update is scaled by alpha / rank.")
    dropout: float = _f(0.0, "LoRA dropout. 0 keeps the early-stop check identical to greedy decoding.")
    target_modules: tuple[str, ...] = _f(
        ("gate_proj", "up_proj", "down_proj"), "Module names that get a LoRA (MLP-only by default)."
    )
    layers_fraction: float = _f(
        0.5, "Fraction of the transformer layers, counted from the top, that get a LoRA (1.0 = all)."
    )
    max_steps: int = _f(40, "Upper bound on optimizer steps in one round.")
    epochs: int = _f(0, "If > 0, cap the round at this many passes over the taught rows (0 = no cap).")
    batch_size: int = _f(24, "Taught rows (sft/up/down) per step; cover all taught rows when possible.")
    anchors_per_step: int = _f(8, "Anchor rows (base model's own answers) mixed into every step.")
    anchor_weight: float = _f(1.0, "Weight of the anchor rows' loss relative to the taught rows.")
    down_weight: float = _f(0.5, "Weight of the unlikelihood loss on thumbs-down replies.")
    first_token_weight: float = _f(
        3.0, "Extra weight on the first answer token of taught rows (1 = none): it decides between the taught answer and the old one."
    )
    weight_decay: float = _f(0.0, "AdamW weight decay.")
    max_seq_len: int = _f(192, "Rows are cut to this many tokens (the answer end is kept).")
    anchor_max_new_tokens: int = _f(24, "Length of the base model's greedy answer used as an anchor row.")
    seed: int = _f(0, "Seed for LoRA init, sampling and dropout.")
    early_stop_exact: bool = _f(True, "Stop once every probe question is recalled exactly (greedy).")
    check_every: int = _f(2, "Steps between early-stop checks.")
    exact_min_prob: float = _f(
        0.6, "Early stop also needs every reply token at this probability or more, so recall survives bf16 serving."
    )
    min_steps: int = _f(4, "Never stop before this many steps.")
    extra_steps: int = _f(
        0, "Steps still taken after the probes first come out exact. 0: save exactly the state that was checked (measured: 2 more steps flipped the first answer token back)."
    )

    def round_lr(self, round_index: int) -> float:
        """Peak learning rate of round `round_index` (0-based)."""
        if round_index < 0:
            raise ValueError("round_index must be >= 0")
        # Strictly lower every round (the brief), yet never below the floor a new fact needs.
        floor = self.lr0 * self.min_lr_ratio
        return floor + (self.lr0 - floor) * self.gamma**round_index

    def layers_to_transform(self, num_layers: int) -> list[int] | None:
        """Indices of the top layers_fraction of `num_layers` layers, or None for all of them."""
        if self.layers_fraction >= 1.0:
            return None
        count = max(1, round(num_layers * self.layers_fraction))
        return list(range(num_layers - count, num_layers))


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
