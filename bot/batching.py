"""Continuous batching for the embedded engine: replies in progress are decoded together.

Iteration-level scheduling as in Orca (Yu et al., OSDI 2022) and vLLM: one thread runs the model;
at each decode step it feeds one token of every reply in progress, so 16 people chatting share
each pass over the weights instead of waiting in line. A new request joins between two steps once
its prompt is prefilled (the prompts that arrive together in one forward pass); a reply that ends (end of
turn, token limit, loop, stop string) or whose client went away leaves at once and frees its row.

Without paged memory: the replies of one adapter group share one key/value cache
(`transformers.DynamicCache`, tensors of shape (rows, kv_heads, columns, head_dim)), padded on
the left where a row is shorter; the attention mask hides the padding and `position_ids` give each
row its own positions, so each row computes what it would alone (up to float rounding). The
system prompt's keys and values are computed once and reused by every prompt that starts with it
(prefix caching, `bot.prefix_cache`).

Adapters per request: a row runs with the knowledge adapter only when routing put it in scope, and
with the preference adapter whenever one is served (`bot.engine.Engine._adapters_for`). peft's
`adapter_names` picks one adapter per row, not this combination, so each step runs the model once
per group of rows that want the same layers (at most two groups). An adapter swap
(`exclusive()`) waits for the replies in progress to end and holds new ones back meanwhile, so a
reply never mixes two versions and the version recorded is the one that produced it.

Why not transformers' own continuous batching (`generate_batch`, 5.23)? It has no per-request
LoRA adapters, no per-request sampling settings or stop criteria, and targets paged attention.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import (
    DynamicCache,
    LogitsProcessorList,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopPLogitsWarper,
)

from bot.engine_api import GenParams
from bot.prefix_cache import Prefix, PrefixCache
from kaizen.errors import BusyError, ModelError

MIN_TEMPERATURE = 0.01  # below it sampling is greedy in all but name (and 1e-300 overflows the logits)

Emit = Callable[[list[int] | BaseException | None], None]


@dataclass(eq=False)
class Row:
    """One reply being decoded. The batcher calls `admit()` once when the row joins (it returns
    whether the knowledge adapter applies: the row's group), `pick(ids, logits)` for each next
    token (`ids` the prompt and the reply so far, `logits` shape (vocab,)), `done(reply_ids)` after
    each token (a loop guard), and `emit` with each new token id list, then with None at the end
    (or with the exception that ended it). Before emitting a token it appends to `logprobs` the
    token's log-probability under the model's raw distribution (the logits before `pick`'s
    repetition penalty, temperature and top-p): the model's own confidence in its reply."""

    prompt: list[int]
    max_new_tokens: int
    eos: frozenset[int]
    admit: Callable[[], bool]
    pick: Callable[[list[int], torch.Tensor], int]
    done: Callable[[list[int]], bool]
    emit: Emit
    cancelled: threading.Event = field(default_factory=threading.Event)
    submitted: float = field(default_factory=time.monotonic)
    ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)  # one per generated token, in nats
    generated: int = 0
    group: bool = False


def next_token_picker(params: GenParams) -> Callable[[list[int], torch.Tensor], int]:
    """How one row picks its next token from the step's logits (shape (vocab,)) given its ids so
    far, with transformers' own logits processors as `generate()` applies them: the repetition
    penalty (CTRL, Keskar et al. 2019), then, when sampling, temperature and top-p (nucleus, Holtzman
    et al. 2020). A `seed` seeds a generator of the row's own, so the same request samples the same
    reply whatever else is in the batch."""
    processors = LogitsProcessorList()
    if params.repetition_penalty != 1.0:
        processors.append(RepetitionPenaltyLogitsProcessor(params.repetition_penalty))
    sample = params.temperature >= MIN_TEMPERATURE
    if sample:
        processors.append(TemperatureLogitsWarper(params.temperature))
        if params.top_p < 1.0:
            processors.append(TopPLogitsWarper(params.top_p))
    generator = torch.Generator().manual_seed(params.seed) if sample and params.seed is not None else None

    def pick(ids: list[int], logits: torch.Tensor) -> int:
        scores = logits.float().unsqueeze(0)
        if processors:
            scores = processors(torch.tensor([ids]), scores)
        if not sample:
            return int(scores.argmax(dim=-1))
        return int(torch.multinomial(torch.softmax(scores, dim=-1), 1, generator=generator))

    return pick


@dataclass
class _Group:
    """Rows decoded in one forward pass: their shared cache and attention mask (rows, columns)."""

    rows: list[Row] = field(default_factory=list)
    cache: Any = None
    mask: torch.Tensor | None = None


def _pad_left(t: torch.Tensor, n: int, dim: int) -> torch.Tensor:
    if n == 0:
        return t
    shape = list(t.shape)
    shape[dim] = n
    return torch.cat([t.new_zeros(shape), t], dim=dim)


def _stop_at_exit(ref: weakref.ref[Batcher]) -> None:
    batcher = ref()
    if batcher is not None:
        batcher.stop()


class Batcher:
    """Decodes the submitted rows together, up to `max_batch` at a time; the rest wait in arrival
    order, and one that waited `wait_timeout_s` seconds ends with BusyError. With `prefixes`, a
    prompt that starts like one prefilled before reuses its keys and values (`bot.prefix_cache`)."""

    def __init__(self, model: Callable[[], torch.nn.Module],
                 adapters_for: Callable[[bool], AbstractContextManager[None]], *,
                 max_batch: int = 16, wait_timeout_s: float = 600.0,
                 prefixes: PrefixCache | None = None) -> None:
        self._model = model
        self.prefixes = prefixes  # kept prompt prefixes (bot.prefix_cache); None: every prompt is prefilled whole
        self._adapters_for = adapters_for
        self.max_batch = max(1, max_batch)
        self.wait_timeout_s = wait_timeout_s
        self._cond = threading.Condition()
        self._pending: collections.deque[Row] = collections.deque()
        self._active: list[Row] = []  # admitted rows, being prefilled or decoded
        self._groups: dict[bool, _Group] = {}
        self._swaps = 0  # exclusive() callers waiting or running: no row is admitted meanwhile
        self._thread: threading.Thread | None = None
        self._stopping = False
        self.most_rows = 0  # the largest batch seen (for tests and the benchmark)

    # --- for the engine ------------------------------------------------------------------------

    def submit(self, row: Row) -> None:
        row.ids = list(row.prompt)
        with self._cond:
            self._pending.append(row)
            if self._stopping:
                raise ModelError("The model is shutting down.")
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="kaizen-batcher", daemon=True)
                self._thread.start()
                # A daemon thread killed inside a torch op at exit aborts the process ("terminate
                # called without an active exception"): stop between two steps first.
                atexit.register(_stop_at_exit, weakref.ref(self))
            self._cond.notify_all()

    def stop(self, timeout: float = 30.0) -> None:
        """End the decode thread after the step in progress; replies in progress or waiting end with ModelError."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """The model to oneself (an adapter swap): waits for the rows in progress to end; rows
        that arrive meanwhile wait and join afterwards."""
        with self._cond:
            self._swaps += 1
            try:
                self._cond.notify_all()
                while self._active:
                    self._cond.wait()
            except BaseException:
                self._swaps -= 1
                self._cond.notify_all()
                raise
        try:
            yield
        finally:
            with self._cond:
                if self.prefixes is not None:
                    self.prefixes.clear()  # their keys and values came from the weights before the swap
                self._swaps -= 1
                self._cond.notify_all()

    def waiting(self) -> int:
        """Rows waiting to join, plus swaps waiting for the model."""
        with self._cond:
            return len(self._pending) + self._swaps

    def running(self) -> int:
        with self._cond:
            return len(self._active)

    # --- the decode thread ---------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            new = self._admit()
            if new is None:
                return
            try:
                if new:
                    self._prefill(new)
                self._step()
            except BaseException as exc:  # every row in progress ends with the error; the batcher goes on
                error = ModelError(f"Generation failed: {exc}")
                error.__cause__ = exc
                with self._cond:
                    rows, self._active, self._groups = self._active, [], {}
                    self._cond.notify_all()
                for row in rows:
                    row.emit(error)

    def _admit(self) -> list[Row] | None:
        """Wait for work; move waiting rows into the batch (none while a swap waits). None: stop."""
        with self._cond:
            while True:
                if self._stopping:
                    ended = ModelError("The model is shutting down.")
                    rows, self._active, self._groups = [*self._active, *self._pending], [], {}
                    self._pending.clear()
                    self._cond.notify_all()
                    for row in rows:
                        row.emit(ended)
                    return None
                self._expire()
                if self._active or (self._pending and not self._swaps):
                    break
                self._cond.wait(timeout=1.0 if self._pending else None)
            new: list[Row] = []
            while self._pending and not self._swaps and len(self._active) < self.max_batch:
                row = self._pending.popleft()
                if row.cancelled.is_set():
                    row.emit(None)
                    continue
                row.group = row.admit()
                self._active.append(row)
                new.append(row)
            self.most_rows = max(self.most_rows, len(self._active))
            return new

    def _expire(self) -> None:
        now = time.monotonic()
        while self._pending and (now - self._pending[0].submitted > self.wait_timeout_s
                                 or self._pending[0].cancelled.is_set()):
            row = self._pending.popleft()
            row.emit(None if row.cancelled.is_set() else
                     BusyError("The bot is busy; the request waited too long. Please try again."))

    def _forward(self, key: bool, **inputs: Any) -> Any:
        inputs.setdefault("logits_to_keep", 1)
        with torch.inference_mode(), self._adapters_for(key):
            return self._model()(**inputs, use_cache=True)

    def _prefill(self, rows: list[Row]) -> None:
        """Prefill the prompts of rows that join together, one forward pass per adapter group and
        kept prefix (`bot.prefix_cache`): the rows that start like a kept prefix compute only the
        rest of their prompt."""
        for key in dict.fromkeys(r.group for r in rows):
            batch = [r for r in rows if r.group == key]
            whole: list[Row] = []
            shared: dict[Prefix, tuple[list[Row], int]] = {}
            for row in batch:
                prefix, n = self.prefixes.match(key, row.ids) if self.prefixes is not None else (None, 0)
                if prefix is None:
                    whole.append(row)
                else:
                    users, tokens = shared.get(prefix, ([], n))
                    shared[prefix] = ([*users, row], min(tokens, n))
            for prefix, (users, tokens) in shared.items():
                assert self.prefixes is not None
                self.prefixes.used(key, prefix, tokens, len(users))  # cut to what they share
                self._prefill_rows(key, users, prefix)
            if whole:
                self._prefill_rows(key, whole, None)

    def _prefill_rows(self, key: bool, batch: list[Row], prefix: Prefix | None) -> None:
        """Run the prompts of `batch` (after `prefix`, whose keys and values they share) in one
        forward pass, take each one's first token, and join the rows that go on to their group.

        The prompts are padded on the right, so causal attention alone keeps each real token from
        seeing padding (no position sees only masked keys, which gives NaN in SDPA); each row's
        logits are read at its own last token, and its cache is moved to the left-padded layout
        the decode steps use."""
        start = len(prefix) if prefix is not None else 0
        lengths = [len(r.ids) for r in batch]
        width = max(lengths) - start
        ids = torch.tensor([r.ids[start:] + [r.ids[-1]] * (width + start - len(r.ids)) for r in batch])
        ends = sorted({n - 1 - start for n in lengths})
        inputs: dict[str, Any] = {}
        if prefix is not None:  # each row starts from a copy of the prefix's keys and values
            inputs["past_key_values"] = past = DynamicCache()
            for layer, (k, v) in enumerate(zip(prefix.keys, prefix.values, strict=True)):
                past.update(k.expand(len(batch), -1, -1, -1), v.expand(len(batch), -1, -1, -1), layer)
        out = self._forward(key, input_ids=ids, attention_mask=torch.ones(len(batch), start + width, dtype=torch.long),
                            logits_to_keep=torch.tensor(ends), **inputs)
        cache = out.past_key_values
        if prefix is None and self.prefixes is not None:
            for i, row in enumerate(batch):
                self.prefixes.add(key, row.ids, [layer.keys[i:i + 1] for layer in cache.layers],
                                  [layer.values[i:i + 1] for layer in cache.layers])
        last = out.logits[torch.arange(len(batch)), torch.tensor([ends.index(n - 1 - start) for n in lengths])]
        raw = torch.log_softmax(last.float(), dim=-1)
        kept = [i for i, row in enumerate(batch) if not self._take(row, last[i], raw[i])]
        if not kept:
            return
        columns = max(lengths[i] for i in kept)
        for layer in cache.layers:
            layer.keys = torch.stack([_pad_left(layer.keys[i, :, :lengths[i]], columns - lengths[i], 1) for i in kept])
            layer.values = torch.stack([_pad_left(layer.values[i, :, :lengths[i]], columns - lengths[i], 1)
                                        for i in kept])
        mask = torch.tensor([[0] * (columns - lengths[i]) + [1] * lengths[i] for i in kept])
        self._join(self._groups.setdefault(key, _Group()), [batch[i] for i in kept], cache, mask)

    @staticmethod
    def _join(group: _Group, rows: list[Row], cache: Any, mask: torch.Tensor) -> None:
        """Add `rows` (their cache and mask, left-padded) to the group's batch, padding on the
        left whichever side is shorter."""
        if not group.rows:
            group.rows, group.cache, group.mask = list(rows), cache, mask
            return
        assert group.mask is not None
        mine_w, its_w = group.mask.shape[1], mask.shape[1]
        width = max(mine_w, its_w)
        for mine, its in zip(group.cache.layers, cache.layers, strict=True):
            mine.keys = torch.cat([_pad_left(mine.keys, width - mine_w, 2), _pad_left(its.keys, width - its_w, 2)])
            mine.values = torch.cat([_pad_left(mine.values, width - mine_w, 2),
                                     _pad_left(its.values, width - its_w, 2)])
        group.mask = torch.cat([_pad_left(group.mask, width - mine_w, 1), _pad_left(mask, width - its_w, 1)])
        group.rows.extend(rows)

    def _step(self) -> None:
        """One decode step for every group: each row's newest token in, its next token out."""
        for key, group in list(self._groups.items()):
            if not group.rows:
                continue
            assert group.mask is not None
            rows = group.rows
            group.mask = torch.cat([group.mask, torch.ones(len(rows), 1, dtype=torch.long)], dim=1)
            out = self._forward(key, input_ids=torch.tensor([[r.ids[-1]] for r in rows]),
                                attention_mask=group.mask, past_key_values=group.cache,
                                position_ids=torch.tensor([[len(r.ids) - 1] for r in rows]))
            logits = out.logits[:, -1]
            raw = torch.log_softmax(logits.float(), dim=-1)  # for every row at once
            finished = [self._take(row, logits[i], raw[i]) for i, row in enumerate(rows)]
            if any(finished):
                self._leave(group, [i for i, f in enumerate(finished) if not f])

    def _take(self, row: Row, logits: torch.Tensor, raw: torch.Tensor) -> bool:
        """Pick and emit the row's next token from its `logits` (shape (vocab,)) and their log-softmax `raw`
        (taken before `pick`, whose processors change the logits); True (and the row has left) if the reply
        ended."""
        if row.cancelled.is_set():
            ended = True
        else:
            token = row.pick(row.ids, logits)
            row.logprobs.append(float(raw[token]))
            row.ids.append(token)
            row.generated += 1
            row.emit([token])
            looped = row.done(row.ids[len(row.prompt):])  # also on the last token: a loop it completes is cut
            ended = looped or token in row.eos or row.generated >= row.max_new_tokens or row.cancelled.is_set()
        if ended:
            row.emit(None)
            with self._cond:
                self._active.remove(row)
                self._cond.notify_all()
        return ended

    def _leave(self, group: _Group, keep: list[int]) -> None:
        """Keep only rows `keep` of the group; drop the cache columns that only padding is left in."""
        group.rows = [group.rows[i] for i in keep]
        if not keep:
            group.cache = group.mask = None
            return
        assert group.mask is not None
        index = torch.tensor(keep)
        group.mask = group.mask[index]
        start = int(group.mask.any(dim=0).nonzero()[0])
        group.mask = group.mask[:, start:]
        for layer in group.cache.layers:
            layer.keys = layer.keys[index, :, start:]
            layer.values = layer.values[index, :, start:]
