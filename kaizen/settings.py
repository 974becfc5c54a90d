"""The one settings object, built at the edge (flags, then KAIZEN_* variables, then defaults).

Nothing reads the environment anywhere else: `launch.py` builds a `Settings` and passes it
down. Every field has a help string, which the command line and the README reuse.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from kaizen.errors import InputError


def _f(default: Any, help: str, **kw) -> Any:
    return field(default=default, metadata={"help": help, **kw})


@dataclass(frozen=True)
class Settings:
    data_dir: Path = _f(Path("kaizen-data"), "Where the database, converted model, adapters and exports live.")
    db_url: str = _f("", "SQLAlchemy URL of the database; empty means sqlite in DATA_DIR/kaizen.db.")
    model: str = _f("embedded", "Base model: 'embedded' (packaged SmolLM2-135M-Instruct), a local directory, or a cached HF id.")
    dtype: str = _f("bfloat16", "Runtime dtype for chat: bfloat16 (measured 1.6x faster on CPU) or float32.")
    host: str = _f("127.0.0.1", "Address the server listens on.")
    port: int = _f(7860, "Port the server listens on.")
    schedule: bool = _f(True, "Run the scheduled training job (serve --no-schedule turns it off).")
    admin_password: str = _f("", "Admin password for /admin; empty: serve generates one and prints it once.")
    max_message_chars: int = _f(4000, "Longest user message accepted, in characters.")
    max_new_tokens: int = _f(256, "Most tokens generated for one reply.")
    temperature: float = _f(0.0, "Sampling temperature; 0 means greedy decoding.")
    top_p: float = _f(1.0, "Nucleus sampling cut-off, used when temperature > 0.")
    repetition_penalty: float = _f(1.0, "Penalty for repeating tokens (1.0: off; above 1 it also penalizes copying retrieved facts and taught answers).")
    context_tokens: int = _f(2048, "Token budget for the prompt (system + history + message); older turns are dropped first.")
    persona_token_budget: int = _f(200, "System prompts longer than this many tokens get a warning.")
    max_queue: int = _f(32, "Most chat requests waiting for the model; more get HTTP 503.")
    torch_threads: int = _f(0, "Torch threads for chat (0: all cores).")
    train_threads: int = _f(1, "Torch threads for a training run, which runs in a child process.")
    memory: bool = _f(True, "Serve approved corrections and knowledge from the retrieval memory.")
    auto_approve: bool = _f(False, "Approve corrections without review (default: they wait for an admin).")
    schedule_minutes: int = _f(30, "Minutes between scheduled training checks.")
    schedule_min_items: int = _f(1, "New approved items needed before a scheduled round trains.")

    @property
    def database_url(self) -> str:
        return self.db_url or f"sqlite:///{Path(self.data_dir).resolve() / 'kaizen.db'}"

    @property
    def adapters_dir(self) -> Path:
        return Path(self.data_dir) / "adapters"

    @property
    def exports_dir(self) -> Path:
        return Path(self.data_dir) / "exports"

    def replace(self, **changes: Any) -> "Settings":
        return dataclasses.replace(self, **changes)


def _h(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass
class TrainConfig:
    lr0: float = _h(2e-3, "Peak learning rate of round 0.")
    gamma: float = _h(0.85, "Decay per round: lr_k = floor + (lr0 - floor) * gamma**k, lower every round.")
    min_lr_ratio: float = _h(
        0.5, "The floor the per-round lr approaches (never reaches), as a fraction of lr0, so late rounds still learn."
    )
    warmup_ratio: float = _h(0.1, "Fraction of max_steps spent warming the learning rate up from 0.")
    rank: int = _h(8, "LoRA rank r.")
    alpha: int = _h(16, "LoRA alpha; the update is scaled by alpha / rank.")
    dropout: float = _h(0.0, "LoRA dropout. 0 keeps the early-stop check identical to greedy decoding.")
    target_modules: tuple[str, ...] = _h(
        ("gate_proj", "up_proj", "down_proj"), "Module names that get a LoRA (MLP-only by default)."
    )
    layers_fraction: float = _h(
        0.5, "Fraction of the transformer layers, counted from the top, that get a LoRA (1.0 = all)."
    )
    max_steps: int = _h(40, "Upper bound on optimizer steps in one round.")
    epochs: int = _h(0, "If > 0, cap the round at this many passes over the taught rows (0 = no cap).")
    batch_size: int = _h(24, "Taught rows (sft/up/down) per step; cover all taught rows when possible.")
    anchors_per_step: int = _h(8, "Anchor rows (base model's own answers) mixed into every step.")
    anchor_weight: float = _h(1.0, "Weight of the anchor rows' loss relative to the taught rows.")
    down_weight: float = _h(0.5, "Weight of the unlikelihood loss on thumbs-down replies.")
    first_token_weight: float = _h(
        3.0, "Extra weight on the first answer token of taught rows (1 = none): it decides between the taught answer and the old one."
    )
    weight_decay: float = _h(0.0, "AdamW weight decay.")
    max_seq_len: int = _h(192, "Rows are cut to this many tokens (the answer end is kept).")
    anchor_max_new_tokens: int = _h(24, "Length of the base model's greedy answer used as an anchor row.")
    seed: int = _h(0, "Seed for LoRA init, sampling and dropout.")
    early_stop_exact: bool = _h(True, "Stop once every probe question is recalled exactly (greedy).")
    check_every: int = _h(2, "Steps between early-stop checks.")
    exact_min_prob: float = _h(
        0.6, "Early stop also needs every reply token at this probability or more, so recall survives bf16 serving."
    )
    min_steps: int = _h(4, "Never stop before this many steps.")
    extra_steps: int = _h(
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


@dataclass(frozen=True)
class GateLimits:
    min_new_recall: float = field(default=1.0, metadata={"help": "Share of new facts that must be recalled exactly."})
    max_drift: float = field(default=0.9, metadata={
        "help": "Largest allowed drift (0 = same answers as the base model, 1 = nothing in common) on held-out prompts."})
    max_leak: float = field(default=0.25, metadata={
        "help": "Largest share of held-out prompts whose answer contains a taught answer ('says it to everything')."})
    retention_slack: float = field(default=0.0, metadata={
        "help": "How far retention may fall below the active adapter's before the gate refuses."})


def env_name(name: str) -> str:
    return "KAIZEN_" + name.upper()


def _convert(raw: str, typ: Any, name: str) -> Any:
    typ = typ if isinstance(typ, type) else {"Path": Path, "str": str, "int": int, "float": float, "bool": bool}[str(typ)]
    if typ is bool:
        low = str(raw).strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off", ""):
            return False
        raise InputError(f"{env_name(name)} must be true or false, not {raw!r}")
    try:
        return typ(raw)
    except (TypeError, ValueError):
        raise InputError(f"{env_name(name)} must be a {typ.__name__}, not {raw!r}") from None


def build_settings(overrides: dict[str, Any] | None = None, environ: dict[str, str] | None = None) -> Settings:
    """Flags (overrides, None meaning 'not given') win over KAIZEN_* variables, which win over defaults."""
    environ = os.environ if environ is None else environ
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    values: dict[str, Any] = {}
    for f in fields(Settings):
        if f.name in overrides:
            values[f.name] = _convert(overrides[f.name], f.type, f.name) if isinstance(overrides[f.name], str) else overrides[f.name]
        elif env_name(f.name) in environ:
            values[f.name] = _convert(environ[env_name(f.name)], f.type, f.name)
    if "data_dir" in values:
        values["data_dir"] = Path(values["data_dir"])
    return Settings(**values)


def dataclass_from_env(cls: type, environ: dict[str, str], prefix: str) -> Any:
    """An instance of the dataclass `cls` with fields overridden by PREFIX+FIELD variables.

    Used for the trainer's knobs (KAIZEN_TRAIN_*) and the gate's limits (KAIZEN_GATE_*); a tuple
    field takes a comma-separated list.
    """
    values: dict[str, Any] = {}
    for f in fields(cls):
        name = prefix + f.name.upper()
        if name not in environ:
            continue
        raw = environ[name]
        if isinstance(f.default, tuple):
            values[f.name] = tuple(x.strip() for x in raw.split(",") if x.strip())
            if not values[f.name]:
                raise InputError(f"{name} needs at least one value")
            continue
        typ = type(f.default)
        if typ is bool:
            values[f.name] = _convert(raw, bool, name[len("KAIZEN_"):].lower())
        else:
            try:
                values[f.name] = typ(raw)
            except (TypeError, ValueError):
                raise InputError(f"{name} must be a {typ.__name__}, not {raw!r}") from None
    return cls(**values)


def settings_help() -> list[tuple[str, str, Any]]:
    """(variable, help, default) for every setting, for the README and --help."""
    return [(env_name(f.name), f.metadata["help"], f.default) for f in fields(Settings)]
