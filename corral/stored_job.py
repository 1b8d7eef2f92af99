"""The stored request of one line: what a worker needs to run it, kept in Redis, never in a
task message."""

from __future__ import annotations

import json
from typing import Any


def stored_job(*, tokens: int, model: str, body: dict[str, Any], route: dict[str, Any] | None,
               line: int | None) -> str:
    """The line's job as compact JSON, starting ``{"tokens":N,"model":"<model>"``.

    ``tokens`` is the call's rate-limit charge (`corral.tokens.reservation_tokens` of ``body``
    for ``model``). start_job.lua reads it and the model from that prefix to take the call's
    capacity in the round trip that starts the line, so the two keys must stay first.
    """
    job = {"tokens": tokens, "model": model, "line": line, "route": route, "body": body}
    return json.dumps(job, separators=(",", ":"))
