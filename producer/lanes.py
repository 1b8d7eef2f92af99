"""Which lines may go to a provider's Batch API: the provider has one, and the line's body
translates to it (Anthropic's Messages shape cannot say everything a chat body can)."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable
from typing import Any

from corral.anthropic_messages import UntranslatableRequest, to_messages_params
from corral.config import CorralConfig, ModelConfig
from producer.planner import Plan

ANTHROPIC_CUSTOM_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # what Message Batches accept


def batch_lane_refusal(config: CorralConfig, model: ModelConfig, custom_id: str,
                       body: Callable[[], dict[str, Any]]) -> str | None:
    """Why this line must run live, or None when the batch lane can take it; `body` is
    read only when the answer depends on it (Anthropic's shape)."""
    api = config.provider_of(model).batch_api
    if api is None:
        return f"provider {model.provider} has no batch_api"
    if api == "anthropic":
        if not ANTHROPIC_CUSTOM_ID.match(custom_id):
            return "custom_id not accepted by Anthropic's Message Batches (1-64 of A-Z a-z " \
                   "0-9 _ -)"
        try:
            to_messages_params(body(), model=model.upstream,
                               default_max_tokens=model.default_max_tokens)
        except UntranslatableRequest as err:
            return f"not translatable to Anthropic's Messages: {err}"
    return None


def lane_group(config: CorralConfig, model: ModelConfig, custom_id: str,
               body: Callable[[], dict[str, Any]]) -> tuple[str, str | None]:
    """The plan's group of a line (its scope; apart, its lines that must stay live) and why
    it must stay live (None: the batch lane may take it)."""
    scope = config.scope_of(model)
    refusal = batch_lane_refusal(config, model, custom_id, body)
    return (scope.name if refusal is None else f"{scope.name} (live only)"), refusal


class LanePicker:
    """Puts each accepted line of a file on the lane a plan chose: of each planned group
    (a scope's lines that may go to a Batch API, and apart those that must stay live), the
    last `batch` lines in input order go to the batch lane, so live lines start first."""

    def __init__(self, config: CorralConfig, plan: Plan) -> None:
        self._config = config
        self._left_live = {key: split.live for key, split in plan.splits.items()}
        self._seen: Counter[str] = Counter()
        self.batch_by_model: Counter[str] = Counter()

    def __call__(self, custom_id: str, model_name: str, job: str) -> tuple[str, str]:
        """The lane ("batch" or "live") of the next accepted line (routed to `model_name`),
        and its stored job: a live line of a model with flex asks for the flex tier."""
        model = self._config.models[model_name]
        key, refusal = lane_group(self._config, model, custom_id,
                                  lambda: dict(json.loads(job)["body"]))
        self._seen[key] += 1
        if refusal is not None or self._seen[key] <= self._left_live.get(key, 0):
            return "live", with_flex(job) if model.flex else job
        self.batch_by_model[model_name] += 1
        return "batch", job


def with_flex(job: str) -> str:
    """A stored job whose body asks for the flex service tier (unless it names a tier)."""
    stored = json.loads(job)
    if stored["body"].get("service_tier") is not None:
        return job
    stored["body"]["service_tier"] = "flex"
    return json.dumps(stored, separators=(",", ":"))
