"""The provider client against httpx.MockTransport: classification, keys, deadline."""

from __future__ import annotations

import itertools
import json

import httpx
import pytest

from corral.config import ProviderConfig
from corral.errors import (
    AuthenticationError,
    ConnectionLostError,
    ContextLengthExceededError,
    InsufficientQuotaError,
    InvalidRequestError,
    InvalidResponseError,
    RateLimitedError,
    RequestTimeoutError,
    ServerError,
)
from workers.provider_client import HttpClients, ProviderClient, classify_failure

PROVIDER = ProviderConfig(name="p", base_url="http://provider.test/v1", api_key_env="P_KEY",
                          headers={"OpenAI-Organization": "org-1"})
COMPLETION = {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m",
              "choices": [{"index": 0, "finish_reason": "stop",
                           "message": {"role": "assistant", "content": "ok"}}],
              "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}}


def error_body(code: str | None, message: str = "nope") -> dict:
    return {"error": {"message": message, "type": "x", "code": code}}


@pytest.mark.parametrize(("status", "body", "headers", "kind", "retry_after_s"), [
    (429, error_body("rate_limit_exceeded"), {"retry-after-ms": "1500"}, RateLimitedError, 1.5),
    (429, error_body("insufficient_quota"), {}, InsufficientQuotaError, None),
    (429, None, {"retry-after": "2"}, RateLimitedError, 2.0),
    (500, error_body(None), {}, ServerError, None),
    (503, error_body(None), {"retry-after": "4"}, ServerError, 4.0),
    (408, None, {}, ServerError, None),
    (409, None, {}, ServerError, None),
    (401, error_body("invalid_api_key"), {}, AuthenticationError, None),
    (403, None, {}, AuthenticationError, None),
    (400, error_body("context_length_exceeded"), {}, ContextLengthExceededError, None),
    (400, error_body("invalid_value"), {}, InvalidRequestError, None),
    (404, error_body("model_not_found"), {}, InvalidRequestError, None),
])
def test_classify_failure_reads_status_and_code(status, body, headers, kind,
                                                retry_after_s) -> None:
    err = classify_failure(status, body, headers)
    assert type(err) is kind
    assert err.status_code == status
    assert getattr(err, "retry_after_s", None) == retry_after_s


def make_client(handler, *, deadline_s: float = 5.0, clock=None) -> ProviderClient:
    http = HttpClients(lambda: httpx.Client(transport=httpx.MockTransport(handler)),
                       shared=True)
    kwargs = {"clock": clock} if clock else {}
    return ProviderClient(http, deadline_s=deadline_s, connect_timeout_s=1.0, **kwargs)


def test_success_sends_key_headers_client_request_id_and_body(monkeypatch) -> None:
    monkeypatch.setenv("P_KEY", "sk-canary")
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=COMPLETION, headers={"x-request-id": "req_1"})

    completion = make_client(handler).complete(PROVIDER, {"model": "m", "messages": []},
                                               client_request_id="corral-abc")
    assert completion.request_id == "req_1" and completion.body["id"] == "chatcmpl-1"
    request = seen[0]
    assert request.headers["x-client-request-id"] == "corral-abc"
    assert str(request.url) == "http://provider.test/v1/chat/completions"
    assert request.headers["authorization"] == "Bearer sk-canary"
    assert request.headers["openai-organization"] == "org-1"
    assert json.loads(request.content) == {"model": "m", "messages": []}


def test_missing_key_is_an_authentication_error_naming_the_variable(monkeypatch) -> None:
    monkeypatch.delenv("P_KEY", raising=False)
    client = make_client(lambda request: httpx.Response(200, json=COMPLETION))
    with pytest.raises(AuthenticationError, match="P_KEY is not set"):
        client.complete(PROVIDER, {})


def test_key_file_is_read_at_call_time(tmp_path, monkeypatch) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("sk-from-file\n")
    provider = ProviderConfig(name="f", base_url="http://provider.test/v1",
                              api_key_file=str(key_file))
    seen = []
    client = make_client(lambda r: seen.append(r.headers["authorization"])
                         or httpx.Response(200, json=COMPLETION))
    client.complete(provider, {})
    key_file.write_text("sk-rotated\n")
    client.complete(provider, {})
    assert seen == ["Bearer sk-from-file", "Bearer sk-rotated"]


def test_2xx_that_is_not_a_completion_is_permanent(monkeypatch) -> None:
    monkeypatch.setenv("P_KEY", "k")
    client = make_client(lambda request: httpx.Response(200, text="<html>oops</html>"))
    with pytest.raises(InvalidResponseError):
        client.complete(PROVIDER, {})


def test_connection_failure_and_timeout_are_retryable(monkeypatch) -> None:
    monkeypatch.setenv("P_KEY", "k")

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    def stall(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    def drop(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadError("connection reset", request=request)

    with pytest.raises(ServerError) as refused:
        make_client(refuse).complete(PROVIDER, {})
    assert not refused.value.maybe_served  # nothing was sent: the call is settled as unbilled
    with pytest.raises(RequestTimeoutError) as stalled:
        make_client(stall).complete(PROVIDER, {})
    assert stalled.value.maybe_served
    with pytest.raises(ConnectionLostError) as dropped:
        make_client(drop).complete(PROVIDER, {})
    assert dropped.value.maybe_served  # sent, then lost: the provider may have billed it
    assert dropped.value.code == "server_error_exhausted"


def test_total_deadline_stops_a_body_that_trickles(monkeypatch) -> None:
    monkeypatch.setenv("P_KEY", "k")
    ticks = itertools.count(0.0, 1.0)  # a fake clock: each read of it is one second later

    class Chunked(httpx.SyncByteStream):
        def __iter__(self):
            for _ in range(100):
                yield b"{"

    client = make_client(lambda r: httpx.Response(200, stream=Chunked()), deadline_s=5.0,
                         clock=lambda: next(ticks))
    with pytest.raises(RequestTimeoutError, match="5 s deadline"):
        client.complete(PROVIDER, {})


def test_a_free_list_gives_each_running_call_its_own_client_and_reuses_them() -> None:
    made: list[httpx.Client] = []

    def make() -> httpx.Client:
        made.append(httpx.Client())
        return made[-1]

    clients = HttpClients(make, shared=False)
    with clients.checkout() as first, clients.checkout() as second:
        assert first is not second
    with clients.checkout() as again:
        assert again in (first, second)
    assert len(made) == 2
    for client in made:
        client.close()

    shared = HttpClients(make, shared=True)
    with shared.checkout() as one, shared.checkout() as two:
        assert one is two is made[-1]
    made[-1].close()
