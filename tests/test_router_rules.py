"""Router rules beyond keywords: regex, metadata, prompt-token ranges, order, cheapest by tag."""

from __future__ import annotations

import pytest

from corral.config import parse_config
from corral.errors import ConfigError
from producer.router import Router


def model(name: str, *, price_in: float, price_out: float, ctx: int = 10_000,
          tpm: int = 1_000_000, tags: tuple[str, ...] = ()) -> dict:
    return {"provider": "p", "rpm": 1000, "tpm": tpm, "context_window": ctx,
            "default_max_tokens": 100, "tags": list(tags),
            "price": {"input": price_in, "output": price_out}}


def router(*rules: dict) -> Router:
    return Router(parse_config({
        "providers": {"p": {"base_url": "http://127.0.0.1:9/v1"}},
        "models": {
            "strong": model("strong", price_in=10, price_out=30, ctx=200_000,
                            tags=("reasoning", "long-context")),
            "coder": model("coder", price_in=1, price_out=4, tags=("code",)),
            "thinker": model("thinker", price_in=2, price_out=6, ctx=1_000,
                             tags=("reasoning",)),
            "cheap": model("cheap", price_in=0.1, price_out=0.2),
        },
        "router": {"default": "cheap", "rules": list(rules)},
    }))


def route(r: Router, text: str, metadata: dict | None = None, **body: object):
    request = {"model": "auto", "messages": [{"role": "user", "content": text}], **body}
    chosen, decision = r.route(request, metadata)
    return chosen.name, decision


def test_regex_matches_case_insensitively() -> None:
    r = router({"name": "sql", "regex": r"\bselect\b.+\bfrom\b", "model": "coder"})
    assert route(r, "Fix: SELECT a FROM t")[0] == "coder"
    assert route(r, "selection from the menu")[0] == "cheap"


def test_metadata_fields_must_all_match() -> None:
    r = router({"name": "math", "metadata": {"task": "math", "tier": 1}, "model": "strong"})
    name, decision = route(r, "anything", {"task": "math", "tier": 1, "extra": True})
    assert name == "strong" and "metadata task='math'" in decision.reason
    assert route(r, "anything", {"task": "math", "tier": 2})[0] == "cheap"
    assert route(r, "anything", None)[0] == "cheap"


def test_prompt_token_range_bounds_are_inclusive() -> None:
    r = router({"name": "long", "min_prompt_tokens": 10, "max_prompt_tokens": 20,
                "model": "strong"})
    assert route(r, "x" * 36)[0] == "cheap"  # 9 tokens
    assert route(r, "x" * 40)[0] == "strong"  # 10
    assert route(r, "x" * 80)[0] == "strong"  # 20
    assert route(r, "x" * 84)[0] == "cheap"  # 21


def test_all_conditions_of_a_rule_must_hold_and_the_first_rule_wins() -> None:
    r = router({"name": "code-long", "keywords": ["python"], "min_prompt_tokens": 50,
                "model": "strong"},
               {"name": "code", "keywords": ["python", "파이썬"], "model": "coder"},
               {"name": "never-reached", "keywords": ["python"], "model": "cheap"})
    assert route(r, "python please")[1].rule == "code"
    assert route(r, "파이썬 코드")[1].rule == "code"
    assert route(r, "python " + "x" * 200)[1].rule == "code-long"


def test_a_tag_rule_picks_the_cheapest_tagged_model_that_fits() -> None:
    r = router({"name": "think", "keywords": ["prove"], "tag": "reasoning"})
    name, decision = route(r, "prove it")
    assert name == "thinker" and "cheapest 'reasoning' model" in decision.reason
    # Too long for the cheaper model's 1,000-token window: the next cheapest that fits.
    assert route(r, "prove " + "x" * 8000)[0] == "strong"


def test_a_tag_rule_with_no_model_that_fits_falls_through() -> None:
    r = router({"name": "code", "keywords": ["bug"], "tag": "code"})
    assert route(r, "bug", max_tokens=2_000_000)[0] == "cheap"


def test_rules_must_name_one_target_and_a_known_tag() -> None:
    with pytest.raises(ConfigError, match="exactly one of model, tag"):
        router({"name": "both", "model": "cheap", "tag": "code"})
    with pytest.raises(ConfigError, match="tag 'vision' that no model has"):
        router({"name": "v", "tag": "vision"})
    with pytest.raises(ConfigError, match="bad regex"):
        router({"name": "r", "regex": "(", "model": "cheap"})
