"""Anthropic Message Batches: /v1/messages/batches create, retrieve, list, cancel, results."""

from __future__ import annotations

import dataclasses
import datetime
import hmac
import json
import os
import re
import time
from typing import TYPE_CHECKING, Any

from .anthropic_messages import line_from_params, result_from_answer
from .batch_runner import BatchRun, run_batch, spawn
from .http_server import Request, Response, json_response

if TYPE_CHECKING:
    from .state import SimState

MAX_REQUESTS = 100_000
MAX_BODY_BYTES = 256 * 1000 * 1000
WINDOW_S = 24 * 3600
MAX_LIST_LIMIT = 1000
_CUSTOM_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def anthropic_error(status: int, error_type: str, message: str) -> Response:
    """An error in Anthropic's shape: ``{"type": "error", "error": {type, message}}``."""
    return json_response(
        status, {"type": "error", "error": {"type": error_type, "message": message}}
    )


def _rfc3339(unix_s: float | None) -> str | None:
    if unix_s is None:
        return None
    moment = datetime.datetime.fromtimestamp(unix_s, datetime.UTC)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


@dataclasses.dataclass
class MessageBatch:
    """One Message Batch; its requests run in ``run`` from the moment it is created."""

    id: str
    run: BatchRun
    created_at: float  # Unix seconds
    expires_at: float
    cancel_initiated_at: float | None = None
    ended_at: float | None = None

    @property
    def processing_status(self) -> str:
        """in_progress, canceling, or ended."""
        if self.run.ended is not None:
            return "ended"
        return "canceling" if self.run.cancel_requested else "in_progress"

    def to_json(self, base_url: str) -> dict[str, Any]:
        """The ``message_batch`` object; ``results_url`` appears once processing ended."""
        run = self.run
        succeeded = sum(1 for result in run.results if result.succeeded)
        unrun = len(run.unrun())
        return {
            "id": self.id,
            "type": "message_batch",
            "processing_status": self.processing_status,
            "request_counts": {
                "processing": unrun if run.ended is None else 0,
                "succeeded": succeeded,
                "errored": len(run.results) - succeeded,
                "canceled": unrun if run.ended == "cancelled" else 0,
                "expired": unrun if run.ended == "expired" else 0,
            },
            "ended_at": _rfc3339(self.ended_at),
            "created_at": _rfc3339(self.created_at),
            "expires_at": _rfc3339(self.expires_at),
            "archived_at": None,
            "cancel_initiated_at": _rfc3339(self.cancel_initiated_at),
            "results_url": (
                f"{base_url}/v1/messages/batches/{self.id}/results" if run.ended else None
            ),
        }

    def results_jsonl(self) -> bytes:
        """The results file: answered requests in input order, then the canceled/expired."""
        lines = [{"custom_id": r.custom_id, "result": result_from_answer(r)}
                 for r in self.run.results]  # fmt: skip
        unrun_type = "canceled" if self.run.ended == "cancelled" else "expired"
        lines.extend(
            {"custom_id": line.custom_id, "result": {"type": unrun_type}}
            for line in self.run.unrun()
        )
        return "".join(json.dumps(line, separators=(",", ":")) + "\n" for line in lines).encode()


def handle_message_batches(state: SimState, request: Request, tail: list[str]) -> Response:
    """Answer /v1/messages/batches[/{id}[/cancel|/results]] with x-api-key auth."""
    refusal = _check_headers(state, request)
    if refusal is not None:
        return refusal
    base_url = f"http://{request.headers.get('host', f'{state.config.host}:{state.config.port}')}"
    if not tail:
        if request.method == "POST":
            return _create(state, request, base_url)
        if request.method == "GET":
            return _list(state, request, base_url)
    elif len(tail) <= 2:
        batch = state.message_batches.get(tail[0])
        if batch is None:
            return anthropic_error(404, "not_found_error", f"Message Batch {tail[0]} not found.")
        if len(tail) == 1 and request.method == "GET":
            return json_response(200, batch.to_json(base_url))
        if tail[1:] == ["cancel"] and request.method == "POST":
            return _cancel(batch, base_url)
        if tail[1:] == ["results"] and request.method == "GET":
            if batch.run.ended is None:
                return anthropic_error(
                    400, "invalid_request_error",
                    f"Message Batch {batch.id} has not finished processing; no results yet.",
                )  # fmt: skip
            return Response(200, batch.results_jsonl(), content_type="application/x-jsonl")
    return anthropic_error(404, "not_found_error", f"Invalid URL ({request.method} {request.path})")


def _check_headers(state: SimState, request: Request) -> Response | None:
    key = state.config.api_key
    supplied = request.headers.get("x-api-key", "")
    if key is not None and not hmac.compare_digest(supplied.encode(), key.encode()):
        return anthropic_error(401, "authentication_error", "invalid x-api-key")
    if not request.headers.get("anthropic-version"):
        return anthropic_error(400, "invalid_request_error",
                               "anthropic-version: header is required")  # fmt: skip
    return None


def _create(state: SimState, request: Request, base_url: str) -> Response:
    if len(request.body) > MAX_BODY_BYTES:
        return anthropic_error(413, "request_too_large",
                               f"Request exceeds the maximum size of {MAX_BODY_BYTES} bytes.")
    try:
        payload: Any = json.loads(request.body or b"{}")
    except ValueError:
        return anthropic_error(400, "invalid_request_error", "The request body is not valid JSON.")
    requests = payload.get("requests") if isinstance(payload, dict) else None
    if not isinstance(requests, list) or not requests:
        return anthropic_error(400, "invalid_request_error", "requests: Field required")
    if len(requests) > MAX_REQUESTS:
        return anthropic_error(400, "invalid_request_error",
                               f"requests: at most {MAX_REQUESTS} requests per batch")
    lines = []
    seen: set[str] = set()
    for index, item in enumerate(requests):
        custom_id = item.get("custom_id") if isinstance(item, dict) else None
        if not isinstance(custom_id, str) or not _CUSTOM_ID.fullmatch(custom_id):
            message = f"requests.{index}.custom_id: must match ^[a-zA-Z0-9_-]{{1,64}}$"
            return anthropic_error(400, "invalid_request_error", message)
        if custom_id in seen:
            return anthropic_error(400, "invalid_request_error",
                                   f"requests.{index}: duplicate custom_id {custom_id!r}")
        seen.add(custom_id)
        assert isinstance(item, dict)
        lines.append(line_from_params(custom_id, item.get("params")))
    created_at = time.time()
    window_s = state.config.batch_window_s or WINDOW_S
    batch_id = f"msgbatch_{os.urandom(12).hex()}"
    run = BatchRun(batch_id, lines, state.now_s() + window_s, lambda _run: _ended(batch_id, state))
    batch = MessageBatch(batch_id, run, created_at, created_at + window_s)
    state.message_batches[batch_id] = batch
    spawn(state, run_batch(state, run))
    return json_response(200, batch.to_json(base_url))


def _ended(batch_id: str, state: SimState) -> None:
    batch = state.message_batches.get(batch_id)
    if batch is not None:
        batch.ended_at = time.time()


def _cancel(batch: MessageBatch, base_url: str) -> Response:
    if batch.run.ended is not None:
        return anthropic_error(400, "invalid_request_error",
                               f"Message Batch {batch.id} has already ended.")
    if batch.cancel_initiated_at is None:
        batch.cancel_initiated_at = time.time()
        batch.run.cancel()
    return json_response(200, batch.to_json(base_url))


def _list(state: SimState, request: Request, base_url: str) -> Response:
    raw_limit = request.query.get("limit", "20")
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MAX_LIST_LIMIT:
        return anthropic_error(400, "invalid_request_error",
                               f"limit: expected 1..{MAX_LIST_LIMIT}")
    newest_first = list(reversed(state.message_batches.values()))
    ids = [batch.id for batch in newest_first]
    after_id, before_id = request.query.get("after_id"), request.query.get("before_id")
    if after_id is not None:
        newest_first = newest_first[ids.index(after_id) + 1 :] if after_id in ids else []
    elif before_id is not None:
        newest_first = newest_first[: ids.index(before_id)] if before_id in ids else []
    limit = int(raw_limit)
    # before_id pages backwards: the ``limit`` batches just newer than before_id.
    backwards = before_id is not None and after_id is None
    page = newest_first[-limit:] if backwards else newest_first[:limit]
    return json_response(
        200,
        {
            "data": [batch.to_json(base_url) for batch in page],
            "has_more": len(newest_first) > len(page),
            "first_id": page[0].id if page else None,
            "last_id": page[-1].id if page else None,
        },
    )
