"""Continuous batching (bot.batching) on the tiny model: a reply decoded in a batch is exactly the
reply decoded alone, whatever joins or leaves around it and whichever adapter each row uses."""

from __future__ import annotations

import threading

import pytest

from bot.batching import Batcher, Row, next_token_picker
from bot.engine import Engine
from bot.engine_api import GenParams
from kaizen.errors import BusyError, ModelError
from tests.harness import wait_until
from tests.models import random_adapter, visible_lora

QUESTIONS = ["Hi", "Xin chào, bạn là ai?", "What is the capital of France? Please answer in one short sentence.",
             "Đà Lạt có gì vui? " * 6, "one two three"]


@pytest.fixture(scope="module")
def adapter(tiny_model_dir, tmp_path_factory):
    return random_adapter(tmp_path_factory.mktemp("adapter") / "a", tiny_model_dir, 1, lora=visible_lora())


@pytest.fixture
def engine(tiny_model_dir):
    return Engine.from_path(str(tiny_model_dir), dtype="float32", max_queue=64, max_batch=16)


def _ask(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def _together(engine: Engine, jobs: list[tuple[str, GenParams, bool]]) -> list[tuple[str, str]]:
    """Start every job while the batcher is held, so that all join the same batch; (version, text) each."""
    out: list[tuple[str, str] | None] = [None] * len(jobs)

    def run(i: int, text: str, params: GenParams, use_adapter: bool) -> None:
        gen = engine.stream(_ask(text), params, use_adapter=use_adapter)
        reply = "".join(gen)
        out[i] = (gen.adapter_version, reply)

    with engine._batcher.exclusive():
        threads = [threading.Thread(target=run, args=(i, *job)) for i, job in enumerate(jobs)]
        for t in threads:
            t.start()
        wait_until(lambda: engine._batcher.waiting() == len(jobs) + 1, 30, "every request to wait", 0.005)
    for t in threads:
        t.join(60)
    assert all(o is not None for o in out)
    return out  # type: ignore[return-value]


def test_concurrent_greedy_replies_equal_the_replies_given_alone(engine):
    params = GenParams(max_new_tokens=16)
    alone = [engine.generate(_ask(q), params) for q in QUESTIONS]
    together = _together(engine, [(q, params, True) for q in QUESTIONS])
    assert [text for _, text in together] == alone
    assert engine._batcher.most_rows == len(QUESTIONS)  # they were decoded in one batch, not in turn


def test_sampling_with_a_seed_is_the_same_in_a_batch_as_alone(engine):
    seeded = [GenParams(max_new_tokens=12, temperature=1.0, top_p=0.9, seed=s) for s in (1, 2, 3)]
    alone = [engine.generate(_ask("Tell me a story"), p) for p in seeded]
    assert len(set(alone)) > 1  # the seeds matter
    assert [t for _, t in _together(engine, [("Tell me a story", p, True) for p in seeded])] == alone
    penalised = GenParams(max_new_tokens=12, repetition_penalty=1.3)
    assert engine.generate(_ask("Hi"), penalised) != engine.generate(_ask("Hi"), GenParams(max_new_tokens=12))


def test_rows_with_and_without_the_adapter_share_the_steps_and_each_gets_its_own(engine, adapter):
    engine.activate("va", adapter)
    params = GenParams(max_new_tokens=12)
    jobs = [(q, params, use) for q in QUESTIONS[:3] for use in (True, False)]
    alone = ["".join(engine.stream(_ask(q), p, use_adapter=use)) for q, p, use in jobs]
    assert alone[0] != alone[1]  # the adapter changes the answer
    together = _together(engine, jobs)
    assert [t for _, t in together] == alone and {v for v, _ in together} == {"va"}
    assert engine._batcher.most_rows == len(jobs)


def _rows(engine: Engine, prompts: list[list[int]], max_new_tokens: int, on_token=None) -> list[Row]:
    rows = []
    for prompt in prompts:
        out: list[int] = []

        def emit(item, out=out):
            if isinstance(item, list):
                out.extend(item)

        row = Row(prompt=prompt, max_new_tokens=max_new_tokens, eos=frozenset(), admit=lambda: False,
                  pick=next_token_picker(GenParams()), done=on_token or (lambda _reply: False), emit=emit)
        row.out = out  # type: ignore[attr-defined]
        rows.append(row)
    return rows


def test_requests_joining_and_leaving_mid_reply_do_not_change_the_others(engine):
    batcher = Batcher(lambda: engine.model, engine._adapters_for, max_batch=8)
    short, long_, mid = ([int(t) for t in engine.encode_chat(_ask(q))[0]] for q in ("Hi", "Đà Lạt có gì vui? " * 8,
                                                                                    "one two three four"))
    alone = []
    for prompt, n in ((short, 30), (long_, 10), (mid, 4)):
        [row] = _rows(engine, [prompt], n)
        batcher.submit(row)
        wait_until(lambda row=row, n=n: len(row.out) == n and batcher.running() == 0, 30, "a row alone")
        alone.append(row)
    # The first row is longer-lived; the others join at its 5th token (one with a longer prompt than
    # its cache, which pads the first row; one shorter) and leave before it ends.
    joiners = _rows(engine, [long_, mid], 0)
    joiners[0].max_new_tokens, joiners[1].max_new_tokens = 10, 4

    def at_fifth(reply: list[int]) -> bool:
        if len(reply) == 5:
            for j in joiners:
                batcher.submit(j)
        return False

    [first] = _rows(engine, [short], 30, on_token=at_fifth)
    batcher.submit(first)
    wait_until(lambda: len(first.out) == 30 and batcher.running() == 0, 30, "the batch to finish")
    together = [first, *joiners]
    assert [row.out for row in together] == [row.out for row in alone]
    assert batcher.most_rows == 3
    # Each token's raw log-probability (the reply's confidence) is the same in the batch as alone, up to rounding.
    for row, own in zip(together, alone, strict=True):
        assert len(row.logprobs) == len(row.out) and all(lp <= 0 for lp in row.logprobs)
        assert row.logprobs == pytest.approx(own.logprobs, abs=1e-4)


def test_a_cancelled_row_leaves_the_batch_at_once(engine):
    batcher = Batcher(lambda: engine.model, engine._adapters_for, max_batch=4)
    prompt = [int(t) for t in engine.encode_chat(_ask("Hi"))[0]]
    [stays, goes] = _rows(engine, [prompt, prompt], 120)

    def cancel_at_third(reply: list[int]) -> bool:
        if len(reply) == 3:
            goes.cancelled.set()
        return False

    stays.done = cancel_at_third
    batcher.submit(stays)
    batcher.submit(goes)
    wait_until(lambda: len(stays.out) == 120 and batcher.running() == 0, 60, "the batch to finish")
    assert len(goes.out) <= 4  # gone within one step of the cancel


def test_a_request_that_waits_too_long_is_told_to_retry_and_a_failed_step_ends_only_its_rows(engine):
    batcher = Batcher(lambda: engine.model, engine._adapters_for, max_batch=1, wait_timeout_s=0.0)
    prompt = [int(t) for t in engine.encode_chat(_ask("Hi"))[0]]
    errors: list[BaseException] = []
    with batcher.exclusive():
        [late] = _rows(engine, [prompt], 4)
        late.emit = lambda item: errors.append(item) if isinstance(item, BaseException) else None
        batcher.submit(late)
        threading.Event().wait(0.05)
    wait_until(lambda: errors, 10, "the waiting request to be refused")
    assert isinstance(errors[0], BusyError) and "try again" in errors[0].message

    batcher.wait_timeout_s = 600
    calls = {"n": 0}

    def broken_model():
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("out of memory")
        return engine.model

    batcher._model = broken_model
    [failing] = _rows(engine, [prompt], 4)
    failing.emit = lambda item: errors.append(item) if isinstance(item, BaseException) else None
    batcher.submit(failing)
    wait_until(lambda: len(errors) == 2, 10, "the failed step to end its row")
    assert isinstance(errors[1], ModelError) and "out of memory" in errors[1].message
    [ok] = _rows(engine, [prompt], 4)
    batcher.submit(ok)
    wait_until(lambda: len(ok.out) == 4, 10, "the next request to be served")


def test_the_batch_cache_drops_padding_once_the_rows_that_needed_it_leave(engine):
    batcher = Batcher(lambda: engine.model, engine._adapters_for, max_batch=4)
    short = [int(t) for t in engine.encode_chat(_ask("Hi"))[0]]
    long_ = [int(t) for t in engine.encode_chat(_ask("Đà Lạt có gì vui? " * 8))[0]]
    widths: list[int] = []

    def watch(reply: list[int]) -> bool:
        group = batcher._groups.get(False)
        if group is not None and group.mask is not None:
            widths.append(int(group.mask.shape[1]))
        return False

    [keeps, leaves] = _rows(engine, [short, long_], 40, on_token=watch)
    leaves.max_new_tokens = 3
    batcher.submit(keeps)
    batcher.submit(leaves)
    wait_until(lambda: len(keeps.out) == 40 and batcher.running() == 0, 30, "the batch to finish")
    assert max(widths) >= len(long_)  # padded to the longer prompt while both ran
    # Afterwards only the short row's own columns remain (token 40 came from the step that fed token 39).
    assert widths[-1] == len(short) + 39


def test_stopping_ends_the_replies_in_progress_with_a_clear_error_and_refuses_new_ones(engine):
    batcher = Batcher(lambda: engine.model, engine._adapters_for, max_batch=4)
    prompt = [int(t) for t in engine.encode_chat(_ask("Hi"))[0]]
    ended: list[BaseException] = []

    def stop_at_fifth(reply: list[int]) -> bool:
        if len(reply) == 5:
            batcher.stop(timeout=0)  # called from the decode thread itself: it does not wait for itself
        return False

    [row] = _rows(engine, [prompt], 100_000, on_token=stop_at_fifth)
    row.emit = lambda item: ended.append(item) if isinstance(item, BaseException) else None
    batcher.submit(row)
    wait_until(lambda: ended, 30, "the reply in progress to end")
    assert isinstance(ended[0], ModelError) and "shutting down" in ended[0].message
    wait_until(lambda: batcher._thread is not None and not batcher._thread.is_alive(), 30, "the thread to end")
    with pytest.raises(ModelError, match="shutting down"):
        batcher.submit(_rows(engine, [prompt], 4)[0])


def test_prompts_that_arrive_together_are_prefilled_together_and_one_that_ends_at_once_leaves(engine):
    jobs = [(q, GenParams(max_new_tokens=1 if i % 2 else 10), True) for i, q in enumerate(QUESTIONS)]
    alone = ["".join(engine.stream(_ask(q), p)) for q, p, _ in jobs]
    calls: list[int] = []
    prefill = engine._batcher._prefill_rows

    def counted(key, batch, prefix):
        calls.append(len(batch))
        return prefill(key, batch, prefix)

    engine._batcher._prefill_rows = counted
    assert [t for _, t in _together(engine, jobs)] == alone
    assert calls == [len(jobs)]  # one prefill pass for all five prompts (which share the kept system prompt)
