"""The stored request of one line: what a worker needs to run it, kept in Redis, never in a
task message."""

from __future__ import annotations

import json
from typing import Any

from corral.tokens import prompt_tokens_bound, requested_output_tokens


def stored_job(*, tokens: int, model: str, default_max_tokens: int, body: dict[str, Any],
               route: dict[str, Any] | None, line: int | None) -> str:
    """The line's job as compact JSON, starting
    ``{"tokens":N,"model":"<model>","input_max":I,"output_max":O,``.

    ``tokens`` is the call's rate-limit charge (`corral.tokens.reservation_tokens` of ``body``
    for ``model``). start_job.lua reads it and the model from that prefix to take the call's
    capacity in the round trip that starts the line, and the bounds on the call's input and
    output tokens to mark the call in flight with its worst case: those four keys stay first.
    """
    job = {"tokens": tokens, "model": model, "input_max": prompt_tokens_bound(body),
           "output_max": requested_output_tokens(body, default_max_tokens), "line": line,
           "route": route, "body": body}
    return json.dumps(job, separators=(",", ":"))


def job_model(raw_job: str) -> str:
    """The configured model a stored job is routed to."""
    return str(json.loads(raw_job).get("model", ""))
