"""Chooses the model for each request: explicit name or alias, else keyword rules, else default."""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from corral.config import AUTO_MODEL, CorralConfig, ModelConfig, RouterRule
from corral.pricing import Usage, price_call
from corral.tokens import estimate_prompt_tokens, iter_message_texts, requested_output_tokens


@dataclass(frozen=True)
class RouteDecision:
    """Which model serves a request and why; stored with its result and cost records."""

    model: str
    rule: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        """The decision as stored with records (by hand: `dataclasses.asdict` deep-copies, and
        took two thirds of a line's routing at intake)."""
        return {"model": self.model, "rule": self.rule, "reason": self.reason}


class UnknownModelError(ValueError):
    """The request names a model that is neither configured, an alias, nor `auto`."""


def messages_text(messages: Any) -> str:
    """All message text joined and lower-cased, for keyword matching."""
    return "\n".join(iter_message_texts(messages if isinstance(messages, list) else ())).lower()


class Router:
    """Routes by the rules of one config; rules are tried in order, the first match wins."""

    def __init__(self, config: CorralConfig) -> None:
        self._config = config
        self._rules = [(rule, tuple(k.lower() for k in rule.keywords),
                        re.compile(rule.regex, re.IGNORECASE) if rule.regex else None)
                       for rule in config.router.rules]

    def route(self, body: dict[str, Any], metadata: dict[str, Any] | None = None) \
            -> tuple[ModelConfig, RouteDecision]:
        """The model for `body` and the decision that chose it.

        Raises:
            UnknownModelError: `body.model` is not a configured name, an alias or `auto`.
        """
        requested = body.get("model")
        if requested != AUTO_MODEL:
            model = self._config.resolve(requested) if isinstance(requested, str) else None
            if model is None:
                known = ", ".join(sorted(self._config.models))
                raise UnknownModelError(f"unknown model {requested!r} (configured: {known}; "
                                        f"an alias; or {AUTO_MODEL!r})")
            how = "named" if requested == model.name else f"alias {requested!r}"
            return model, RouteDecision(model.name, "explicit", f"request {how}")
        text = messages_text(body.get("messages"))
        prompt_tokens = estimate_prompt_tokens(body)
        for rule, keywords, pattern in self._rules:
            reasons = _matches(rule, keywords, pattern, text, metadata or {}, prompt_tokens)
            if reasons is None:
                continue
            if rule.model is not None:
                model = self._config.resolve(rule.model)
                assert model is not None  # checked when the config was loaded
                return model, RouteDecision(model.name, rule.name, "; ".join(reasons))
            assert rule.tag is not None
            cheapest = self._cheapest(rule.tag, body, prompt_tokens)
            if cheapest is not None:
                model, cost = cheapest
                reasons.append(f"cheapest {rule.tag!r} model (about ${cost:.6f})")
                return model, RouteDecision(model.name, rule.name, "; ".join(reasons))
        model = self._config.resolve(self._config.router.default)
        assert model is not None
        return model, RouteDecision(model.name, "default", "no rule matched")

    def _cheapest(self, tag: str, body: dict[str, Any],
                  prompt_tokens: int) -> tuple[ModelConfig, Decimal] | None:
        """The tagged model with the lowest estimated cost for `body` that can run it."""
        candidates = []
        for model in sorted(self._config.models.values(), key=lambda m: m.name):
            output_tokens = requested_output_tokens(body, model.default_max_tokens)
            if tag not in model.tags or prompt_tokens > model.context_window \
                    or prompt_tokens + output_tokens > model.tpm:
                continue
            cost = price_call(Usage(prompt_tokens, 0, output_tokens), model.price)
            candidates.append((cost, model.name, model))
        if not candidates:
            return None
        cost, _, model = min(candidates)
        return model, cost


def _matches(rule: RouterRule, keywords: tuple[str, ...], pattern: re.Pattern[str] | None,
             text: str, metadata: dict[str, Any], prompt_tokens: int) -> list[str] | None:
    """Why `rule` matches (one reason per condition it sets), or None when it does not."""
    reasons: list[str] = []
    if keywords:
        hit = next((keyword for keyword in keywords if keyword in text), None)
        if hit is None:
            return None
        reasons.append(f"keyword {hit!r}")
    if pattern is not None:
        if not pattern.search(text):
            return None
        reasons.append(f"regex {rule.regex!r}")
    for field, wanted in rule.metadata.items():
        if metadata.get(field) != wanted:
            return None
        reasons.append(f"metadata {field}={wanted!r}")
    low, high = rule.min_prompt_tokens, rule.max_prompt_tokens
    if low is not None or high is not None:
        if (low is not None and prompt_tokens < low) or (high is not None and prompt_tokens > high):
            return None
        reasons.append(f"prompt ~{prompt_tokens} tokens in [{low or 0}, {high or '∞'}]")
    return reasons
