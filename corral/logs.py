"""Log lines as text or one JSON object per line, tagged with the batch line being run."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from typing import Any

# (batch_id, custom_id) of the job this thread is running; the formatter reads it, so every line
# logged during a job carries them without each call site passing them.
_current_job: ContextVar[tuple[str, str] | None] = ContextVar("corral_job", default=None)


def bind_job(batch_id: str, custom_id: str) -> Token[tuple[str, str] | None]:
    """Tag this context's log lines with the job; give the token to `unbind_job`."""
    return _current_job.set((batch_id, custom_id))


def unbind_job(token: Token[tuple[str, str] | None]) -> None:
    """Undo the `bind_job` that returned `token`."""
    _current_job.reset(token)


@contextmanager
def job_context(batch_id: str, custom_id: str) -> Iterator[None]:
    """Tag every log line written inside the `with` with the job."""
    token = bind_job(batch_id, custom_id)
    try:
        yield
    finally:
        unbind_job(token)


def current_job() -> tuple[str, str] | None:
    """The (batch_id, custom_id) bound in this context, if any."""
    return _current_job.get()


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts, level, logger, message, batch_id/custom_id, exc_info.

    Only the rendered message is written, never the record's args or extras: corral logs
    pointers (ids, codes, counts), and nothing here adds a request body to that.
    """

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        job = current_job()
        if job is not None:
            entry["batch_id"], entry["custom_id"] = job
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exc_info"] = record.exc_text
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        # ASCII escapes keep each line valid whatever the stream's encoding.
        return json.dumps(entry, default=str)


def use_json(logger: logging.Logger) -> None:
    """Make each of `logger`'s handlers write JSON lines."""
    for handler in logger.handlers:
        handler.setFormatter(JsonFormatter())


def configure_cli_logging(log_format: str, *, stream: Any = None) -> None:
    """The CLI's logging: JSON lines on stderr (warnings and up) when `log_format` is json.

    Text keeps Python's default (the bare message of a warning or error on stderr).
    """
    if log_format != "json":
        return
    root = logging.getLogger()
    if any(isinstance(h.formatter, JsonFormatter) for h in root.handlers):
        return
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root.addHandler(handler)


def format_line(logger_name: str, level: int, message: str, log_format: str) -> str:
    """One line in `log_format` written outside logging (e.g. before a worker set it up)."""
    if log_format != "json":
        return message
    return JsonFormatter().format(logging.LogRecord(
        logger_name, level, __file__, 0, message, None, None))
