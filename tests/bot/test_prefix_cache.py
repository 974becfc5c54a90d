"""Prompt-prefix caching (bot.prefix_cache): which prefix a prompt reuses, and on the tiny model,
that reusing one changes no reply, while an adapter swap never serves keys and values computed
under the weights before it."""

from __future__ import annotations

import pytest
import torch

from bot.engine import Engine
from bot.engine_api import GenParams
from bot.prefix_cache import PrefixCache
from tests.models import random_adapter, visible_lora


def _kv(ids: list[int], layers: int = 2) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Keys and values that record each position's token id, so a test can see which were kept."""
    t = torch.tensor(ids, dtype=torch.float32).view(1, 1, -1, 1).expand(1, 2, -1, 3)
    return [t + i for i in range(layers)], [-t - i for i in range(layers)]


def test_a_prompt_reuses_the_longest_share_of_a_kept_prefix_but_never_its_own_last_token():
    cache = PrefixCache(min_tokens=4, max_tokens=10)
    system = list(range(100, 108))
    cache.add("k", [*system, 1, 2, 3], *_kv([*system, 1, 2, 3]))
    [kept] = cache.kept("k")
    assert kept.ids.tolist() == [*system, 1, 2]  # the last token's logits are what a prefill is for
    assert kept.keys[1][0, 0, :, 0].tolist() == [float(t + 1) for t in [*system, 1, 2]]
    assert cache.match("k", [*system, 1, 9]) == (kept, 9)
    assert cache.match("k", [*system, 1, 2]) == (kept, 9)  # the same prompt: all but its last token
    assert cache.match("k", system[:4] + [7, 7, 7]) == (kept, 4)
    assert cache.match("k", system[:3] + [7, 7, 7]) == (None, 0)  # under min_tokens
    assert cache.match("other group", [*system, 1, 9]) == (None, 0)
    cache.used("k", kept, 8, prompts=3)  # a shorter share cuts it: it converges to what prompts share
    assert kept.ids.tolist() == system and kept.keys[0].shape == (1, 2, 8, 3) and len(kept.values[1][0, 0]) == 8
    assert (cache.hits, cache.reused_tokens) == (3, 24)


def test_prompts_that_share_too_little_are_kept_apart_and_the_least_recently_used_goes():
    cache = PrefixCache(entries=2, min_tokens=3, max_tokens=5)
    a, b, c = ([base + i for i in range(8)] for base in (10, 20, 30))
    for ids in (a, b):
        cache.add("k", ids, *_kv(ids))
    assert [p.ids.tolist() for p in cache.kept("k")] == [b[:5], a[:5]]  # newest first, max_tokens long
    cache.add("k", a[:4] + [0, 0], *_kv(a[:4] + [0, 0]))  # shares 4 with a kept one: nothing new kept
    assert len(cache.kept("k")) == 2
    cache.used("k", cache.match("k", a)[0], 5, prompts=1)  # a is used: now the most recent
    cache.add("k", c, *_kv(c))
    assert [p.ids.tolist()[0] for p in cache.kept("k")] == [30, 10]  # b went
    cache.clear()
    assert cache.kept("k") == [] and cache.match("k", a) == (None, 0)


SYSTEM = "You are Kaizen, a helpful assistant created by BICweb. Answer briefly and kindly, in the user's language."
CHATS = [
    [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Xin chào"}],
    [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "What is the capital of France?"}],
    [{"role": "system", "content": SYSTEM + " The user is upset: be gentle."}, {"role": "user", "content": "Hi"}],
    [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Xin chào"},
     {"role": "assistant", "content": "Chào bạn!"}, {"role": "user", "content": "Bạn tên gì?"}],
]


@pytest.fixture(scope="module")
def adapters(tiny_model_dir, tmp_path_factory):
    return [random_adapter(tmp_path_factory.mktemp("adapter") / f"a{seed}", tiny_model_dir, seed, lora=visible_lora())
            for seed in (3, 4)]


def _engine(tiny_model_dir, prefix_cache: bool) -> Engine:
    return Engine.from_path(str(tiny_model_dir), dtype="float32", prefix_cache=prefix_cache)


def test_replies_that_reuse_the_system_prompt_equal_replies_computed_whole(tiny_model_dir):
    cached, whole = _engine(tiny_model_dir, True), _engine(tiny_model_dir, False)
    params = GenParams(max_new_tokens=12)
    for messages in [*CHATS, *CHATS]:  # the second time round, each prompt also meets its own start
        a, b = cached.stream(messages, params), whole.stream(messages, params)
        assert "".join(a) == "".join(b)
        assert a.reply_ids == b.reply_ids and a.confidence == pytest.approx(b.confidence, abs=1e-5)
    prefixes = cached._batcher.prefixes
    assert prefixes is not None and whole._batcher.prefixes is None
    assert prefixes.hits == 2 * len(CHATS) - 1  # every prompt but the first reused a prefix
    [kept] = prefixes.kept(False)  # one prefix: cut to what all the chats share, the system prompt's start
    prompts = [cached.encode_chat(m)[0].tolist() for m in CHATS]
    shared = next(n for n in range(len(prompts[0])) if len({tuple(p[:n + 1]) for p in prompts}) > 1)
    assert kept.ids.tolist() == prompts[0][:shared] and shared >= cached.count_tokens(SYSTEM) // 2


def test_an_adapter_swap_never_serves_keys_and_values_from_before_it(tiny_model_dir, adapters):
    cached, whole = _engine(tiny_model_dir, True), _engine(tiny_model_dir, False)
    params = GenParams(max_new_tokens=12)
    seen = []
    for version, path in (("v1", adapters[0]), ("v2", adapters[1])):
        cached.activate(version, path)
        whole.activate(version, path)
        assert cached._batcher.prefixes.kept(True) == []
        for use in (True, False):  # each adapter group keeps prefixes of its own
            replies = ["".join(cached.stream(m, params, use_adapter=use)) for m in CHATS]
            assert replies == ["".join(whole.stream(m, params, use_adapter=use)) for m in CHATS]
            seen.append(replies)
        assert cached._batcher.prefixes.kept(True) and cached._batcher.prefixes.kept(False)
    assert seen[0] != seen[2]  # the two versions answer differently: kept keys and values of v1 would show
