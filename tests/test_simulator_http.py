"""The provider simulator as a real HTTP server on loopback, started as its own process."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletion

REPO_ROOT = Path(__file__).resolve().parents[1]
KEY = "sk-sim-test"


# --- the HTTP server ------------------------------------------------------------------------

StartSimulator = Callable[..., str]


@pytest.fixture
def start_simulator(simulator_process: StartSimulator) -> StartSimulator:
    """Factory: start ``python -m simulator --port 0 *flags`` and return its base URL."""
    return simulator_process


def _chat(content: str, model: str = "gpt-4o-mini", **extra: object) -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": content}], **extra}


@pytest.mark.timeout(30)
def test_chat_completion_validates_as_openai_and_carries_headers(
    start_simulator: StartSimulator,
) -> None:
    url = start_simulator("--model", "gpt-4o-mini:rpm=100,tpm=100000")
    with httpx.Client(base_url=url) as client:
        response = client.post("/v1/chat/completions", json=_chat("hello", max_tokens=300, n=2))
    assert response.status_code == 200
    completion = ChatCompletion.model_validate(response.json())
    assert completion.model == "gpt-4o-mini"
    assert len(completion.choices) == 2
    assert completion.usage is not None and completion.usage.prompt_tokens == 2
    assert response.headers["x-request-id"].startswith("req_")
    assert response.headers["x-ratelimit-limit-requests"] == "100"
    assert response.headers["x-ratelimit-remaining-requests"] == "99"
    assert response.headers["x-ratelimit-limit-tokens"] == "100000"
    assert response.headers["x-ratelimit-remaining-tokens"] == str(100000 - (2 + 300 * 2))
    assert response.headers["x-ratelimit-reset-requests"] == "600ms"


@pytest.mark.timeout(30)
def test_openai_client_talks_to_the_simulator(start_simulator: StartSimulator) -> None:
    url = start_simulator("--api-key", KEY)
    with openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0) as client:
        completion = client.chat.completions.create(
            model="any-model", messages=[{"role": "user", "content": "hi"}]
        )
        assert completion.choices[0].message.content
        with pytest.raises(openai.RateLimitError):
            client.chat.completions.create(
                model="any-model", messages=[{"role": "user", "content": "[[sim:quota]]"}]
            )


@pytest.mark.timeout(30)
def test_wrong_api_key_gets_401_without_echoing_the_key(start_simulator: StartSimulator) -> None:
    url = start_simulator("--api-key", KEY)
    with httpx.Client(base_url=url) as client:
        wrong = client.post(
            "/v1/chat/completions", json=_chat("hi"), headers={"authorization": "Bearer sk-bad"}
        )
        right = client.post(
            "/v1/chat/completions", json=_chat("hi"), headers={"authorization": f"Bearer {KEY}"}
        )
        models = client.get("/v1/models")
    assert wrong.status_code == 401
    assert wrong.json()["error"]["code"] == "invalid_api_key"
    assert KEY not in wrong.text and "sk-bad" not in wrong.text
    assert right.status_code == 200
    assert models.status_code == 401


@pytest.mark.timeout(30)
def test_prompt_past_the_context_window_is_refused(start_simulator: StartSimulator) -> None:
    url = start_simulator("--model", "small:ctx=10")
    with httpx.Client(base_url=url) as client:
        response = client.post("/v1/chat/completions", json=_chat("x" * 44, model="small"))
    assert response.status_code == 400
    assert response.json()["error"] == {
        "message": "This model's maximum context length is 10 tokens. "
        "However, your messages resulted in 11 tokens.",
        "type": "invalid_request_error",
        "param": "messages",
        "code": "context_length_exceeded",
    }


@pytest.mark.timeout(30)
def test_scripted_429_then_success(start_simulator: StartSimulator) -> None:
    url = start_simulator()
    body = _chat("summarise [[sim:fail=429,times=1]]")
    with httpx.Client(base_url=url) as client:
        first = client.post("/v1/chat/completions", json=body)
        second = client.post("/v1/chat/completions", json=body)
    assert first.status_code == 429
    assert first.json()["error"]["code"] == "rate_limit_exceeded"
    assert (first.headers["retry-after"], first.headers["retry-after-ms"]) == ("1", "200")
    assert second.status_code == 200


@pytest.mark.timeout(30)
def test_rpm_limit_answers_429_with_retry_after(start_simulator: StartSimulator) -> None:
    url = start_simulator("--model", "m:rpm=2", "--period-s", "60")
    with httpx.Client(base_url=url) as client:
        statuses = [client.post("/v1/chat/completions", json=_chat("a", "m")) for _ in range(3)]
    assert [r.status_code for r in statuses] == [200, 200, 429]
    refused = statuses[2]
    assert refused.json()["error"]["type"] == "requests"
    assert 29 <= int(refused.headers["retry-after"]) <= 30  # one request refills in 30 s
    assert 29_000 <= int(refused.headers["retry-after-ms"]) <= 30_000
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"


@pytest.mark.timeout(30)
def test_window_admissions_never_exceed_the_limit(start_simulator: StartSimulator) -> None:
    url = start_simulator("--model", "m:rpm=3,tpm=5000", "--limiter", "window")
    with httpx.Client(base_url=url) as client:
        statuses = [
            client.post("/v1/chat/completions", json=_chat(str(i), "m", max_tokens=10))
            for i in range(6)
        ]
        admissions = client.get("/_sim/admissions", params={"model": "m"}).json()
    assert [r.status_code for r in statuses] == [200, 200, 200, 429, 429, 429]
    assert (admissions["rpm"], admissions["tpm"], admissions["period_s"]) == (3, 5000, 60.0)
    assert [tokens for _, tokens in admissions["admitted"]] == [11, 11, 11]


@pytest.mark.timeout(30)
def test_stats_count_calls_and_reset_clears_them(start_simulator: StartSimulator) -> None:
    url = start_simulator("--model", "m")
    with httpx.Client(base_url=url) as client:
        client.post("/v1/chat/completions", json=_chat("abcd", "m", max_tokens=7))
        client.post("/v1/chat/completions", json=_chat("[[sim:fail=500,times=1]]", "m"))
        client.post("/v1/chat/completions", json=_chat("x", "unknown"))
        stats = client.get("/_sim/stats").json()
        client.post("/_sim/reset")
        after = client.get("/_sim/stats").json()
    assert stats["requests"] == 3
    assert stats["served"] == 1
    assert stats["by_status"] == {"200": 1, "500": 1, "404": 1}
    assert stats["models"]["m"] == {
        "served": 1,
        "rate_limited": 0,
        "prompt_tokens": 1,
        "completion_tokens": 7,
    }
    assert (after["requests"], after["by_status"], after["models"]) == (0, {}, {})


@pytest.mark.timeout(30)
def test_models_lists_the_configured_models(start_simulator: StartSimulator) -> None:
    url = start_simulator("--model", "a:rpm=5", "--model", "b")
    with httpx.Client(base_url=url) as client:
        listing = client.get("/v1/models").json()
        unknown = client.post("/v1/chat/completions", json=_chat("x", "c"))
    assert listing["object"] == "list"
    assert [m["id"] for m in listing["data"]] == ["a", "b"]
    assert listing["data"][0] == {
        "id": "a",
        "object": "model",
        "created": 0,
        "owned_by": "corral-sim",
    }
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "model_not_found"


@pytest.mark.timeout(30)
def test_storm_set_at_run_time_answers_429(start_simulator: StartSimulator) -> None:
    url = start_simulator()
    with httpx.Client(base_url=url) as client:
        storm = {"model": "m", "duration_s": 30, "retry_after_s": 4}
        settings = client.post("/_sim/faults", json={"storm": storm, "latency_ms": 0})
        stormy = client.post("/v1/chat/completions", json=_chat("x", "m"))
        calm = client.post("/v1/chat/completions", json=_chat("x", "other"))
        bad = client.post("/_sim/faults", json={"error_rate": 2})
    assert settings.status_code == 200
    assert settings.json()["storms"]["m"]["retry_after_s"] == 4
    assert (stormy.status_code, stormy.headers["retry-after"]) == (429, "4")
    assert calm.status_code == 200
    assert bad.status_code == 400


@pytest.mark.timeout(30)
def test_malformed_requests_are_refused(start_simulator: StartSimulator) -> None:
    url = start_simulator()
    with httpx.Client(base_url=url) as client:
        not_json = client.post("/v1/chat/completions", content=b"{nope")
        streaming = client.post("/v1/chat/completions", json=_chat("x", stream=True))
        no_messages = client.post("/v1/chat/completions", json={"model": "m", "messages": []})
        no_route = client.get("/v1/nothing")
    assert [r.status_code for r in (not_json, streaming, no_messages, no_route)] == [400] * 3 + [
        404
    ]
    assert streaming.json()["error"]["type"] == "invalid_request_error"
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        raw.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n\r\n")
        assert raw.recv(65536).startswith(b"HTTP/1.1 411 ")


@pytest.mark.timeout(30)
def test_hang_marker_never_answers(start_simulator: StartSimulator) -> None:
    url = start_simulator()
    with httpx.Client(base_url=url, timeout=0.3) as client:
        with pytest.raises(httpx.ReadTimeout):
            client.post("/v1/chat/completions", json=_chat("[[sim:hang]]"))
        assert client.get("/_sim/stats").json()["hung"] == 1


@pytest.mark.timeout(30)
def test_sigterm_exits_cleanly_with_a_hung_call_open() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "simulator", "--port", "0", "--hang-rate", "1"],
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    assert process.stderr is not None
    with process.stderr:
        url = process.stderr.readline().decode().strip().removeprefix("simulator ready on ")
        with httpx.Client(base_url=url, timeout=0.2) as client:
            with pytest.raises(httpx.ReadTimeout):
                client.post("/v1/chat/completions", content=json.dumps(_chat("x")))
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=10) == 0
