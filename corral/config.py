"""corral.toml: providers, models, prices and router rules, found, parsed and checked."""

from __future__ import annotations

import hashlib
import json
import os
import re
import tomllib
from decimal import Decimal
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from corral.errors import ConfigError

AUTO_MODEL = "auto"
EXAMPLE_CONFIG_NAME = "corral.example.toml"
BATCH_DISCOUNT = Decimal("0.5")  # OpenAI's and Anthropic's Batch APIs: half the live price


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Price(_Strict):
    """Dollars per million tokens."""

    input: Decimal = Field(ge=0)
    output: Decimal = Field(ge=0)
    cached_input: Decimal | None = Field(default=None, ge=0)
    # A token written to the 5-minute prompt cache (Anthropic: 1.25× input); default: the
    # input price, which is what OpenAI-style providers charge.
    cache_write: Decimal | None = Field(default=None, ge=0)
    # A token written to the 1-hour prompt cache (Anthropic: 2× input); default: cache_write.
    cache_write_1h: Decimal | None = Field(default=None, ge=0)

    @field_validator("input", "output", "cached_input", "cache_write", "cache_write_1h",
                     mode="before")
    @classmethod
    def _exact_decimal(cls, value: Any) -> Any:
        # TOML gives floats; str() keeps the digits the operator wrote (15.1, not 15.0999…).
        return str(value) if isinstance(value, float) else value

    @property
    def cached_input_per_mtok(self) -> Decimal:
        """The cached-input price, which defaults to the input price."""
        return self.input if self.cached_input is None else self.cached_input

    @property
    def cache_write_per_mtok(self) -> Decimal:
        """The price of a token written to a 5-minute prompt cache (default: input)."""
        return self.input if self.cache_write is None else self.cache_write

    @property
    def cache_write_1h_per_mtok(self) -> Decimal:
        """The price of a token written to a 1-hour prompt cache (default: cache_write)."""
        return self.cache_write_per_mtok if self.cache_write_1h is None else self.cache_write_1h

    def scaled(self, factor: Decimal) -> Price:
        """Every part of this price times `factor` (the batch lane's default: half)."""
        return Price.model_validate({name: None if value is None else value * factor
                                     for name, value in self.model_dump().items()})


class ProviderConfig(_Strict):
    name: str
    base_url: str
    api_key_env: str | None = None
    api_key_file: str | None = None
    accounting: Literal["openai", "anthropic"] = "openai"
    headers: dict[str, str] = Field(default_factory=dict)
    # The provider's Batch API (half price, up to 24 h): OpenAI's files + batches, or
    # Anthropic's message batches. None: live calls only.
    batch_api: Literal["openai", "anthropic"] | None = None

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("base_url must start with http:// or https://")
        return value.rstrip("/")


class ModelConfig(_Strict):
    name: str
    provider: str
    upstream: str = ""
    aliases: tuple[str, ...] = ()
    rpm: int = Field(gt=0)
    tpm: int = Field(gt=0)
    context_window: int = Field(gt=0)
    default_max_tokens: int = Field(default=1024, gt=0)
    tags: tuple[str, ...] = ()
    price: Price
    list_price: Price | None = None
    batch_price: Price | None = None  # on the batch lane; default: half of `price`
    # The provider serves this model at OpenAI's `service_tier: "flex"` (slower, cheaper):
    # the live lines of a `--deadline` batch ask for it, and answers served at it cost
    # `flex_price`.
    flex: bool = False
    flex_price: Price | None = None  # on flex; default: the batch price (as OpenAI's)
    # The provider's enqueued-token limit for this model's Batch API (OpenAI's per-model
    # "batch queue limit"): the batch lane keeps its open provider batches' tokens under it,
    # sending the rest as earlier ones finish. None: no limit.
    batch_queue_tokens: int | None = Field(default=None, gt=0)
    max_cost: Decimal | None = Field(default=None, gt=0)  # $ per batch on this model
    fallback: str | None = None  # serves a request this model refuses (too long, unknown)

    @field_validator("max_cost", mode="before")
    @classmethod
    def _exact_cap(cls, value: Any) -> Any:
        return str(value) if isinstance(value, float) else value

    @model_validator(mode="after")
    def _default_upstream(self) -> ModelConfig:
        if not self.upstream:
            object.__setattr__(self, "upstream", self.name)
        return self

    @property
    def queue(self) -> str:
        """The Celery queue this model's jobs travel on."""
        return f"corral.{self.name}"

    @property
    def effective_list_price(self) -> Price:
        """The list price, or our price when no list price is configured."""
        return self.list_price or self.price

    @property
    def effective_batch_price(self) -> Price:
        """The price on the batch lane: as configured, else half the live price."""
        return self.batch_price or self.price.scaled(BATCH_DISCOUNT)

    @property
    def effective_flex_price(self) -> Price:
        """The price of an answer served at flex: as configured, else the batch price."""
        return self.flex_price or self.effective_batch_price


class RateScope(_Strict):
    """What one provider limits as a unit: (provider, upstream model), with its limits."""

    name: str
    rpm: int
    tpm: int


class RouterRule(_Strict):
    """One routing rule: every condition it sets must hold; it names a model or a tag.

    `keywords` match as case-insensitive substrings of the messages' text (any one suffices),
    `regex` is searched in that text, `metadata` must equal the line's metadata field by
    field, and the estimated prompt must lie in [min_prompt_tokens, max_prompt_tokens].
    A `tag` rule picks the cheapest model with that tag whose limits fit the request.
    """

    name: str
    model: str | None = None
    tag: str | None = None
    keywords: tuple[str, ...] = ()
    regex: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    min_prompt_tokens: int | None = Field(default=None, ge=0)
    max_prompt_tokens: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _one_target(self) -> RouterRule:
        if (self.model is None) == (self.tag is None):
            raise ValueError(f"router rule {self.name!r} must name exactly one of model, tag")
        if self.regex is not None:
            try:
                re.compile(self.regex)
            except re.error as err:
                raise ValueError(f"router rule {self.name!r}: bad regex: {err}") from None
        return self


class RouterConfig(_Strict):
    default: str
    rules: tuple[RouterRule, ...] = ()


class CorralConfig(_Strict):
    """The whole configuration; `source` is the file it came from."""

    source: str = ""
    providers: dict[str, ProviderConfig]
    models: dict[str, ModelConfig]
    router: RouterConfig

    @model_validator(mode="after")
    def _check_references(self) -> CorralConfig:
        if not self.models:
            raise ValueError("no [models.*] configured")
        names: dict[str, str] = {}
        for model in self.models.values():
            if model.provider not in self.providers:
                raise ValueError(f"model {model.name!r} names unknown provider {model.provider!r}")
            for name in (model.name, *model.aliases):
                if name == AUTO_MODEL:
                    raise ValueError(f"{AUTO_MODEL!r} is reserved for the router")
                if name in names:
                    raise ValueError(f"name {name!r} is used by both {names[name]!r} and "
                                     f"{model.name!r}")
                names[name] = model.name
        targets = [("router.default", self.router.default)]
        targets += [(f"router rule {r.name!r}", r.model) for r in self.router.rules if r.model]
        for where, target in targets:
            if target not in names:
                raise ValueError(f"{where} names unknown model {target!r}")
        for model in self.models.values():
            if model.fallback is not None and model.fallback not in self.models:
                raise ValueError(f"model {model.name!r} falls back to unknown model "
                                 f"{model.fallback!r}")
        tags = {tag for model in self.models.values() for tag in model.tags}
        for rule in self.router.rules:
            if rule.tag is not None and rule.tag not in tags:
                raise ValueError(f"router rule {rule.name!r} names tag {rule.tag!r} that no "
                                 "model has")
        return self

    @cached_property
    def _names(self) -> dict[str, ModelConfig]:
        table = {}
        for model in self.models.values():
            table[model.name] = model
            table.update((alias, model) for alias in model.aliases)
        return table

    def resolve(self, name: str) -> ModelConfig | None:
        """The model a configured name or alias stands for, or None."""
        return self._names.get(name)

    def provider_of(self, model: ModelConfig) -> ProviderConfig:
        """The provider that serves `model`."""
        return self.providers[model.provider]

    @cached_property
    def _scopes(self) -> dict[tuple[str, str], RateScope]:
        # Two configured names with one upstream share the provider's limit: the smaller wins.
        grouped: dict[tuple[str, str], list[ModelConfig]] = {}
        for model in self.models.values():
            grouped.setdefault((model.provider, model.upstream), []).append(model)
        return {key: RateScope(name=f"{key[0]}:{key[1]}", rpm=min(m.rpm for m in models),
                               tpm=min(m.tpm for m in models))
                for key, models in grouped.items()}

    def scope_of(self, model: ModelConfig) -> RateScope:
        """The rate-limit scope `model` is counted in."""
        return self._scopes[(model.provider, model.upstream)]

    @cached_property
    def price_version(self) -> str:
        """A short fingerprint of the price tables, stored with every cost record."""
        table = {name: [m.price.model_dump(mode="json", exclude_none=True),
                        m.effective_list_price.model_dump(mode="json", exclude_none=True),
                        *([m.batch_price.model_dump(mode="json")] if m.batch_price else []),
                        *([m.flex_price.model_dump(mode="json")] if m.flex_price else [])]
                 for name, m in sorted(self.models.items())}
        digest = hashlib.sha256(json.dumps(table, sort_keys=True).encode()).hexdigest()
        return f"prices-{digest[:12]}"


def parse_config(data: dict[str, Any], source: str = "") -> CorralConfig:
    """Build a checked config from parsed TOML.

    Raises:
        ConfigError: naming the source and every problem found.
    """
    try:
        providers = {name: {**body, "name": name}
                     for name, body in data.get("providers", {}).items()}
        models = {name: {**body, "name": name} for name, body in data.get("models", {}).items()}
        router = data.get("router", {})
        router = {**router, "rules": [{"name": f"rule-{i + 1}", **rule}
                                      for i, rule in enumerate(router.get("rules", []))]}
        return CorralConfig.model_validate({"source": source, "providers": providers,
                                            "models": models, "router": router})
    except (ValidationError, ValueError, AttributeError, TypeError) as err:
        raise ConfigError(f"{source or 'config'}: {err}") from err


def load_config(path: str | Path) -> CorralConfig:
    """Read and check one corral.toml."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise ConfigError(f"cannot read config {path}: {err.strerror}") from err
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML: {err}") from err
    return parse_config(data, str(path))


def find_config_path(explicit: str | None = None) -> Path:
    """Where the config is: `--config`, then CORRAL_CONFIG, then ./corral.toml.

    Raises:
        ConfigError: naming every place looked at when none holds a config.
    """
    looked: list[str] = []
    for label, candidate in (("--config", explicit),
                             ("CORRAL_CONFIG", os.environ.get("CORRAL_CONFIG")),
                             ("./corral.toml", "corral.toml")):
        if not candidate:
            looked.append(f"{label} (not set)")
            continue
        if Path(candidate).is_file():
            return Path(candidate)
        looked.append(f"{label} ({Path(candidate).resolve()}: no such file)")
    raise ConfigError("no corral config found; looked at " + ", ".join(looked)
                      + "; `corral demo` runs on the packaged example config")


def example_config_text() -> str:
    """The packaged example config, pointed at the simulator's default port."""
    return resources.files("corral").joinpath("data", EXAMPLE_CONFIG_NAME).read_text("utf-8")
