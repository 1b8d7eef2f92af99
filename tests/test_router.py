"""Routing: explicit names and aliases, keyword rules in order (any language), the default."""

from __future__ import annotations

import dataclasses

import pytest

from corral.config import load_config
from producer.router import RouteDecision, Router, UnknownModelError


@pytest.fixture()
def router(write_config) -> Router:
    return Router(load_config(write_config()))


def body(model: str, text: str) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": text}]}


def test_explicit_model_and_alias(router: Router) -> None:
    model, decision = router.route(body("big", "hello"))
    assert (model.name, decision.rule) == ("big", "explicit")
    model, decision = router.route(body("cheap", "prove it"))
    assert model.name == "small" and "alias 'cheap'" in decision.reason


@pytest.mark.parametrize(("text", "model", "rule"), [
    ("Compute the INTEGRAL of x", "big", "math"),
    ("이 식을 증명하시오", "big", "math"),
    ("Please summarize this", "small", "summaries"),
    ("다음 글을 요약해 주세요", "small", "summaries"),
    ("Summarize, then prove the lemma", "big", "math"),  # first rule in order wins
    ("hello there", "small", "default"),
])
def test_auto_uses_the_first_matching_rule(router: Router, text: str, model: str,
                                           rule: str) -> None:
    chosen, decision = router.route(body("auto", text))
    assert (chosen.name, decision.rule) == (model, rule)


def test_keywords_match_inside_content_parts(router: Router) -> None:
    request = {"model": "auto", "messages": [
        {"role": "user", "content": [{"type": "text", "text": "an integral please"}]}]}
    assert router.route(request)[0].name == "big"


def test_unknown_model_names_the_configured_ones(router: Router) -> None:
    with pytest.raises(UnknownModelError, match=r"unknown model 'gpt-9'.*big, small"):
        router.route(body("gpt-9", "x"))


def test_a_decision_as_stored_holds_every_field() -> None:
    decision = RouteDecision(model="small", rule="keyword:translate", reason="matched 'translate'")
    assert decision.as_dict() == dataclasses.asdict(decision)
