"""Shared fixtures: a fake chat model, the tiny and real models, and live servers.

`FakeEngine` has the real engine's interface (after llm's MockModel): `enqueue()` scripts the
next replies and `history` records every call, so most tests run in milliseconds. The tiny
random-weight model and the real embedded model are here for tests whose behaviour depends on
real weights.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see launch.main: spinning threads collapse under load
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(ROOT))

from bot.engine_api import BASE, GenParams  # noqa: E402
from kaizen.settings import Settings  # noqa: E402

MODEL_CACHE = Path(os.environ.get("KAIZEN_TEST_CACHE", ROOT / ".pytest_cache" / "kaizen-models"))


class FakeGeneration:
    def __init__(self, engine: "FakeEngine", text: str, messages: list[dict]):
        self._engine = engine
        self._text = text
        self.adapter_version = engine.adapter_version
        self.prompt_tokens = sum(engine.count_tokens(m["content"]) for m in messages)
        self.completion_tokens = 0
        if engine.busy:
            from kaizen.errors import BusyError

            raise BusyError("The bot is answering too many people right now. Please try again in a moment.")

    def __iter__(self):
        for word in self._text.split(" "):
            if self._engine.fail_midway:
                raise RuntimeError("the model crashed")
            self.completion_tokens += 1
            yield word + " " if self.completion_tokens < len(self._text.split(" ")) else word
        self._engine.completed += 1


class FakeEngine:
    """Same interface as bot.engine.Engine, without a model."""

    name = "fake"

    def __init__(self) -> None:
        self.queue: list[str] = []
        self.history: list[dict] = []
        self.adapter_version = BASE
        self.adapter_path = None
        self.context_tokens = 2048
        self.busy = False
        self.fail_midway = False
        self.completed = 0

    def enqueue(self, *texts: str) -> None:
        self.queue.extend(texts)

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def stream(self, messages: list[dict], params: GenParams = GenParams()) -> FakeGeneration:
        self.history.append({"messages": messages, "params": params})
        text = self.queue.pop(0) if self.queue else f"Echo: {messages[-1]['content']}"
        return FakeGeneration(self, text, messages)

    def generate(self, messages: list[dict], params: GenParams = GenParams()) -> str:
        return "".join(self.stream(messages, params))

    def activate(self, version: str, path) -> float:  # noqa: ANN001
        self.adapter_version, self.adapter_path = (BASE, None) if path is None else (version, path)
        return 0.0


@pytest.fixture
def fake_engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", memory=False, schedule=False)


@pytest.fixture
def kaizen(settings: Settings, fake_engine: FakeEngine):
    from bot.services import build_services
    from scheduler import KaizenScheduler, TrainingSupervisor
    from trainer.dataset import export_training_set

    k = build_services(settings, engine=fake_engine)
    k.training = TrainingSupervisor(db=k.db, settings=k.settings, on_finish=lambda _run_id: k.follower.sync())
    k.scheduler = KaizenScheduler(db=k.db, settings=k.settings, supervisor=k.training)
    k.export_dataset = export_training_set
    yield k
    k.close()


@pytest.fixture(scope="session")
def embedded_model_dir() -> Path:
    """The real embedded SmolLM2-135M-Instruct, converted once and cached between runs."""
    from kaizen.base_model import convert_embedded

    return convert_embedded(MODEL_CACHE)


@pytest.fixture(scope="session")
def tiny_model_dir(embedded_model_dir: Path) -> Path:
    """A tiny random-weight llama with the real tokenizer and chat template."""
    target = MODEL_CACHE / "tiny-llama"
    if (target / "config.json").is_file():
        return target
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(embedded_model_dir)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                      tie_word_embeddings=True)
    LlamaForCausalLM(cfg).save_pretrained(target)
    tok.save_pretrained(target)
    return target


def random_adapter(out: Path, model_dir: Path, seed: int, *, model=None, lora=None) -> Path:  # noqa: ANN001
    """A LoRA adapter with random, clearly visible weights, saved as peft saves it."""
    import torch
    from peft import get_peft_model

    from kaizen.base_model import load_model
    from kaizen.settings import TrainConfig
    from trainer.config import lora_config

    torch.manual_seed(seed)
    model = model if model is not None else load_model(str(model_dir), "float32")[0]
    peft = get_peft_model(model, lora or lora_config(TrainConfig(), num_layers=model.config.num_hidden_layers))
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_" in name:
                p.normal_(0, 0.5)
    peft.save_pretrained(out)
    return out


def free_port() -> int:
    with contextlib.closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ThreadServer:
    """Runs an ASGI app with uvicorn in a background thread on a free local port."""

    def __init__(self, app) -> None:  # noqa: ANN001
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> "ThreadServer":
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            if time.time() > deadline:
                raise RuntimeError("server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:  # noqa: ANN002
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture
def live_app(kaizen):
    """The full app (API + chat UI) on the fake engine, served on a free local port."""
    from bot.app import build_app

    with ThreadServer(build_app(kaizen)) as server:
        yield server


def kaizen_cli(*args: str, data_dir: Path, env: dict | None = None, timeout: float = 900,
               check: bool = True) -> subprocess.CompletedProcess:
    """Run `python launch.py ARGS --data-dir DIR` as a user would, capturing output."""
    full_env = {**os.environ, "KAIZEN_DATA_DIR": str(data_dir), **(env or {})}
    proc = subprocess.run([sys.executable, str(ROOT / "launch.py"), *args], capture_output=True, text=True,
                          env=full_env, timeout=timeout, cwd=ROOT)
    if check and proc.returncode != 0:
        raise AssertionError(f"kaizen {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


class ProcessServer:
    """`kaizen serve` in a child process (the real thing), on a free port."""

    def __init__(self, data_dir: Path, *args: str, env: dict | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir = data_dir
        self.log = data_dir.parent / f"server-{self.port}.log"
        data_dir.mkdir(parents=True, exist_ok=True)
        self.cmd = [sys.executable, str(ROOT / "launch.py"), "serve", "--port", str(self.port),
                    "--data-dir", str(data_dir), *args]
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 240) -> "ProcessServer":
        import httpx

        self.proc = subprocess.Popen(self.cmd, stdout=self.log.open("ab"), stderr=subprocess.STDOUT, env=self.env,
                                     cwd=ROOT)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log.read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return self
            time.sleep(0.5)
        raise RuntimeError(f"server did not become healthy:\n{self.log.read_text()[-3000:]}")

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> "ProcessServer":
        return self.start()

    def __exit__(self, *exc) -> None:  # noqa: ANN002
        self.stop()
