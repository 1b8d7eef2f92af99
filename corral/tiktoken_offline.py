"""tiktoken's o200k_base counts, only from an encoding file already in its cache: no download."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

# Where tiktoken fetches o200k_base from, which names its cache file, and the file's sha256
# (tiktoken's own check: a cached file that fails it is deleted and downloaded again).
O200K_URL = "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken"
O200K_SHA256 = "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"


class TiktokenUnavailableError(Exception):
    """tiktoken cannot count offline; the message says why."""


def tiktoken_cache_dir(environ: Mapping[str, str] | None = None) -> Path | None:
    """The folder tiktoken caches encodings in, by its own rule: TIKTOKEN_CACHE_DIR, else
    DATA_GYM_CACHE_DIR, else `data-gym-cache` in the temp folder; None when caching is off
    (an empty value), where every load would download."""
    env = os.environ if environ is None else environ
    for name in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR"):
        if name in env:
            return Path(env[name]) if env[name] else None
    return Path(tempfile.gettempdir()) / "data-gym-cache"


def cached_o200k_file(environ: Mapping[str, str] | None = None) -> Path:
    """The cached o200k_base file tiktoken would read instead of downloading.

    Raises:
        TiktokenUnavailableError: caching is off, the file is absent, or it fails the hash.
    """
    cache_dir = tiktoken_cache_dir(environ)
    if cache_dir is None:
        raise TiktokenUnavailableError("tiktoken's cache is off (TIKTOKEN_CACHE_DIR is empty)")
    path = cache_dir / hashlib.sha1(O200K_URL.encode()).hexdigest()
    try:
        data = path.read_bytes()
    except OSError:
        raise TiktokenUnavailableError(f"o200k_base is not in tiktoken's cache ({path})") from None
    if hashlib.sha256(data).hexdigest() != O200K_SHA256:
        raise TiktokenUnavailableError(f"{path} is not o200k_base (sha256 differs)")
    return path


def check_o200k_offline() -> Path:
    """The cached o200k_base file, once tiktoken is known to be installed.

    Raises:
        TiktokenUnavailableError: tiktoken is not installed or the file is not cached.
    """
    if importlib.util.find_spec("tiktoken") is None:
        raise TiktokenUnavailableError(
            "tiktoken is not installed (pip install 'corral[tiktoken]')")
    return cached_o200k_file()


def load_o200k_counter() -> tuple[Callable[[str], int], Path]:
    """A function counting o200k_base tokens of a text (special tokens' text counted as plain
    text), and the cached file it was loaded from.

    Raises:
        TiktokenUnavailableError: tiktoken is not installed or the file is not cached.
    """
    path = check_o200k_offline()
    try:
        import tiktoken
    except ImportError as err:  # installed but broken, e.g. its `regex` dependency missing
        raise TiktokenUnavailableError(f"tiktoken does not import: {err}") from None
    encoding = tiktoken.get_encoding("o200k_base")

    def count(text: str) -> int:
        return len(encoding.encode_ordinary(text))

    return count, path
