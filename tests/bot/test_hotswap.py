"""Hot-swap under concurrent generation, on the tiny model with adapters that answer differently."""

import gc
import threading

import pytest
import torch
from peft import LoraConfig

from bot.engine import Engine
from bot.engine_api import GenParams
from kaizen.errors import AdapterError
from tests.harness import wait_until
from tests.models import random_adapter

PROMPT = [{"role": "user", "content": "Say something."}]
PARAMS = GenParams(max_new_tokens=12)


def _make_adapter(model_dir, out, seed, r=4, targets=("q_proj", "v_proj")):
    return random_adapter(out, model_dir, seed,
                          lora=LoraConfig(r=r, lora_alpha=64, target_modules=list(targets), init_lora_weights=False))


@pytest.fixture(scope="module")
def adapters(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("adapters")
    return {
        "a": _make_adapter(tiny_model_dir, root / "a", 1),
        "b": _make_adapter(tiny_model_dir, root / "b", 2),
        "wide": _make_adapter(tiny_model_dir, root / "wide", 3, r=8, targets=("q_proj", "k_proj", "v_proj", "o_proj")),
    }


@pytest.fixture(autouse=True)
def _young_heap_only():
    """Every swap runs gc.collect(); after hundreds of tests the heap is large and each collection
    slow. Freezing what exists (it is not this module's business) keeps the collections short."""
    gc.freeze()
    yield
    gc.unfreeze()


@pytest.fixture
def engine(tiny_model_dir):
    return Engine.from_path(str(tiny_model_dir), dtype="float32", max_queue=64)


def test_adapters_change_the_answer_and_base_comes_back(engine, adapters):
    base = engine.generate(PROMPT, PARAMS)
    engine.activate("va", adapters["a"])
    a = engine.generate(PROMPT, PARAMS)
    engine.activate("vb", adapters["b"])
    assert engine.swap_mode == "hotswap"
    b = engine.generate(PROMPT, PARAMS)
    engine.activate("base", None)
    assert len({base, a, b}) == 3
    assert engine.generate(PROMPT, PARAMS) == base
    assert engine.adapter_version == "base"


def test_incompatible_adapter_is_rebuilt_and_corrupt_one_is_refused(engine, adapters, tmp_path):
    engine.activate("va", adapters["a"])
    a = engine.generate(PROMPT, PARAMS)
    engine.activate("vw", adapters["wide"])  # another rank and other target modules
    assert engine.swap_mode == "reload" and engine.generate(PROMPT, PARAMS) != a
    engine.activate("va", adapters["a"])
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "adapter_config.json").write_text((adapters["a"] / "adapter_config.json").read_text())
    (broken / "adapter_model.safetensors").write_bytes(b"\x00" * 100)
    with pytest.raises(AdapterError, match="does not fit"):
        engine.activate("vx", broken)
    assert engine.adapter_version == "va" and engine.generate(PROMPT, PARAMS) == a  # still serving va


def test_swaps_during_concurrent_generation_never_mix_or_fail(engine, adapters):
    expected = {}
    for name in ("a", "b"):
        engine.activate(f"v{name}", adapters[name])
        expected[f"v{name}"] = engine.generate(PROMPT, PARAMS)
    results, errors, stop = [], [], threading.Event()

    def chat():
        while not stop.is_set():
            try:
                gen = engine.stream(PROMPT, PARAMS)
                text = "".join(gen)
                results.append((gen.adapter_version, text))
            except Exception as exc:
                errors.append(exc)

    workers = [threading.Thread(target=chat) for _ in range(4)]
    for w in workers:
        w.start()
    for i in range(10):
        engine.activate("va" if i % 2 else "vb", adapters["a" if i % 2 else "b"])
        threading.Event().wait(0.01)  # let a reply or two through between swaps
    stop.set()
    for w in workers:
        w.join()
    assert not errors
    assert len(results) >= 10
    assert {v for v, _ in results} == {"va", "vb"}
    for version, text in results:  # each reply is exactly what its adapter alone produces
        assert text == expected[version]
    assert list(engine.model.peft_config) == ["default"]  # one adapter slot, not one per swap


def _live_tensors() -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if isinstance(o, torch.Tensor))


def test_swaps_keep_no_old_adapter_alive(engine, adapters):
    """Memory does not grow with swaps. The adapters are kilobytes, far below the noise of the
    process's resident size, so this counts the live tensors instead: a swap that kept any of the
    old adapter's tensors (a cache, a second peft slot, a reference cycle) adds some every time."""
    cycle = [("va", "a"), ("vb", "b"), ("vw", "wide"), ("base", None)]  # load, hotswap, reload, drop

    def swap_cycle() -> None:
        for version, name in cycle:
            engine.activate(version, adapters[name] if name else None)

    swap_cycle()  # the first round creates what is created once (peft's modules, the caches)
    before = _live_tensors()
    swap_cycle()
    assert _live_tensors() == before


def test_a_swap_waits_for_the_replies_in_progress_and_goes_before_the_ones_arriving(engine, adapters, monkeypatch):
    engine.activate("va", adapters["a"])
    answer_a = engine.generate(PROMPT, PARAMS)
    engine.activate("base", None)
    base = engine.generate(PROMPT, PARAMS)
    assert answer_a != base
    import bot.engine

    picker, hold = bot.engine.next_token_picker, threading.Event()

    def held_at_the_third_token(params):  # the reply in progress stays in progress until released
        pick, n = picker(params), [0]

        def slow(ids, logits):
            n[0] += 1
            if n[0] == 3:
                assert hold.wait(30)
            return pick(ids, logits)
        return slow

    monkeypatch.setattr(bot.engine, "next_token_picker", held_at_the_third_token)
    in_progress = []
    first = threading.Thread(target=lambda: in_progress.append("".join(engine.stream(PROMPT, PARAMS))))
    first.start()
    wait_until(lambda: engine._batcher.running() == 1, 30, "the first reply to start", 0.005)
    monkeypatch.setattr(bot.engine, "next_token_picker", picker)
    swap = threading.Thread(target=lambda: engine.activate("va", adapters["a"]))
    swap.start()
    wait_until(lambda: engine._batcher.waiting() == 1, 30, "the swap to wait", 0.005)
    replies = []

    def reply():
        gen = engine.stream(PROMPT, PARAMS)
        text = "".join(gen)
        replies.append((gen.adapter_version, text))  # the version is known once the reply joins a batch

    later = [threading.Thread(target=reply) for _ in range(3)]
    for t in later:
        t.start()
    wait_until(lambda: engine._batcher.waiting() == 4, 30, "the new replies to wait behind the swap", 0.005)
    assert engine.adapter_version == "base"  # the swap has not happened under the reply in progress
    hold.set()
    for t in (first, swap, *later):
        t.join(60)
    assert in_progress == [base]  # finished on the adapter it began with
    assert replies == [("va", answer_a)] * 3
