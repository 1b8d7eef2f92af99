"""Settings refuse timing values that would let the broker redeliver a live job."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from corral.errors import ConfigError
from corral.settings import Settings, get_settings


def test_defaults_pass_the_visibility_check() -> None:
    settings = Settings()
    assert settings.visibility_timeout_s > 2 * settings.request_deadline_s \
        + settings.max_retry_delay_s


def test_visibility_timeout_shorter_than_deadline_and_retry_is_refused(monkeypatch) -> None:
    monkeypatch.setenv("CORRAL_VISIBILITY_TIMEOUT_S", "100")
    monkeypatch.setenv("CORRAL_REQUEST_DEADLINE_S", "30")
    monkeypatch.setenv("CORRAL_MAX_RETRY_DELAY_S", "60")
    with pytest.raises(ValidationError, match="VISIBILITY_TIMEOUT_S=100 must exceed"):
        Settings()


def test_broker_defaults_to_the_redis_url(monkeypatch) -> None:
    monkeypatch.setenv("CORRAL_REDIS_URL", "redis://example:1/2")
    monkeypatch.delenv("CORRAL_BROKER_URL", raising=False)
    assert Settings().effective_broker_url == "redis://example:1/2"
    monkeypatch.setenv("CORRAL_BROKER_URL", "amqp://guest@localhost//")
    assert Settings().effective_broker_url == "amqp://guest@localhost//"


def test_get_settings_reports_refusals_in_one_clean_line(monkeypatch) -> None:
    monkeypatch.setenv("CORRAL_MAX_ATTEMPTS", "0")
    get_settings.cache_clear()
    try:
        with pytest.raises(ConfigError, match=r"^bad settings: CORRAL_MAX_ATTEMPTS must be"):
            get_settings()
    finally:
        get_settings.cache_clear()


def test_tls_files_must_exist_and_need_a_rediss_url(tmp_path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    assert Settings(redis_url="rediss://h/0", redis_tls_ca_file=str(ca)).redis_tls_ca_file
    assert Settings(redis_url="redis://h/0", broker_url="rediss://b/0",
                    redis_tls_ca_file=str(ca)).redis_tls_ca_file
    with pytest.raises(ValidationError, match=r"CORRAL_REDIS_TLS_CA_FILE=.* is not a file"):
        Settings(redis_url="rediss://h/0", redis_tls_ca_file=str(tmp_path / "missing.pem"))
    with pytest.raises(ValidationError, match="neither CORRAL_REDIS_URL nor"):
        Settings(redis_url="redis://h/0", redis_tls_ca_file=str(ca))
    with pytest.raises(ValidationError, match="KEY_FILE needs CORRAL_REDIS_TLS_CERT_FILE"):
        Settings(redis_url="rediss://h/0", redis_tls_key_file=str(ca))


def test_log_format_is_text_or_json(monkeypatch) -> None:
    assert Settings().log_format == "text"
    monkeypatch.setenv("CORRAL_LOG_FORMAT", "json")
    assert Settings().log_format == "json"
    monkeypatch.setenv("CORRAL_LOG_FORMAT", "xml")
    with pytest.raises(ValidationError):
        Settings()
