"""The providers' Batch APIs over httpx: OpenAI's files + batches and Anthropic's message
batches, behind one small interface the batch lane uses (create, state, results, cancel).

Results come back in OpenAI's shape whatever the provider: Anthropic's messages are
translated by corral.anthropic_results, so the output file stays OpenAI-shaped.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from corral.anthropic_messages import UntranslatableRequest, to_messages_params
from corral.anthropic_results import to_chat_completion, to_openai_error
from corral.api_keys import read_api_key
from corral.config import ModelConfig, ProviderConfig
from corral.errors import CorralError

CHAT_URL = "/v1/chat/completions"
ANTHROPIC_VERSION = "2023-06-01"
TIMEOUT_S = 60.0
# Statuses after which a provider batch changes no more.
OPENAI_ENDED = frozenset({"completed", "failed", "expired", "cancelled"})
RETRYABLE_4XX = frozenset({408, 409, 429})


class BatchApiError(CorralError):
    """A provider's Batch API refused or failed a request; `permanent` when asking again
    cannot help (a refusal, a missing key or Batch API), so its lines should run live."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


@dataclass(frozen=True)
class BatchLine:
    """One line as a provider batch carries it: its id and its chat body (upstream model)."""

    custom_id: str
    body: dict[str, Any]


@dataclass(frozen=True)
class BatchState:
    """A provider batch as last seen."""

    status: str
    ended: bool
    done: int  # lines answered or failed so far


@dataclass(frozen=True)
class LineResult:
    """One line's outcome in a provider batch, OpenAI-shaped: a response (its status code,
    request id and body) or an error that never reached the model."""

    custom_id: str
    status_code: int | None
    request_id: str
    body: dict[str, Any] | None
    error: dict[str, Any] | None  # {"code", "message"} when no response came


class BatchApi(Protocol):
    """What the batch lane needs of a provider's Batch API."""

    def create(self, model: ModelConfig, lines: Sequence[BatchLine],
               metadata: dict[str, str]) -> tuple[str, str]:
        """Submit `lines` as one provider batch; returns (its id, its status)."""

    def state(self, provider_batch_id: str) -> BatchState:
        """The provider batch's status and progress."""

    def results(self, provider_batch_id: str) -> Iterator[LineResult]:
        """Every line it has an outcome for (after it ended; partial when cut short)."""

    def cancel(self, provider_batch_id: str) -> None:
        """Ask the provider to stop it (lines done so far keep their results)."""


def batch_api_for(provider: ProviderConfig, client: httpx.Client) -> BatchApi:
    """The Batch API client `provider.batch_api` names.

    Raises:
        BatchApiError: the provider has no batch_api.
    """
    if provider.batch_api == "openai":
        return OpenAIBatches(provider, client)
    if provider.batch_api == "anthropic":
        return AnthropicBatches(provider, client)
    raise BatchApiError(f"provider {provider.name} has no batch_api", permanent=True)


class _Http:
    """Requests to one provider with its key, raising BatchApiError on a failure."""

    def __init__(self, provider: ProviderConfig, client: httpx.Client,
                 auth: dict[str, str]) -> None:
        self._base = provider.base_url
        self._client = client
        self._headers = {**provider.headers, **auth}
        self._name = provider.name

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._client.request(method, f"{self._base}{path}",
                                            headers=self._headers, timeout=TIMEOUT_S, **kwargs)
        except httpx.HTTPError as err:
            raise BatchApiError(f"{self._name}: {method} {path}: {type(err).__name__}: {err}"
                                ) from err
        if response.status_code >= 400:
            raise BatchApiError(f"{self._name}: {method} {path}: HTTP {response.status_code}: "
                                f"{response.text[:300]}",
                                permanent=response.status_code < 500
                                and response.status_code not in RETRYABLE_4XX)
        return response

    def json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        data = self.request(method, path, **kwargs).json()
        if not isinstance(data, dict):
            raise BatchApiError(f"{self._name}: {method} {path}: not a JSON object")
        return data


def _key(provider: ProviderConfig) -> str:
    key = read_api_key(provider)
    if not key:
        raise BatchApiError(f"provider {provider.name}: no API key (api_key_env or "
                            "api_key_file)", permanent=True)
    return key


class OpenAIBatches:
    """OpenAI's Batch API: upload a JSONL file, create a batch on it, read its output and
    error files."""

    def __init__(self, provider: ProviderConfig, client: httpx.Client) -> None:
        self._http = _Http(provider, client, {"Authorization": f"Bearer {_key(provider)}"})

    def create(self, model: ModelConfig, lines: Sequence[BatchLine],
               metadata: dict[str, str]) -> tuple[str, str]:
        content = "".join(json.dumps({"custom_id": line.custom_id, "method": "POST",
                                      "url": CHAT_URL, "body": line.body},
                                     ensure_ascii=False, separators=(",", ":")) + "\n"
                          for line in lines).encode()
        uploaded = self._http.json("POST", "/files", data={"purpose": "batch"},
                                   files={"file": ("corral-batch.jsonl", content,
                                                   "application/jsonl")})
        created = self._http.json("POST", "/batches", json={
            "input_file_id": uploaded["id"], "endpoint": CHAT_URL,
            "completion_window": "24h", "metadata": metadata})
        return str(created["id"]), str(created["status"])

    def state(self, provider_batch_id: str) -> BatchState:
        batch = self._http.json("GET", f"/batches/{provider_batch_id}")
        counts = batch.get("request_counts") or {}
        status = str(batch["status"])
        return BatchState(status, status in OPENAI_ENDED,
                          int(counts.get("completed") or 0) + int(counts.get("failed") or 0))

    def results(self, provider_batch_id: str) -> Iterator[LineResult]:
        batch = self._http.json("GET", f"/batches/{provider_batch_id}")
        for file_id in (batch.get("output_file_id"), batch.get("error_file_id")):
            if not file_id:
                continue
            text = self._http.request("GET", f"/files/{file_id}/content").text
            for raw in text.splitlines():
                if raw.strip():
                    yield _openai_line(json.loads(raw))

    def cancel(self, provider_batch_id: str) -> None:
        self._http.json("POST", f"/batches/{provider_batch_id}/cancel")


def _openai_line(line: dict[str, Any]) -> LineResult:
    response = line.get("response") or None
    error = line.get("error") or None
    if response is not None:
        body = response.get("body")
        return LineResult(str(line["custom_id"]), int(response.get("status_code") or 0),
                          str(response.get("request_id") or ""),
                          body if isinstance(body, dict) else None, error)
    return LineResult(str(line["custom_id"]), None, "", None,
                      error or {"code": "batch_error", "message": "no response"})


class AnthropicBatches:
    """Anthropic's Message Batches, in its native shapes, translated to and from OpenAI's."""

    def __init__(self, provider: ProviderConfig, client: httpx.Client) -> None:
        self._http = _Http(provider, client, {"x-api-key": _key(provider),
                                              "anthropic-version": ANTHROPIC_VERSION})

    def create(self, model: ModelConfig, lines: Sequence[BatchLine],
               metadata: dict[str, str]) -> tuple[str, str]:
        try:
            requests = [{"custom_id": line.custom_id,
                         "params": to_messages_params(
                             line.body, model=model.upstream,
                             default_max_tokens=model.default_max_tokens)}
                        for line in lines]
        except UntranslatableRequest as err:
            raise BatchApiError(f"not translatable to Anthropic's Messages: {err}",
                                permanent=True) from err
        created = self._http.json("POST", "/messages/batches", json={"requests": requests})
        return str(created["id"]), str(created["processing_status"])

    def state(self, provider_batch_id: str) -> BatchState:
        batch = self._http.json("GET", f"/messages/batches/{provider_batch_id}")
        counts = batch.get("request_counts") or {}
        done = int(counts.get("succeeded") or 0) + int(counts.get("errored") or 0)
        status = str(batch["processing_status"])
        return BatchState(status, status == "ended", done)

    def results(self, provider_batch_id: str) -> Iterator[LineResult]:
        text = self._http.request("GET", f"/messages/batches/{provider_batch_id}/results").text
        created = int(time.time())
        for raw in text.splitlines():
            if not raw.strip():
                continue
            line = json.loads(raw)
            custom_id, result = str(line["custom_id"]), line.get("result") or {}
            if result.get("type") == "succeeded":
                body = to_chat_completion(result["message"], custom_id=custom_id,
                                          created=created)
                yield LineResult(custom_id, 200, str(result["message"].get("id") or ""), body,
                                 None)
                continue
            status, error_body = to_openai_error(line)
            error = error_body.get("error") or {}
            if result.get("type") in ("canceled", "expired"):
                yield LineResult(custom_id, None, "", None,
                                 {"code": error.get("code"), "message": error.get("message")})
            else:
                yield LineResult(custom_id, status, "", error_body, None)

    def cancel(self, provider_batch_id: str) -> None:
        self._http.json("POST", f"/messages/batches/{provider_batch_id}/cancel")
