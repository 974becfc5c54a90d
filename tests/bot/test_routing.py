"""Routing by scope (issue 11): the learned adapter answers only questions within the taught scope
(the retrieval memory finds a related taught question); the others are answered by the base model,
and each exchange records whether the adapter was applied."""

from __future__ import annotations

from pathlib import Path

import pytest
from peft import LoraConfig

from bot.engine import Engine
from bot.engine_api import GenParams
from feedback_db import store
from tests.fakes import FakeEngine
from tests.models import random_adapter

TAUGHT = ("Giờ mở cửa của văn phòng BICweb?", "Văn phòng BICweb mở cửa từ 8 giờ đến 17 giờ.")


def _teach(kaizen) -> None:
    with kaizen.db.write() as s:
        store.add_knowledge(session=s, question=TAUGHT[0], answer=TAUGHT[1], origin="teach", verbatim=True)


def _last_exchange(kaizen):
    with kaizen.db.session() as s:
        return store.list_exchanges(session=s)[0]


@pytest.mark.parametrize("use_memory", [True, False])
def test_in_scope_questions_get_the_adapter_and_others_the_base_model(kaizen, fake_engine: FakeEngine,
                                                                      use_memory: bool) -> None:
    _teach(kaizen)
    fake_engine.activate("v3", Path("/adapters/v3"))
    # A paraphrase of the taught question: in scope (RAG or the model), so the adapter answers.
    reply = kaizen.chat.answer("Văn phòng BICweb mở cửa lúc mấy giờ?", use_memory=use_memory)
    assert fake_engine.history[-1]["use_adapter"] is True
    ex = _last_exchange(kaizen)
    assert (ex.adapter_version, ex.adapter_applied) == ("v3", True) and reply.meta["adapter_applied"] is True
    # An unrelated question: out of scope, the base model answers; the served version is still recorded.
    reply = kaizen.chat.answer("Đà Lạt có gì vui?", use_memory=use_memory)
    assert fake_engine.history[-1]["use_adapter"] is False
    ex = _last_exchange(kaizen)
    assert (ex.adapter_version, ex.adapter_applied, ex.source) == ("v3", False, "model")
    assert reply.meta["adapter_applied"] is False


def test_memory_replies_and_the_base_version_record_no_adapter(kaizen, fake_engine: FakeEngine) -> None:
    _teach(kaizen)
    reply = kaizen.chat.answer(TAUGHT[0])  # in scope, but no adapter is served
    assert fake_engine.history[-1]["use_adapter"] is True and _last_exchange(kaizen).adapter_applied is False
    fake_engine.activate("v1", Path("/adapters/v1"))
    calls = len(fake_engine.history)
    reply = kaizen.chat.answer(TAUGHT[0], use_memory=True)
    assert reply.source == "memory" and reply.text == TAUGHT[1] and len(fake_engine.history) == calls
    assert _last_exchange(kaizen).adapter_applied is False  # the memory answered, no model ran


def test_routing_always_applies_the_adapter_everywhere(kaizen, fake_engine: FakeEngine) -> None:

    kaizen.chat.settings = kaizen.chat.settings.model_copy(update={"adapter_routing": "always"})
    fake_engine.activate("v2", Path("/adapters/v2"))
    kaizen.chat.answer("Đà Lạt có gì vui?")
    assert fake_engine.history[-1]["use_adapter"] is True and _last_exchange(kaizen).adapter_applied is True


def test_the_real_engine_answers_out_of_scope_exactly_as_the_base_model(tiny_model_dir: Path, tmp_path: Path) -> None:
    """peft's disable_adapter: the routed-to-base reply is token for token the base model's."""
    engine = Engine.from_path(str(tiny_model_dir), dtype="float32")
    prompt = [{"role": "user", "content": "Say something."}]
    params = GenParams(max_new_tokens=12)
    base = engine.generate(prompt, params)
    adapter = random_adapter(tmp_path / "a", tiny_model_dir, 1, lora=LoraConfig(
        r=4, lora_alpha=64, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    engine.activate("v1", adapter)
    tuned = engine.stream(prompt, params)
    tuned_text = "".join(tuned)
    routed = engine.stream(prompt, params, use_adapter=False)
    routed_text = "".join(routed)
    assert tuned_text != base and tuned.adapter_applied and tuned.adapter_version == "v1"
    assert routed_text == base and not routed.adapter_applied and routed.adapter_version == "v1"
    assert "".join(engine.stream(prompt, params)) == tuned_text  # the adapter is back on for the next reply


def test_a_preference_adapter_is_served_on_every_reply_and_knowledge_only_in_scope(tiny_model_dir: Path,
                                                                                    tmp_path: Path) -> None:
    """A version with `preference/` (KTO on thumbs): out of scope the reply is the base model plus the
    preference adapter alone; in scope both adapters add up; a version without one drops it again."""
    from peft import PeftModel

    engine = Engine.from_path(str(tiny_model_dir), dtype="float32")
    prompt = [{"role": "user", "content": "Say something."}]
    params = GenParams(max_new_tokens=12)
    base = engine.generate(prompt, params)
    layout = {"r": 4, "lora_alpha": 64, "target_modules": ["q_proj", "v_proj"], "init_lora_weights": False}
    knowledge = random_adapter(tmp_path / "v1", tiny_model_dir, 1, lora=LoraConfig(**layout))
    random_adapter(tmp_path / "v1" / "preference", tiny_model_dir, 2, lora=LoraConfig(**layout))
    only_pref = random_adapter(tmp_path / "pref-alone", tiny_model_dir, 2, lora=LoraConfig(**layout))
    reference = Engine.from_path(str(tiny_model_dir), dtype="float32")
    reference.activate("p", only_pref)
    preference_alone = reference.generate(prompt, params)

    engine.activate("v1", knowledge)
    assert engine.preference_loaded and isinstance(engine.model, PeftModel)
    out_stream = engine.stream(prompt, params, use_adapter=False)
    outside = "".join(out_stream)
    inside = engine.stream(prompt, params)
    inside_text = "".join(inside)
    assert outside == preference_alone != base
    assert out_stream.preference_applied and not out_stream.adapter_applied  # the API's kaizen field says both
    assert inside.adapter_applied and inside.preference_applied and inside_text not in (outside, base)
    assert engine.model.active_adapters == ["default"]  # reset after each reply

    plain = random_adapter(tmp_path / "v2", tiny_model_dir, 1, lora=LoraConfig(**layout))
    engine.activate("v2", plain)  # same knowledge weights, no preference adapter
    assert not engine.preference_loaded
    plain_stream = engine.stream(prompt, params, use_adapter=False)
    assert "".join(plain_stream) == base and not plain_stream.preference_applied
