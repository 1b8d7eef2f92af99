"""tiktoken is used only from a verified file already in its cache, never downloaded."""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

import pytest

from corral import tiktoken_offline
from corral.tiktoken_offline import (
    TiktokenUnavailableError,
    cached_o200k_file,
    load_o200k_counter,
    tiktoken_cache_dir,
)
from corral.tokens import prompt_tokens_bound, script_prompt_tokens, tiktoken_prompt_tokens

CACHE_NAME = hashlib.sha1(tiktoken_offline.O200K_URL.encode()).hexdigest()


def test_cache_dir_follows_tiktokens_own_rule() -> None:
    assert tiktoken_cache_dir({"TIKTOKEN_CACHE_DIR": "/a", "DATA_GYM_CACHE_DIR": "/b"}) == Path(
        "/a")
    assert tiktoken_cache_dir({"DATA_GYM_CACHE_DIR": "/b"}) == Path("/b")
    assert tiktoken_cache_dir({}) == Path(tempfile.gettempdir()) / "data-gym-cache"
    assert tiktoken_cache_dir({"TIKTOKEN_CACHE_DIR": ""}) is None  # caching off


def test_no_usable_cache_file_means_unavailable(tmp_path: Path) -> None:
    env = {"TIKTOKEN_CACHE_DIR": str(tmp_path)}
    with pytest.raises(TiktokenUnavailableError, match=f"not in tiktoken's cache .*{CACHE_NAME}"):
        cached_o200k_file(env)
    # A file that fails the hash would be deleted and downloaded again by tiktoken.
    (tmp_path / CACHE_NAME).write_bytes(b"IQ== 0\n")
    with pytest.raises(TiktokenUnavailableError, match="sha256 differs"):
        cached_o200k_file(env)
    with pytest.raises(TiktokenUnavailableError, match="cache is off"):
        cached_o200k_file({"TIKTOKEN_CACHE_DIR": ""})


def test_a_file_matching_the_hash_is_used(tmp_path: Path, monkeypatch) -> None:
    data = b"IQ== 0\n"
    monkeypatch.setattr(tiktoken_offline, "O200K_SHA256", hashlib.sha256(data).hexdigest())
    (tmp_path / CACHE_NAME).write_bytes(data)
    assert cached_o200k_file({"TIKTOKEN_CACHE_DIR": str(tmp_path)}) == tmp_path / CACHE_NAME


def test_real_o200k_counts_stay_within_the_bound_and_near_the_script_estimate() -> None:
    """Runs only where tiktoken is installed with o200k_base cached (the [tiktoken] extra)."""
    try:
        count, _ = load_o200k_counter()
    except TiktokenUnavailableError as err:
        pytest.skip(str(err))
    korean = {"messages": [{"role": "user", "content": (
        "스테이징 클러스터에서 백업 작업이 두 번 실패했기 때문에 데이터베이스 마이그레이션은 "
        "다음 주로 연기되었습니다.")}]}
    english = {"messages": [{"role": "user", "content": (
        "The database migration has been postponed until next week because the backup job "
        "failed twice on the staging cluster.")}]}
    for body in (korean, english):
        tokens = tiktoken_prompt_tokens(count, body)
        assert tokens <= prompt_tokens_bound(body)
        assert 0.7 * tokens <= script_prompt_tokens(body) <= 1.4 * tokens
