"""Chooses the model for each request: explicit name or alias, else keyword rules, else default."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from corral.config import AUTO_MODEL, CorralConfig, ModelConfig
from corral.tokens import iter_message_texts


@dataclass(frozen=True)
class RouteDecision:
    """Which model serves a request and why; stored with its result and cost records."""

    model: str
    rule: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        """The decision as stored with records."""
        return asdict(self)


class UnknownModelError(ValueError):
    """The request names a model that is neither configured, an alias, nor `auto`."""


def messages_text(messages: Any) -> str:
    """All message text joined and lower-cased, for keyword matching."""
    return "\n".join(iter_message_texts(messages if isinstance(messages, list) else ())).lower()


class Router:
    """Routes by the rules of one config; rules are tried in order, the first match wins."""

    def __init__(self, config: CorralConfig) -> None:
        self._config = config
        self._rules = [(rule, tuple(k.lower() for k in rule.keywords))
                       for rule in config.router.rules]

    def route(self, body: dict[str, Any]) -> tuple[ModelConfig, RouteDecision]:
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
        for rule, keywords in self._rules:
            for keyword in keywords:
                if keyword in text:
                    model = self._config.resolve(rule.model)
                    assert model is not None  # checked when the config was loaded
                    return model, RouteDecision(model.name, rule.name,
                                                f"keyword {keyword!r}")
        model = self._config.resolve(self._config.router.default)
        assert model is not None
        return model, RouteDecision(model.name, "default", "no rule matched")

