"""Validate an OpenAI batch input file: JSONL lines of {custom_id, method, url, body}."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from .batch_runner import BatchLine

MAX_INPUT_LINES = 50_000
MAX_INPUT_BYTES = 200 * 1024 * 1024


@dataclasses.dataclass(frozen=True)
class LineError:
    """One reason the file is refused, as an entry of the batch's ``errors.data``."""

    code: str
    message: str
    line: int | None = None
    param: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The OpenAI ``BatchError`` object."""
        return dataclasses.asdict(self)


def validate_input_file(
    content: bytes,
    endpoint: str,
    max_lines: int = MAX_INPUT_LINES,
    max_bytes: int = MAX_INPUT_BYTES,
) -> tuple[list[BatchLine], list[LineError]]:
    """Check every line as OpenAI does while a batch is ``validating``.

    Lines are numbered from 1; a blank line is a bad line, except the empty text after a final
    newline. A repeated custom_id is the bad line, not its first occurrence. Every line must
    name the same model, as OpenAI requires.

    Args:
        content: The input file's bytes.
        endpoint: The batch's endpoint, which every line's ``url`` must equal.
        max_lines: The most requests a batch may hold.
        max_bytes: The largest input file accepted.

    Returns:
        The lines and no errors, or the errors (the batch then fails).
    """
    if len(content) > max_bytes:
        message = f"The batch input file is {len(content)} bytes; the limit is {max_bytes}."
        return [], [LineError("file_too_large", message)]
    texts = content.removeprefix(b"\xef\xbb\xbf").splitlines()
    if not texts:
        return [], [LineError("empty_file", "The batch input file is empty.")]
    if len(texts) > max_lines:
        message = f"The batch input file has {len(texts)} requests; the limit is {max_lines}."
        return [], [LineError("too_many_requests", message)]
    lines: list[BatchLine] = []
    problems: list[LineError] = []
    seen_ids: set[str] = set()
    models: set[str] = set()
    for number, raw in enumerate(texts, start=1):
        line, problem = _check_line(raw, number, endpoint, seen_ids, models)
        if problem is not None:
            problems.append(problem)
        elif line is not None:
            lines.append(line)
    return ([], problems) if problems else (lines, [])


def _check_line(
    raw: bytes, number: int, endpoint: str, seen_ids: set[str], models: set[str]
) -> tuple[BatchLine | None, LineError | None]:
    try:
        request = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None, LineError("invalid_json_line", "This line is not parseable as valid JSON.",
                               number)  # fmt: skip
    if not isinstance(request, dict):
        return None, LineError("invalid_json_line", "This line is not a JSON object.", number)
    custom_id = request.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        return None, _missing("custom_id", number)
    if request.get("method") != "POST":
        message = "The method for this request is not supported; only POST is."
        return None, LineError("invalid_method", message, number, "method")
    if request.get("url") != endpoint:
        message = "The URL provided for this request does not match the batch endpoint."
        return None, LineError("invalid_url", message, number, "url")
    body = request.get("body")
    if not isinstance(body, dict):
        return None, _missing("body", number)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return None, _missing("body.model", number)
    if models and model not in models:
        message = "The provided model does not match the model in other requests in the file."
        return None, LineError("mismatched_model", message, number, "body.model")
    models.add(model)
    if custom_id in seen_ids:
        message = (
            "The custom_id for this request is a duplicate of another request. "
            "The custom_id parameter must be unique for each request in a batch."
        )
        return None, LineError("duplicate_custom_id", message, number, "custom_id")
    seen_ids.add(custom_id)
    return BatchLine(custom_id, json.dumps(body).encode()), None


def _missing(param: str, number: int) -> LineError:
    return LineError(
        "missing_required_parameter", f"Missing required parameter: '{param}'.", number, param
    )
