"""`corral check`: is the config sound, is Redis up and durable, does each provider take our key?"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import httpx

from corral.api_keys import read_api_key
from corral.config import CorralConfig, ProviderConfig
from corral.errors import CorralError
from corral.redis_client import connect, redact_url
from corral.redis_durability import OVERRIDE, read_durability

TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Finding:
    """One line of the check: what was looked at, whether it is fine, and what was seen."""

    subject: str
    ok: bool
    detail: str
    # Fine to go on, but the operator should know (printed as WARN; `check` still exits 0).
    warn: bool = False

    def __str__(self) -> str:
        state = "FAIL" if not self.ok else "WARN" if self.warn else "ok"
        return f"{self.subject}: {state} ({self.detail})"


def check_redis(url: str) -> Finding:
    """Redis answers, and which version it is."""
    try:
        version = connect(url).info("server").get("redis_version", "?")
    except CorralError as err:
        return Finding("redis", False, str(err))
    return Finding("redis", True, f"{redact_url(url)}, Redis {version}")


def check_redis_durability(url: str) -> Finding:
    """AOF, snapshots and maxmemory policy: an evicting policy fails, no persistence warns."""
    subject = "redis durability"
    try:
        durability = read_durability(url)
    except CorralError as err:
        return Finding(subject, False, str(err))
    if durability.error:
        return Finding(subject, False, f"{durability.summary}; {durability.error}; workers "
                                       f"refuse to start unless {OVERRIDE}=true")
    if durability.warning:
        return Finding(subject, True, f"{durability.summary}; {durability.warning}", warn=True)
    return Finding(subject, True, durability.summary)


def check_provider(provider: ProviderConfig, models: list[str]) -> Finding:
    """GET {base_url}/models with the key the workers would use."""
    subject = f"provider {provider.name}"
    try:
        key = read_api_key(provider)
    except CorralError as err:
        return Finding(subject, False, str(err))
    headers = {**provider.headers, **({"Authorization": f"Bearer {key}"} if key else {})}
    try:
        response = httpx.get(f"{provider.base_url}/models", headers=headers, timeout=TIMEOUT_S)
    except httpx.HTTPError as err:
        return Finding(subject, False, f"{provider.base_url}: {type(err).__name__}")
    if response.status_code != 200:
        return Finding(subject, False, f"{provider.base_url}/models answered "
                                       f"{response.status_code}")
    listed = {item.get("id") for item in response.json().get("data", [])
              if isinstance(item, dict)}
    missing = [m for m in models if listed and m not in listed]
    detail = f"{provider.base_url}, {len(listed)} models listed"
    if missing:
        detail += f"; not listed: {', '.join(missing)}"
    return Finding(subject, True, detail)


def check_all(config: CorralConfig, redis_url: str) -> Iterator[Finding]:
    """Every finding, config first."""
    yield Finding("config", True, f"{config.source}: {len(config.models)} models, "
                                  f"{len(config.providers)} providers")
    reached = check_redis(redis_url)
    yield reached
    if reached.ok:
        yield check_redis_durability(redis_url)
    for provider in config.providers.values():
        upstreams = sorted({m.upstream for m in config.models.values()
                            if m.provider == provider.name})
        yield check_provider(provider, upstreams)
