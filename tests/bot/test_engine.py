"""The engine on a tiny random-weight model: chat template, trimming, streaming, batching, queue."""

import math
import threading

import pytest
import torch

from bot.engine import Engine
from bot.engine_api import GenParams
from kaizen.errors import BusyError, InputError, ModelError
from kaizen.repetition import is_degenerate
from tests.harness import wait_until


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    return Engine.from_path(str(tiny_model_dir), dtype="float32", context_tokens=256, max_queue=2)


def _chat(n_turns, words=10):
    msgs = [{"role": "system", "content": "You are Kaizen."}]
    for i in range(n_turns):
        msgs += [{"role": "user", "content": f"question {i} " + "x " * words},
                 {"role": "assistant", "content": f"answer {i} " + "y " * words}]
    return msgs + [{"role": "user", "content": "the newest question"}]


def test_stream_yields_text_and_counts_tokens(engine):
    gen = engine.stream(_chat(1), GenParams(max_new_tokens=8))
    chunks = list(gen)
    assert "".join(chunks).strip() and all(chunks)
    assert "".join(chunks) == engine.generate(_chat(1), GenParams(max_new_tokens=8))  # greedy: the same text
    assert gen.prompt_tokens == engine.encode_chat(_chat(1)).shape[1]
    assert 1 <= gen.completion_tokens <= 8
    assert gen.adapter_version == "base"


def test_greedy_is_deterministic(engine):
    p = GenParams(max_new_tokens=6)
    assert engine.generate(_chat(0), p) == engine.generate(_chat(0), p)


def test_a_tiny_temperature_is_greedy_not_an_overflow(engine):
    greedy = engine.generate(_chat(0), GenParams(max_new_tokens=6))
    assert engine.generate(_chat(0), GenParams(max_new_tokens=6, temperature=1e-300, top_p=1e-9)) == greedy


def test_history_is_trimmed_keeping_system_and_newest_turns(engine):
    msgs = _chat(30)
    kept = engine.fit_messages(msgs, max_new_tokens=32)
    assert kept[0]["role"] == "system"
    assert kept[-1]["content"] == "the newest question"
    assert kept[1]["role"] == "user"
    assert len(kept) < len(msgs)
    assert engine.encode_chat(kept).shape[1] <= 256 - 32
    assert kept[1:] == msgs[len(msgs) - len(kept) + 1:]  # a contiguous run of the newest turns


def test_a_message_too_long_for_the_window_is_refused(engine):
    with pytest.raises(InputError, match="too long"):
        engine.stream([{"role": "user", "content": "word " * 1000}], GenParams(max_new_tokens=16))


def test_queue_is_bounded(engine):
    held = [engine.stream(_chat(0), GenParams(max_new_tokens=2)) for _ in range(2)]
    with pytest.raises(BusyError):
        engine.stream(_chat(0), GenParams(max_new_tokens=2))
    for g in held:
        g.close()
    "".join(engine.stream(_chat(0), GenParams(max_new_tokens=2)))  # places are free again


def test_concurrent_generations_all_succeed_within_the_batch_limit(tiny_model_dir):
    engine = Engine.from_path(str(tiny_model_dir), dtype="float32", context_tokens=256, max_queue=8, max_batch=2)
    results, errors = [], []

    def worker():
        try:
            results.append(engine.generate(_chat(0), GenParams(max_new_tokens=4)))
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 6 and len(set(results)) == 1
    assert 1 <= engine._batcher.most_rows <= 2  # never more rows than max_batch at once


def test_abandoned_stream_stops_and_frees_its_row(engine):
    gen = iter(engine.stream(_chat(0), GenParams(max_new_tokens=200)))
    next(gen, None)
    gen.close()
    wait_until(lambda: engine._batcher.running() == 0, 5, "the abandoned reply to leave the batch", 0.01)
    assert "".join(engine.stream(_chat(0), GenParams(max_new_tokens=2)))


def test_missing_model_gives_clear_error(tmp_path):
    with pytest.raises(ModelError, match="--model"):
        Engine.from_path(str(tmp_path / "nothing-here"))


@pytest.mark.parametrize("question", ["Xin chào, bạn là ai?", "What is your name?", "Đà Lạt có gì vui?"])
def test_the_loop_guard_ends_a_looping_reply_at_its_first_copy(engine, question):
    """The tiny random model loops on these (as SmolLM2-135M did in issue 13); the guard cuts the
    reply where the loop starts repeating, before any repeat is streamed."""
    messages = [{"role": "user", "content": question}]
    unguarded = engine.stream(messages, GenParams(max_new_tokens=96, loop_guard=False))
    full = "".join(unguarded)
    assert unguarded.completion_tokens == 96 and not unguarded.looped
    assert is_degenerate(full)

    guarded = engine.stream(messages, GenParams(max_new_tokens=96))
    chunks = list(guarded)
    assert guarded.looped and guarded.completion_tokens < 96
    assert "".join(chunks) == guarded.text and full.startswith(guarded.text)  # streamed = kept: nothing retracted
    assert not is_degenerate(guarded.text)


def test_finish_reason_says_length_when_the_limit_cut_the_reply_and_no_broken_character_is_given(engine):
    """Issue 14, kind 2 (the part the engine owns): a reply cut by max_new_tokens says "length", and a
    character whose bytes did not all arrive never reaches the reader (the tiny model emits such bytes)."""
    cut = engine.stream(_chat(0), GenParams(max_new_tokens=8, loop_guard=False))
    text = "".join(cut)
    assert cut.finish_reason == "length" and cut.completion_tokens == 8
    looped = engine.stream([{"role": "user", "content": "Xin chào, bạn là ai?"}], GenParams(max_new_tokens=96))
    texts = [text, "".join(looped)]
    assert looped.looped and looped.finish_reason == "stop"  # the guard ended it, not the limit
    assert not any("\ufffd" in t for t in texts), texts


def test_the_loop_guard_sees_a_capitalized_repeat_as_the_same_tokens(engine):
    tok = engine.tokenizer
    canon = engine.canonical_tokens
    assert len(canon) == len(tok)
    vocab = tok.get_vocab()
    pairs = [(i, vocab["Ġ" + w.capitalize()]) for w, i in ((t[1:], i) for t, i in vocab.items() if t.startswith("Ġ"))
             if w.isalpha() and w.islower() and "Ġ" + w.capitalize() in vocab]
    assert len(pairs) >= 5  # " the" / " The" and the like
    assert all(canon[a] == canon[b] for a, b in pairs)
    assert canon[vocab["Ġthe"]] != canon[vocab["Ġa"]]


def test_a_reply_limit_beyond_the_context_is_lowered_to_the_room_left(engine):
    messages = [{"role": "system", "content": "You are Kaizen."}, {"role": "user", "content": "Hi"}]
    room = engine.reply_room(messages)
    assert 0 < room < 256
    reply = engine.stream(messages, GenParams(max_new_tokens=4096, loop_guard=False))
    "".join(reply)
    assert 0 < reply.completion_tokens <= room and reply.prompt_tokens + reply.completion_tokens <= 256
    with pytest.raises(InputError, match="too long"):  # a message that leaves no room at all is still refused
        engine.stream([{"role": "user", "content": "word " * 400}], GenParams(max_new_tokens=8))


def test_a_stop_string_ends_the_reply_before_it_and_is_never_streamed(engine):
    messages = [{"role": "user", "content": "Tell me a story."}]
    free = engine.stream(messages, GenParams(max_new_tokens=40, loop_guard=False))
    text = "".join(free)
    assert len(text) > 20
    stop = text[len(text) // 2: len(text) // 2 + 4]  # some text in the middle of the greedy reply
    assert stop.strip()
    before = text[:text.find(stop)]
    reply = engine.stream(messages, GenParams(max_new_tokens=40, loop_guard=False, stop=(stop, "never seen")))
    chunks = list(reply)
    assert "".join(chunks) == before and reply.text == before
    assert reply.stopped and reply.finish_reason == "stop"
    assert all(stop not in "".join(chunks[: i + 1]) for i in range(len(chunks)))
    assert reply.completion_tokens < free.completion_tokens  # generation ended there, not at the limit


def test_a_seed_makes_a_sampled_reply_reproducible(engine):
    messages = [{"role": "user", "content": "Hi"}]
    a, b = ("".join(engine.stream(messages, GenParams(max_new_tokens=12, temperature=1.0, seed=3)))
            for _ in range(2))
    assert a == b


def test_a_reply_waiting_for_a_place_in_the_batch_is_not_taken_for_a_stalled_model():
    from bot.engine import _TokenQueue

    tokens = _TokenQueue(timeout=0.05, waiting=5.0)  # the first token may come after the wait for a place
    threading.Timer(0.3, lambda: (tokens.put([1]), tokens.put(None))).start()
    assert list(tokens) == [[1]]
    stalled = _TokenQueue(timeout=0.05)
    stalled.put([1])
    with pytest.raises(ModelError, match="produced nothing"):
        list(stalled)  # after the first token, a model silent for `timeout` has stalled


def _teacher_forced(engine, gen):
    """The log-probability of each of `gen`'s reply tokens under the model's raw distribution, computed
    independently of the batcher: one plain forward pass over the prompt and the reply, no cache."""
    prompt = gen.input_ids[0].tolist()
    ids = torch.tensor([prompt + gen.reply_ids])
    with torch.inference_mode():
        logits = engine.model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0].float()
    logp = torch.log_softmax(logits, dim=-1)
    return [float(logp[len(prompt) - 1 + i, t]) for i, t in enumerate(gen.reply_ids)]


@pytest.mark.parametrize("params", [
    GenParams(max_new_tokens=12),  # greedy
    GenParams(max_new_tokens=96),  # greedy, cut by the loop guard: only the tokens kept count
    GenParams(max_new_tokens=12, temperature=1.5, top_p=0.8, repetition_penalty=1.3, seed=7),  # sampled
], ids=["greedy", "looped", "sampled"])
def test_confidence_is_the_mean_raw_log_probability_of_the_reply_tokens(engine, params):
    """The model's own confidence: the chosen tokens' log-probabilities under its raw logits, whatever
    the sampling settings did to pick them (the sampled reply's tokens are scored without them)."""
    gen = engine.stream([{"role": "user", "content": "Xin chào, bạn là ai?"}], params)
    assert gen.confidence is None  # known once read
    "".join(gen)
    assert len(gen.reply_ids) == gen.completion_tokens >= 1
    assert gen.looped == (params.max_new_tokens == 96) and (not gen.looped or gen.completion_tokens < 96)
    expected = _teacher_forced(engine, gen)
    assert gen.confidence is not None and math.isfinite(gen.confidence) and gen.confidence <= 0
    assert gen.confidence == pytest.approx(sum(expected) / len(expected), abs=1e-3)


def test_the_confidence_of_a_reply_cut_at_a_stop_string_counts_the_tokens_generated_until_then(engine):
    messages = [{"role": "user", "content": "Tell me a story."}]
    text = "".join(engine.stream(messages, GenParams(max_new_tokens=40, loop_guard=False)))
    reply = engine.stream(messages, GenParams(max_new_tokens=40, loop_guard=False, stop=(text[20:24],)))
    "".join(reply)
    assert reply.stopped and 1 <= reply.completion_tokens < 40
    expected = _teacher_forced(engine, reply)
    assert reply.confidence == pytest.approx(sum(expected) / len(expected), abs=1e-3)


def test_an_abandoned_reply_reports_no_confidence(engine):
    gen = engine.stream(_chat(0), GenParams(max_new_tokens=8, loop_guard=False))
    chunks = iter(gen)
    next(chunks)
    chunks.close()
    assert gen.confidence is None


def test_the_base_path_stays_the_base_model_once_an_adapter_is_loaded(tiny_model_dir, tmp_path):
    """Loading a LoRA version used to `.to(bfloat16)` the whole model, which also cast the rotary
    embedding's float32 `inv_freq`: every reply routed to the base model changed (17 of 26 greedy replies
    of the real model in the study)."""
    from kaizen import adapters
    from tests.models import random_adapter

    eng = Engine.from_path(str(tiny_model_dir), dtype="bfloat16", context_tokens=256)
    ids = eng.encode_chat([{"role": "user", "content": "Xin chào, hôm nay trời thế nào? Tell me a long story."}])
    with torch.inference_mode():
        before = eng.model(ids).logits
    work = random_adapter(adapters.new_workdir(tmp_path), tiny_model_dir, seed=3)
    eng.activate("v1", adapters.publish(work, tmp_path, "v1", {}))
    assert eng.adapter_version == "v1"
    rotary = {n: b.dtype for n, b in eng.model.named_buffers() if n.endswith("inv_freq")}
    assert rotary and set(rotary.values()) == {torch.float32}, rotary
    assert {p.dtype for p in eng.model.parameters()} == {torch.bfloat16}  # the LoRA weights as served
    with torch.inference_mode():
        with eng.model.disable_adapter():
            after = eng.model(ids).logits
        tuned = eng.model(ids).logits
    assert torch.equal(before, after)  # bit for bit: the base model
    assert not torch.equal(before, tuned)  # while the adapter itself does apply
    eng.activate("base", None)
    with torch.inference_mode():
        assert torch.equal(eng.model(ids).logits, before)
