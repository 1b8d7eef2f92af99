"""OpenAI Batches: /v1/batches create, retrieve, list and cancel over uploaded input files."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import TYPE_CHECKING, Any

from . import errors
from .batch_input import LineError, validate_input_file
from .batch_runner import BatchLine, BatchRun, LineResult, run_batch, spawn
from .files import no_such_file
from .http_server import Request, Response, json_response

if TYPE_CHECKING:
    from .state import SimState

SUPPORTED_ENDPOINTS = ("/v1/chat/completions",)
COMPLETION_WINDOWS_S = {"24h": 24 * 3600}
MAX_LIST_LIMIT = 100
_UNRUN_MESSAGES = {
    "cancelled": ("batch_cancelled", "This request was not executed because the batch was "
                  "cancelled."),
    "expired": ("batch_expired", "This request could not be executed before the completion "
                "window expired."),
}  # fmt: skip
_FINAL = ("completed", "failed", "expired", "cancelled")


@dataclasses.dataclass
class OpenAIBatch:
    """One batch as OpenAI shows it; the lines run in ``run`` once validation passed."""

    id: str
    input_file_id: str
    endpoint: str
    completion_window: str
    metadata: dict[str, str] | None
    created_at: int
    expires_at: int
    window_s: float
    status: str = "validating"
    stamps: dict[str, int] = dataclasses.field(default_factory=dict)  # in_progress_at, …
    errors: list[LineError] = dataclasses.field(default_factory=list)
    run: BatchRun | None = None
    cancel_requested: bool = False
    output_file_id: str | None = None
    error_file_id: str | None = None
    model: str | None = None  # the one model every line names, once validated

    def to_json(self) -> dict[str, Any]:
        """The OpenAI ``batch`` object."""
        results = self.run.results if self.run is not None else []
        completed = sum(1 for result in results if result.succeeded)
        stamp_names = ("in_progress_at", "finalizing_at", "completed_at", "failed_at",
                       "expired_at", "cancelling_at", "cancelled_at")  # fmt: skip
        return {
            "id": self.id,
            "object": "batch",
            "endpoint": self.endpoint,
            "errors": (
                {"object": "list", "data": [error.to_json() for error in self.errors]}
                if self.errors else None
            ),
            "input_file_id": self.input_file_id,
            "completion_window": self.completion_window,
            "status": self.status,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            **{name: self.stamps.get(name) for name in stamp_names},
            "request_counts": {
                "total": len(self.run.lines) if self.run is not None else 0,
                "completed": completed,
                "failed": len(results) - completed,
            },
            "usage": _usage(results),
            "metadata": self.metadata,
            "model": self.model,
        }


def _usage(results: list[LineResult]) -> dict[str, Any]:
    """Summed usage of the succeeded lines, shaped like OpenAI's ``BatchUsage``."""
    prompt = cached = completion = 0
    for result in results:
        usage = result.body.get("usage") if result.succeeded else None
        if isinstance(usage, dict):
            prompt += usage["prompt_tokens"]
            completion += usage["completion_tokens"]
            cached += usage["prompt_tokens_details"]["cached_tokens"]
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt + completion,
    }


def handle_batches(state: SimState, request: Request, tail: list[str]) -> Response:
    """Answer /v1/batches[/{id}[/cancel]]; ``tail`` is the path after /v1/batches."""
    if not state.authorized(request.headers):
        return errors.invalid_api_key()
    if not tail:
        if request.method == "POST":
            return _create(state, request)
        if request.method == "GET":
            return _list(state, request)
    elif len(tail) <= 2:
        batch = state.openai_batches.get(tail[0])
        if batch is None:
            return errors.error_response(
                404, f"No batch found with id '{tail[0]}'.", "invalid_request_error", None, "id"
            )
        if len(tail) == 1 and request.method == "GET":
            return json_response(200, batch.to_json())
        if tail[1:] == ["cancel"] and request.method == "POST":
            return _cancel(state, batch)
    return errors.route_not_found(request.method, request.path)


def _create(state: SimState, request: Request) -> Response:
    try:
        payload: Any = json.loads(request.body or b"{}")
    except ValueError:
        return errors.invalid_request("We could not parse the JSON body of your request.")
    if not isinstance(payload, dict):
        return errors.invalid_request("The request body must be a JSON object.")
    file_id = payload.get("input_file_id")
    endpoint = payload.get("endpoint")
    window = payload.get("completion_window")
    metadata = payload.get("metadata")
    if not isinstance(file_id, str):
        return errors.invalid_request("Missing required parameter: 'input_file_id'.",
                                      "input_file_id")  # fmt: skip
    stored = state.files.get(file_id)
    if stored is None:
        return no_such_file(file_id)
    if stored.purpose != "batch":
        return errors.invalid_request(
            f"File {file_id} has purpose '{stored.purpose}'; a batch needs purpose 'batch'.",
            "input_file_id",
        )
    if endpoint not in SUPPORTED_ENDPOINTS:
        return errors.invalid_request(
            f"Invalid 'endpoint': the simulator runs batches for {SUPPORTED_ENDPOINTS} only.",
            "endpoint",
        )
    if not isinstance(window, str) or window not in COMPLETION_WINDOWS_S:
        return errors.invalid_request("Invalid 'completion_window': expected '24h'.",
                                      "completion_window")  # fmt: skip
    if metadata is not None and not (
        isinstance(metadata, dict) and len(metadata) <= 16
        and all(isinstance(v, str) for v in metadata.values())
    ):  # fmt: skip
        return errors.invalid_request("Invalid 'metadata': up to 16 string values.", "metadata")
    window_s = state.config.batch_window_s or COMPLETION_WINDOWS_S[window]
    created_at = time.time()
    batch = OpenAIBatch(
        id=f"batch_{os.urandom(12).hex()}",
        input_file_id=file_id,
        endpoint=endpoint,
        completion_window=window,
        metadata=metadata,
        created_at=int(created_at),
        expires_at=int(created_at + window_s),
        window_s=window_s,
    )
    state.openai_batches[batch.id] = batch
    spawn(state, _validate_and_run(state, batch, stored.content, state.now_s()))
    return json_response(200, batch.to_json())


async def _validate_and_run(
    state: SimState, batch: OpenAIBatch, content: bytes, created_s: float
) -> None:
    if batch.cancel_requested:
        _finish(state, batch, "cancelled", [], [])
        return
    lines, problems = validate_input_file(content, batch.endpoint)
    if problems:
        batch.errors = problems
        batch.status = "failed"
        batch.stamps["failed_at"] = int(time.time())
        return
    batch.model = json.loads(lines[0].body)["model"]
    batch.status = "in_progress"
    batch.stamps["in_progress_at"] = int(time.time())
    batch.run = BatchRun(
        batch.id, lines, created_s + batch.window_s,
        lambda run: _finish(state, batch, run.ended or "completed", run.results, run.unrun()),
    )  # fmt: skip
    await run_batch(state, batch.run)


def _finish(
    state: SimState,
    batch: OpenAIBatch,
    how: str,
    results: list[LineResult],
    unrun: list[BatchLine],
) -> None:
    """Write the output and error files and move the batch to its final status."""
    now = int(time.time())
    if how == "completed":
        batch.stamps["finalizing_at"] = now
    output = [_result_line(result) for result in results if result.succeeded]
    failed = [_result_line(result) for result in results if not result.succeeded]
    if how in _UNRUN_MESSAGES:
        code, message = _UNRUN_MESSAGES[how]
        failed.extend(
            {"id": f"batch_req_{os.urandom(12).hex()}", "custom_id": line.custom_id,
             "response": None, "error": {"code": code, "message": message}}
            for line in unrun
        )  # fmt: skip
    if output:
        batch.output_file_id = _write(state, f"batch_{batch.id}_output.jsonl", output)
    if failed:
        batch.error_file_id = _write(state, f"batch_{batch.id}_error.jsonl", failed)
    batch.status = how
    batch.stamps[f"{how}_at"] = now


def _result_line(result: LineResult) -> dict[str, Any]:
    return {
        "id": result.line_id,
        "custom_id": result.custom_id,
        "response": {
            "status_code": result.status_code,
            "request_id": result.request_id,
            "body": result.body,
        },
        "error": None,
    }


def _write(state: SimState, filename: str, lines: list[dict[str, Any]]) -> str:
    content = "".join(json.dumps(line, separators=(",", ":")) + "\n" for line in lines)
    return state.files.add(filename, "batch_output", content.encode()).id


def _cancel(state: SimState, batch: OpenAIBatch) -> Response:
    if batch.status in ("cancelling", "cancelled"):
        return json_response(200, batch.to_json())
    if batch.status in _FINAL:
        return errors.invalid_request(f"Cannot cancel a batch with status '{batch.status}'.")
    batch.status = "cancelling"
    batch.stamps["cancelling_at"] = int(time.time())
    batch.cancel_requested = True
    if batch.run is not None:
        batch.run.cancel()
    return json_response(200, batch.to_json())


def _list(state: SimState, request: Request) -> Response:
    raw_limit = request.query.get("limit", "20")
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MAX_LIST_LIMIT:
        return errors.invalid_request(f"Invalid 'limit': expected 1..{MAX_LIST_LIMIT}.", "limit")
    newest_first = list(reversed(state.openai_batches.values()))
    after = request.query.get("after")
    if after is not None:
        ids = [batch.id for batch in newest_first]
        newest_first = newest_first[ids.index(after) + 1 :] if after in ids else []
    page = newest_first[: int(raw_limit)]
    return json_response(
        200,
        {
            "object": "list",
            "data": [batch.to_json() for batch in page],
            "first_id": page[0].id if page else None,
            "last_id": page[-1].id if page else None,
            "has_more": len(newest_first) > len(page),
        },
    )
