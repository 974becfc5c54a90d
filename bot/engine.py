"""The model engine: load the base model, build chat prompts, stream replies, swap adapters.

Replies in progress are decoded together, continuous batching (`bot.batching`); an adapter swap
waits for them to end and holds new ones back, so a reply never mixes two adapters and the version
recorded on each reply is the one that produced it. A bounded number of requests may be in
progress or waiting; beyond that `BusyError` tells the caller to come back later instead of
queueing forever.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gc
import queue
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch
from transformers import PreTrainedModel

from bot.batching import Batcher, Row, next_token_picker
from bot.engine_api import BASE, EngineStatus, FinishReason, GenParams, Message, cut_at_stop, stop_hold
from bot.prefix_cache import PrefixCache
from kaizen.adapters import KNOWLEDGE_SLOT, PREFERENCE_DIR, PREFERENCE_SLOT, cast_weights, serving
from kaizen.base_model import chat_text, load_model
from kaizen.errors import AdapterError, BusyError, ContextLengthError, InputError, ModelError
from kaizen.repetition import Loop, canonical_tokens, echo_of, end_of_copy, find_loop, held_back

if TYPE_CHECKING:
    from peft import PeftModel
    from transformers import PreTrainedTokenizerBase

ADAPTER_SLOT = KNOWLEDGE_SLOT  # the knowledge adapter's peft name; versions are swapped into it


def _strip_lora(model: torch.nn.Module) -> None:
    """Put back the base layers wherever peft wrapped one in a LoRA layer, without a PeftModel."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for name, module in list(model.named_modules()):
        if isinstance(module, BaseTunerLayer):
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, module.get_base_layer())
    if hasattr(model, "peft_config"):
        del model.peft_config


CHAT_OVERHEAD = 8  # tokens of role markers per message in the chat template


class _TokenQueue:
    """What the batcher emits for one reply (`bot.batching.Row.emit`): lists of new token ids, then
    None at the end, or the exception that ended it; iterating raises that exception."""

    def __init__(self, timeout: float = 300.0, waiting: float = 0.0) -> None:
        self._queue: queue.Queue[list[int] | BaseException | None] = queue.Queue()
        self._timeout = timeout
        self._waiting = waiting  # more time for the first item: the reply may wait for a place in the batch

    def put(self, item: list[int] | BaseException | None) -> None:
        self._queue.put(item)

    def __iter__(self) -> Iterator[list[int]]:
        first = True
        while True:
            try:
                item = self._queue.get(timeout=self._timeout + (self._waiting if first else 0.0))
            except queue.Empty:
                raise ModelError(f"The model produced nothing for {self._timeout:.0f} s.") from None
            first = False
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item


class _LoopGuard:
    """Ends the reply when its own tokens (never the prompt's), in their canonical form (case and a
    leading space ignored: `kaizen.repetition.canonical_tokens`), end in a loop; `loop` then says
    which generated tokens to keep: up to the end of the loop's first copy. Repetition the prompt
    holds ("Repeat exactly: 🎉🎉🎉🎉🎉🎉") is asked for: it streams as it comes, and only copies
    beyond it count as a loop."""

    def __init__(self, canonical: list[int], prompt: list[int]) -> None:
        self.canonical = canonical
        self.echo = echo_of(self.forms(prompt))
        self.loop: Loop | None = None
        self._reply: list[int] = []  # the reply's canonical forms so far, one added per token

    def __call__(self, reply: list[int]) -> bool:
        """Called by the batcher after each new token of `reply` (the reply so far)."""
        self._reply.extend(self.forms(reply[len(self._reply):]))
        self.loop = find_loop(self._reply, echo=self.echo)
        return self.loop is not None

    def held(self, reply: list[int]) -> int:
        """Tokens at the end of `reply` to hold back from the reader (`kaizen.repetition.held_back`);
        the reader's `reply` is a prefix of what the batcher has seen, whose forms are reused."""
        seen = self._reply[:len(reply)]
        return held_back(seen + self.forms(reply[len(seen):]), echo=self.echo)

    def forms(self, ids: list[int]) -> list[int]:
        canonical = self.canonical
        return [canonical[i] if i < len(canonical) else i for i in ids]


class TokenSource(Protocol):
    """A reply's tokens as they are generated: iterating yields lists of new token ids (ending when the
    reply ends: an end-of-turn token, which is yielded, the token limit, or the loop guard); `logprobs`
    holds one raw log-probability (nats) per token yielded; `cancel()` gives up the rest at once."""

    logprobs: list[float]

    def __iter__(self) -> Iterator[list[int]]: ...

    def cancel(self) -> None: ...


class _BatchedTokens:
    """The embedded engine's token source: one row in its batch (`bot.batching`)."""

    def __init__(self, engine: Engine, prompt: list[int], params: GenParams, guard: _LoopGuard | None,
                 admit: Callable[[], bool]) -> None:
        self._queue = _TokenQueue(waiting=engine.wait_timeout_s)  # a wait past it ends in BusyError (the batcher)
        self._row = Row(prompt=prompt, max_new_tokens=params.max_new_tokens, eos=engine.eos_ids, admit=admit,
                        pick=next_token_picker(params), done=guard or (lambda _reply: False), emit=self._queue.put)
        self.logprobs = self._row.logprobs  # the batcher appends to it before it emits each token
        engine._batcher.submit(self._row)

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self._queue)

    def cancel(self) -> None:
        self._row.cancelled.set()


class Generation:
    """One streamed reply. Iterate it for text chunks; afterwards the counts and `confidence` (the
    mean log-probability of its tokens under the model's raw distribution) are set.

    Creating it reserves a place in the queue (or raises BusyError at once), so an HTTP
    handler can refuse with 503 before it starts a stream.
    """

    def __init__(self, engine: Engine, messages: list[Message], params: GenParams, use_adapter: bool = True) -> None:
        self._engine = engine
        self._params = params
        self._use_adapter = use_adapter
        self.input_ids = engine.encode_chat(messages)
        self.prompt_tokens = int(self.input_ids.shape[1])
        room = engine.context_tokens - self.prompt_tokens  # exact, where Engine.stream could only estimate
        if room < 1:
            raise ContextLengthError(f"The message is too long for the model's context window ({engine.context_tokens} "
                             "tokens). Please shorten it.")
        if params.max_new_tokens > room:
            self._params = params = dataclasses.replace(params, max_new_tokens=room)
        self.completion_tokens = 0
        self.confidence: float | None = None  # once read: the mean raw log-probability of the reply's tokens
        self.reply_ids: list[int] = []  # once read: the reply's token ids, the ones `completion_tokens` counts
        self.adapter_version = engine.adapter_version
        self.adapter_applied = use_adapter and engine.adapter_version != BASE
        self.preference_applied = engine.preference_loaded
        self.text = ""
        self.looped = False  # the reply was cut at the end of a loop's first copy
        self.stopped = False  # the reply reached one of params.stop and ended before it
        self.finish_reason: FinishReason = "stop"
        if not engine._slots.acquire(blocking=False):
            raise BusyError("The bot is answering too many people right now. Please try again in a moment.")
        self._reserved = True

    def _release(self) -> None:
        if self._reserved:
            self._reserved = False
            self._engine._slots.release()

    def __iter__(self) -> Iterator[str]:
        try:
            yield from self._run()
        finally:
            self._release()

    def _admit(self) -> bool:
        """Called by the batcher as this reply joins a batch (never during a swap): the version that
        will produce it, and whether the knowledge adapter applies (its batch group)."""
        engine = self._engine
        self.adapter_version = engine.adapter_version
        self.adapter_applied = self._use_adapter and engine.model is not engine.base_model
        self.preference_applied = engine.preference_loaded
        return self.adapter_applied

    def _tokens(self, prompt: list[int], params: GenParams, guard: _LoopGuard | None) -> TokenSource:
        """Where this reply's tokens come from: a row in the engine's batch."""
        return _BatchedTokens(self._engine, prompt, params, guard, self._admit)

    def _run(self) -> Iterator[str]:
        engine, params = self._engine, self._params
        prompt = self.input_ids[0].tolist()
        guard = _LoopGuard(engine.canonical_tokens, prompt) if params.loop_guard else None
        eos_ids = engine.eos_ids
        tokens = self._tokens(prompt, params, guard)
        ids: list[int] = []
        try:
            for new in tokens:
                ids.extend(new)
                # What may repeat into a loop is held back, so a loop is cut before anyone reads it.
                safe = len(ids) - guard.held(ids) if guard else len(ids)
                chunk = self._more(ids[:safe])
                if chunk:
                    yield chunk
                if self.stopped:  # a stop string: nothing after it is wanted
                    break
            loop = guard.loop if guard is not None and not self.stopped else None
            ended = bool(ids) and ids[-1] in eos_ids
            if loop is None and not ended and not self.stopped and len(ids) >= params.max_new_tokens:
                self.finish_reason = "length"
            if loop is not None:
                self.looped = True
                # The first copy, or up to the first sentence mark in the (held back) copy after it.
                before = self._engine.tokenizer.decode(ids[:loop.keep - loop.period], skip_special_tokens=True)
                first = self._engine.tokenizer.decode(ids[:loop.keep], skip_special_tokens=True)
                ids = ids[:loop.keep + loop.period - 1]
            chunk = self._more(ids, first_copy=(before, first) if loop is not None else None, final=True)
            if chunk:
                yield chunk
        finally:
            tokens.cancel()  # the consumer went away early, or a stop string: the row leaves the batch
        self.completion_tokens = len(ids)
        self.reply_ids = ids
        # The source appends each token's log-probability before it gives out the token; the tokens
        # counted (a loop's copies cut, nothing after a stop string) are the first len(ids).
        logprobs = tokens.logprobs[:len(ids)]
        self.confidence = sum(logprobs) / len(logprobs) if logprobs else None

    def _more(self, ids: list[int], first_copy: tuple[str, str] | None = None, final: bool = False) -> str:
        """The text of `ids` not yet given out (and add it to `self.text`). A character whose bytes
        are still arriving waits (it decodes as U+FFFD until then). After a loop, `first_copy` is the
        (text before its first copy, text up to its end), and the text ends where a sentence ends
        (`kaizen.repetition.end_of_copy`). The text ends before a stop string (`self.stopped` is then
        set); until the reply is `final`, an end that may be the start of one waits."""
        # A character whose bytes never came right (the model emitted an invalid sequence) is dropped.
        text = self._engine.tokenizer.decode(ids, skip_special_tokens=True)
        if first_copy is not None:
            before, first = first_copy
            start = len(before) if first.startswith(before) else 0
            text = end_of_copy(text, len(first), start) if text.startswith(first) else first
        text = text.replace("\ufffd", "")
        if self._params.stop:
            text, hit = cut_at_stop(text, self._params.stop)
            self.stopped = self.stopped or hit
            if not hit and not final:
                text = text[:len(text) - stop_hold(text, self._params.stop)]
        if not text.startswith(self.text):  # a merge changed earlier characters: keep what was given
            return ""
        chunk = text[len(self.text):]
        self.text = text
        return chunk

    def close(self) -> None:
        self._release()


class Engine:
    """The chat model. `stream()` answers; `activate()` swaps the LoRA adapter between replies."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, *, name: str,
                 context_tokens: int = 2048, max_queue: int = 32, max_batch: int = 16,
                 wait_timeout_s: float = 600.0, prefix_cache: bool = True) -> None:
        self.model: PreTrainedModel | PeftModel = model  # a PeftModel while an adapter is served
        self.base_model: PreTrainedModel = model
        self.tokenizer = tokenizer
        self.name = name
        self.adapter_version = BASE
        self.adapter_path: Path | None = None
        self.swap_mode = ""
        window = getattr(model.config, "max_position_embeddings", context_tokens) or context_tokens
        self.context_tokens = min(context_tokens, window)
        self.wait_timeout_s = wait_timeout_s
        # Replies in progress are decoded together (continuous batching); a swap waits for them to end.
        self._batcher = Batcher(lambda: self.model, self._adapters_for, max_batch=max_batch,
                                wait_timeout_s=wait_timeout_s, prefixes=PrefixCache() if prefix_cache else None)
        self._slots = threading.BoundedSemaphore(max_queue)

    @functools.cached_property
    def canonical_tokens(self) -> list[int]:
        """The loop guard's view of the vocabulary (`kaizen.repetition.canonical_tokens`), built once."""
        vocab = self.tokenizer.convert_ids_to_tokens(list(range(len(self.tokenizer))))
        return canonical_tokens(vocab)

    @functools.cached_property
    def eos_ids(self) -> frozenset[int]:
        """The tokens that end a reply: the generation config's end-of-turn ids and the tokenizer's eos."""
        eos = self.model.generation_config.eos_token_id
        ids = (*(eos if isinstance(eos, list) else [eos]), self.tokenizer.eos_token_id)
        return frozenset(t for t in ids if t is not None)

    @classmethod
    def from_path(cls, path: str, *, dtype: str = "bfloat16", threads: int = 0, **kw: Any) -> Engine:
        if threads:
            torch.set_num_threads(threads)
        model, tokenizer = load_model(path, dtype)
        return cls(model, tokenizer, name=Path(path).name or str(path), **kw)

    # --- prompts ------------------------------------------------------------------------------

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def chat_text(self, messages: list[Message]) -> str:
        return chat_text(self.tokenizer, messages, add_generation_prompt=True)

    def encode_chat(self, messages: list[Message]) -> torch.Tensor:
        ids: torch.Tensor = self.tokenizer(self.chat_text(messages), add_special_tokens=False,
                                           return_tensors="pt")["input_ids"]
        return ids

    def fit_messages(self, messages: list[Message], max_new_tokens: int) -> list[Message]:
        """Drop the oldest turns until the prompt fits the context window.

        The system message (if first) and the newest message always stay; an exchange is
        dropped as a user/assistant pair so the history never starts with a bare answer.
        """
        budget = self.context_tokens - max_new_tokens
        system, rest, fixed = self._fixed(messages)
        if fixed > budget:
            raise ContextLengthError(
                f"The message is too long for the model's context window ({self.context_tokens} tokens, "
                f"{max_new_tokens} kept for the reply). Please shorten it."
            )
        cost = [self.count_tokens(m["content"]) + CHAT_OVERHEAD for m in rest]
        keep = len(rest) - 1
        total = fixed
        while keep > 0 and total + cost[keep - 1] <= budget:
            keep -= 1
            total += cost[keep]
        kept = rest[keep:]
        while len(kept) > 1 and kept[0]["role"] != "user":
            kept = kept[1:]
        return system + kept

    def _fixed(self, messages: list[Message]) -> tuple[list[Message], list[Message], int]:
        """(the system message as a list, the other messages, tokens of what always stays: the system
        message and the newest one)."""
        system = messages[:1] if messages and messages[0]["role"] == "system" else []
        rest = messages[len(system):]
        if not rest:
            raise InputError("There is no message to answer.")
        return system, rest, sum(self.count_tokens(m["content"]) + CHAT_OVERHEAD for m in [*system, rest[-1]])

    def reply_room(self, messages: list[Message]) -> int:
        """Tokens left for the reply once the system prompt and the newest message are in the context."""
        return self.context_tokens - self._fixed(messages)[2]

    # --- generation ---------------------------------------------------------------------------

    def stream(self, messages: list[Message], params: GenParams = GenParams(), *,
               use_adapter: bool = True) -> Generation:
        """A reply to `messages`. A `max_new_tokens` larger than the room the context leaves is
        lowered to it (the reply then ends with finish_reason "length" there), and the history is
        trimmed for what remains; only a message that leaves no room at all is refused (InputError)."""
        messages, params = self.fit(messages, params)
        return Generation(self, messages, params, use_adapter)

    def fit(self, messages: list[Message], params: GenParams) -> tuple[list[Message], GenParams]:
        """(`messages` trimmed to fit, `params` with `max_new_tokens` lowered to the room left), as `stream`
        uses them."""
        room = self.reply_room(messages)
        if 0 < room < params.max_new_tokens:
            params = dataclasses.replace(params, max_new_tokens=room)
        return self.fit_messages(messages, params.max_new_tokens), params

    def generate(self, messages: list[Message], params: GenParams = GenParams()) -> str:
        return "".join(self.stream(messages, params))

    # --- adapters -----------------------------------------------------------------------------

    def activate(self, version: str, path: Path | None) -> float:
        """Serve `version` (the LoRA adapter in `path`), or the base model when path is None.

        Waits for the generation in progress to finish, then swaps. The old adapter is
        unloaded, so memory does not grow with each round. Returns the seconds the swap took.
        """
        with self._batcher.exclusive():  # after the replies in progress, before the waiting ones
            start = time.perf_counter()
            if path is None:
                self._drop_adapter()
                self.adapter_version, self.adapter_path = BASE, None
            else:
                self._load_adapter(version, Path(path))
            held = time.perf_counter() - start
        # Freeing the old adapter's tensors took 0.5 s of a 0.6 s swap (bench): do it after the lock.
        gc.collect()
        return held

    def status(self) -> EngineStatus:
        return EngineStatus()

    @property
    def preference_loaded(self) -> bool:
        """True while the served version has a preference adapter (applied to every reply)."""
        return self.model is not self.base_model and PREFERENCE_SLOT in getattr(self.model, "peft_config", {})

    @contextlib.contextmanager
    def _adapters_for(self, knowledge: bool) -> Iterator[None]:
        """The LoRA layers active for one reply: knowledge (in scope) and/or preference; the base model if neither."""
        if self.model is self.base_model:
            yield
            return
        with serving(self.model, knowledge=knowledge, preference=self.preference_loaded):
            yield

    def _load_preference(self, path: Path) -> None:
        """Serve the preference adapter in `path/preference` beside the knowledge adapter, or none if absent.
        A new one is loaded under its own name (never a hotswap: peft's hotswap matches adapter names as
        substrings of tensor names, peft #3780); the old one is deleted first."""
        from peft import PeftModel

        model = self.model
        assert isinstance(model, PeftModel)
        if PREFERENCE_SLOT in model.peft_config:
            model.delete_adapter(PREFERENCE_SLOT)
        pref = path / PREFERENCE_DIR
        if (pref / "adapter_config.json").is_file():
            model.load_adapter(str(pref), adapter_name=PREFERENCE_SLOT, is_trainable=False)
            cast_weights(model, next(self.base_model.parameters()).dtype)
        model.base_model.set_adapter(ADAPTER_SLOT, inference_mode=True)
        model.eval()

    def _drop_adapter(self) -> None:
        if self.model is not self.base_model:
            from peft import PeftModel

            assert isinstance(self.model, PeftModel)  # only _attach replaces self.model, with a PeftModel
            self.base_model = self.model.unload()  # removes the LoRA layers, base weights untouched
            if hasattr(self.base_model, "peft_config"):
                del self.base_model.peft_config  # else the next attach counts a phantom second adapter
            self.model = self.base_model

    def _attach(self, path: Path) -> None:
        from peft import PeftModel
        from peft.utils import get_peft_model_state_dict
        from safetensors import safe_open

        try:
            model = PeftModel.from_pretrained(self.base_model, str(path), adapter_name=ADAPTER_SLOT, is_trainable=False)
            # peft only warns when the weights lack tensors the config names (other target modules):
            # those layers would silently serve their initial values.
            with safe_open(str(path / "adapter_model.safetensors"), "pt") as f:
                missing = set(get_peft_model_state_dict(model, adapter_name=ADAPTER_SLOT)) - set(f.keys())
            if missing:
                raise AdapterError(f"its weights lack {len(missing)} tensor(s) that its adapter_config.json "
                                   f"names, such as {min(missing)}")
        except Exception:
            _strip_lora(self.base_model)  # peft injected the LoRA layers in place before the load failed
            raise
        cast_weights(model, next(self.base_model.parameters()).dtype)
        model.eval()
        self.model = model

    def _fits_in_place(self, path: Path) -> bool:
        """True if the adapter at `path` has the loaded one's LoRA config and exactly its tensors (names
        and shapes), so its weights can simply replace the loaded ones."""
        from peft import LoraConfig, PeftConfig
        from peft.utils import get_peft_model_state_dict
        from safetensors import safe_open

        def key(c: LoraConfig) -> tuple[object, ...]:
            return (c.r, c.lora_alpha, sorted(c.target_modules or ()), c.layers_to_transform, c.rank_pattern,
                    c.alpha_pattern, c.use_rslora, c.use_dora)

        new, loaded_config = PeftConfig.from_pretrained(str(path)), self.model.peft_config[ADAPTER_SLOT]
        if not (isinstance(new, LoraConfig) and isinstance(loaded_config, LoraConfig)):
            return False  # Kaizen trains only LoRA adapters; anything else is rebuilt, which checks it
        if key(new) != key(loaded_config):
            return False
        state = get_peft_model_state_dict(self.model, adapter_name=ADAPTER_SLOT)
        loaded = {k: tuple(v.shape) for k, v in state.items()}
        with safe_open(str(path / "adapter_model.safetensors"), "pt") as f:
            return loaded == {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118 - safe_open is no dict

    def _load_adapter(self, version: str, path: Path) -> None:
        """Swap in the adapter at `path`. With one already loaded and a compatible config (same
        rank, alpha and target modules), its weights are replaced in place (peft's hotswap);
        otherwise the LoRA layers are rebuilt. On any failure the previous adapter is restored."""
        from peft.utils.hotswap import hotswap_adapter

        if not (path / "adapter_config.json").is_file():
            raise AdapterError(f"Adapter {version} has no adapter_config.json in {path}.")
        previous = self.adapter_path
        try:
            # peft's hotswap pads, reshapes or rescales tensors that do not match without complaint (even
            # ones made for another base model), so it is used only for an adapter of the same layout.
            if self.model is not self.base_model and self._fits_in_place(path):
                try:
                    hotswap_adapter(self.model, str(path), adapter_name=ADAPTER_SLOT, torch_device="cpu")
                    self.swap_mode = "hotswap"
                except Exception:  # rebuild the LoRA layers, which checks every tensor
                    self._drop_adapter()
                    self._attach(path)
                    self.swap_mode = "reload"
            else:
                self.swap_mode = "load" if self.model is self.base_model else "reload"
                self._drop_adapter()
                self._attach(path)
        except Exception as exc:
            self._drop_adapter()
            if previous is not None:
                self._attach(previous)  # keep serving what we had
            raise AdapterError(f"Adapter {version} does not fit the base model: {exc}") from exc
        try:
            self._load_preference(path)
        except Exception as exc:
            self._drop_adapter()
            if previous is not None:
                self._attach(previous)
                self._load_preference(previous)
            self.adapter_version, self.adapter_path = (self.adapter_version, previous) if previous else (BASE, None)
            raise AdapterError(f"Adapter {version}'s preference adapter does not fit the base model: {exc}") from exc
        self.adapter_version, self.adapter_path = version, path

