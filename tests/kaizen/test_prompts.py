"""Persona: the system prompt carries name, creator, company, style, tone and facts; budget warning."""

import pytest

from kaizen.errors import InputError
from kaizen.prompts import Persona, budget_warning, build_system_prompt, with_context


def test_prompt_names_agent_creator_company_and_style():
    p = Persona(agent_name="Bé Na", creator="BICweb", company="BICweb builds websites in Hà Nội.",
                style="Be polite and expert.")
    text = build_system_prompt(p, tone="Be warm.")
    assert text.startswith("You are Bé Na, a helpful assistant created by BICweb.")
    assert "BICweb builds websites in Hà Nội." in text
    assert text.endswith("Be polite and expert. Be warm.")


def test_retrieved_facts_go_with_the_question_and_override_memory():
    assert "overrides anything you remember" in build_system_prompt(Persona(), with_context=True)
    assert "overrides" not in build_system_prompt(Persona())
    assert with_context("Mấy giờ mở cửa?", ["8 giờ sáng.", "Thứ Hai đến thứ Sáu."]) == (
        "Context: 8 giờ sáng.\nThứ Hai đến thứ Sáu.\n\nMấy giờ mở cửa?")
    assert with_context("hi", []) == "hi"


def test_default_prompt_is_concise():
    assert len(build_system_prompt(Persona(), tone="Be warm.").split()) < 45


def test_budget_warning_only_over_budget():
    count = lambda s: len(s.split())  # noqa: E731
    short = build_system_prompt(Persona())
    assert budget_warning(short, count, 200) is None
    long = build_system_prompt(Persona(company="word " * 300))
    warning = budget_warning(long, count, 200)
    assert warning and "over the budget of 200" in warning


def test_roundtrip_and_validation():
    p = Persona(agent_name="  Kaizen ", company="ACME")
    assert Persona.from_dict(p.to_dict()) == p
    assert Persona.from_dict({"agent_name": "X", "unknown": 1}).agent_name == "X"
    assert p.validated().agent_name == "Kaizen"
    with pytest.raises(InputError):
        Persona(agent_name=" ").validated()
    with pytest.raises(InputError):
        Persona(company="x" * 5000).validated()
