"""corral.toml loading: the example config, lookup order, and refusals that name the problem."""

from __future__ import annotations

import tomllib
from decimal import Decimal
from pathlib import Path

import pytest

from corral.config import example_config_text, find_config_path, load_config, parse_config
from corral.errors import ConfigError


def test_example_config_has_the_four_models_and_their_rules() -> None:
    config = parse_config(tomllib.loads(example_config_text()))
    assert set(config.models) == {"claude-opus-4.6", "gpt-5.4", "deepseek-v3.2", "gpt-5.4-mini"}
    assert [r.model for r in config.router.rules] == [
        "claude-opus-4.6", "claude-opus-4.6", "gpt-5.4", "deepseek-v3.2"]
    cheapest = min(config.models.values(), key=lambda m: m.price.input + m.price.output)
    assert cheapest.name == "deepseek-v3.2"


def test_prices_keep_the_decimal_digits_written(write_config) -> None:
    config = load_config(write_config())
    assert config.models["big"].price.input == Decimal("3.0")
    assert config.models["small"].price.cached_input_per_mtok == Decimal("0.1")
    assert config.models["small"].effective_list_price == config.models["small"].price


def test_aliases_resolve_and_upstream_defaults_to_the_name(write_config) -> None:
    config = load_config(write_config())
    assert config.resolve("reasoner").name == "big"
    assert config.resolve("nope") is None
    assert config.models["big"].upstream == "sim-big"


def test_unknown_provider_is_refused_with_its_name() -> None:
    data = tomllib.loads(example_config_text())
    data["models"]["gpt-5.4"]["provider"] = "elsewhere"
    with pytest.raises(ConfigError, match="unknown provider 'elsewhere'"):
        parse_config(data)


def test_alias_colliding_with_a_model_name_is_refused() -> None:
    data = tomllib.loads(example_config_text())
    data["models"]["gpt-5.4"]["aliases"] = ["deepseek-v3.2"]
    with pytest.raises(ConfigError, match="used by both"):
        parse_config(data)


def test_router_rule_naming_an_unknown_model_is_refused() -> None:
    data = tomllib.loads(example_config_text())
    data["router"]["rules"][0]["model"] = "gpt-9"
    with pytest.raises(ConfigError, match="unknown model 'gpt-9'"):
        parse_config(data)


def test_missing_config_names_every_place_looked(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CORRAL_CONFIG", raising=False)
    with pytest.raises(ConfigError) as err:
        find_config_path(None)
    assert "--config" in str(err.value) and "CORRAL_CONFIG" in str(err.value)
    assert "./corral.toml" in str(err.value)


def test_config_lookup_prefers_flag_then_env_then_cwd(tmp_path: Path, monkeypatch) -> None:
    for name in ("a.toml", "b.toml", "corral.toml"):
        (tmp_path / name).write_text("")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CORRAL_CONFIG", "b.toml")
    assert find_config_path("a.toml") == Path("a.toml")
    assert find_config_path(None) == Path("b.toml")
    monkeypatch.delenv("CORRAL_CONFIG")
    assert find_config_path(None) == Path("corral.toml")


def test_invalid_toml_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "corral.toml"
    path.write_text("[models\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path)


def test_the_batch_lane_is_configured_per_provider_and_priced_per_model() -> None:
    data = tomllib.loads(example_config_text())
    assert parse_config(data).providers["gateway"].batch_api is None  # live calls only
    data["providers"]["gateway"]["batch_api"] = "openai"
    data["models"]["gpt-5.4"]["batch_price"] = {"input": 1.1, "output": 4.4}
    config = parse_config(data)
    assert config.providers["gateway"].batch_api == "openai"
    assert config.models["gpt-5.4"].effective_batch_price.input == Decimal("1.1")
    # Unset: half of every part of the live price.
    opus = config.models["claude-opus-4.6"]
    assert opus.effective_batch_price.input == opus.price.input / 2
    assert opus.effective_batch_price.output == opus.price.output / 2
    assert opus.effective_batch_price.cached_input_per_mtok == \
        opus.price.cached_input_per_mtok / 2


def test_an_unknown_batch_api_is_refused() -> None:
    data = tomllib.loads(example_config_text())
    data["providers"]["gateway"]["batch_api"] = "bedrock"
    with pytest.raises(ConfigError, match="batch_api"):
        parse_config(data)
