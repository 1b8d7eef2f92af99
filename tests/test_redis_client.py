"""Redis URLs: passwords are masked in every message; rediss:// gets the TLS settings."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
import redis

from corral.errors import RedisUnavailableError
from corral.redis_client import (
    connect,
    redact_url,
    tls_options,
    tls_options_for,
    unavailable_message,
)
from corral.settings import Settings


@pytest.mark.parametrize(("url", "shown"), [
    ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
    ("redis://:s3cret@host:6379/0", "redis://:***@host:6379/0"),
    ("rediss://app:s3cret@host:6380/2", "rediss://app:***@host:6380/2"),
    ("redis://s3cret@host/0", "redis://***@host/0"),
    ("redis://:p@ss:w@rd@host/0", "redis://:***@host/0"),
    ("rediss://host/0?ssl_ca_certs=/ca.pem&password=s3cret", "rediss://host/0?ssl_ca_certs="
                                                             "/ca.pem&password=***"),
    ("unix:///run/redis.sock?db=1", "unix:///run/redis.sock?db=1"),
    ("not a url", "not a url"),
])
def test_redact_url_masks_every_password(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_tls_options_verify_the_server_and_pass_the_files(tmp_path: Path) -> None:
    files = {name: tmp_path / name for name in ("ca.pem", "client.pem", "client.key")}
    for path in files.values():
        path.write_text("x")
    settings = Settings(redis_url="rediss://host/0", redis_tls_ca_file=str(files["ca.pem"]),
                        redis_tls_cert_file=str(files["client.pem"]),
                        redis_tls_key_file=str(files["client.key"]))
    assert tls_options(settings) == {
        "ssl_cert_reqs": ssl.CERT_REQUIRED, "ssl_ca_certs": str(files["ca.pem"]),
        "ssl_certfile": str(files["client.pem"]), "ssl_keyfile": str(files["client.key"])}
    assert tls_options(Settings(redis_url="rediss://host/0")) == \
        {"ssl_cert_reqs": ssl.CERT_REQUIRED}  # the system's CAs


def test_only_rediss_urls_get_tls_options() -> None:
    settings = Settings(redis_url="rediss://host/0")
    assert tls_options_for("redis://host/0", settings) == {}
    assert tls_options_for("unix:///tmp/r.sock", settings) == {}
    assert tls_options_for("rediss://host/0", settings)["ssl_cert_reqs"] == ssl.CERT_REQUIRED


@pytest.mark.parametrize(("error", "says"), [
    (redis.AuthenticationError("invalid username-password pair"), "refused the credentials"),
    (redis.ConnectionError("Error 1 connecting. [SSL: CERTIFICATE_VERIFY_FAILED] certificate "
                           "verify failed"), "TLS failed"),
    (redis.ConnectionError("Error 8 while writing to socket. EOF occurred in violation of "
                           "protocol (_ssl.c:2427)."), "TLS failed"),  # no client certificate
    (redis.ConnectionError("Error 111 connecting. Connection refused."), "is not reachable"),
])
def test_unavailable_message_says_what_to_fix_without_the_password(
        error: redis.RedisError, says: str) -> None:
    message = unavailable_message("rediss://:s3cret@host:1/0", error)
    assert says in message and "s3cret" not in message
    assert message.startswith("Redis at rediss://:***@host:1/0")


def test_connect_to_nothing_raises_ours_without_the_password() -> None:
    with pytest.raises(RedisUnavailableError) as caught:
        connect("redis://:s3cret@127.0.0.1:9/0", settings=Settings())
    assert "s3cret" not in str(caught.value) and "is not reachable" in str(caught.value)
