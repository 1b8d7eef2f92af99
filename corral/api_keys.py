"""API keys, read at call time from the environment or a key file; never stored or logged."""

from __future__ import annotations

import os
from pathlib import Path

from corral.config import ProviderConfig
from corral.errors import AuthenticationError


def read_api_key(provider: ProviderConfig) -> str | None:
    """The provider's key, or None when it is configured to need none.

    Raises:
        AuthenticationError: the named variable or file is configured but empty or missing; the
            message names where corral looked, never a key.
    """
    if provider.api_key_env:
        key = os.environ.get(provider.api_key_env, "").strip()
        if key:
            return key
        if not provider.api_key_file:
            raise AuthenticationError(
                f"provider {provider.name!r}: environment variable {provider.api_key_env} "
                "is not set on this worker")
    if provider.api_key_file:
        path = Path(provider.api_key_file).expanduser()
        try:
            key = path.read_text(encoding="utf-8").strip()
        except OSError as err:
            raise AuthenticationError(
                f"provider {provider.name!r}: cannot read api_key_file {path}: "
                f"{err.strerror}") from err
        if not key:
            raise AuthenticationError(f"provider {provider.name!r}: api_key_file {path} is empty")
        return key
    return None
