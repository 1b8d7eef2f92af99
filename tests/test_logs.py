"""The JSON log formatter: one parseable object per record, tagged with the job in hand."""

from __future__ import annotations

import io
import json
import logging
import threading

import pytest

from corral.logs import (
    JsonFormatter,
    configure_cli_logging,
    current_job,
    format_line,
    job_context,
)


def record(message: str, *args: object, level: int = logging.INFO,
           exc_info: object = None) -> logging.LogRecord:
    return logging.LogRecord("workers.job", level, __file__, 1, message, args,
                             exc_info)  # type: ignore[arg-type]


def test_a_record_is_one_json_line_with_the_rendered_message() -> None:
    line = JsonFormatter().format(record("line %s/%s failed: %s", "b1", "q-1", "timeout"))
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["level"] == "INFO" and entry["logger"] == "workers.job"
    assert entry["message"] == "line b1/q-1 failed: timeout"
    assert entry["ts"].endswith("Z") and "T" in entry["ts"]
    assert "batch_id" not in entry and "custom_id" not in entry and "exc_info" not in entry


def test_lines_inside_a_job_context_carry_its_batch_and_custom_id() -> None:
    with job_context("batch_1", "q-7"):
        entry = json.loads(JsonFormatter().format(record("calling")))
        assert current_job() == ("batch_1", "q-7")
    assert (entry["batch_id"], entry["custom_id"]) == ("batch_1", "q-7")
    assert current_job() is None
    assert "batch_id" not in json.loads(JsonFormatter().format(record("after")))


def test_job_contexts_nest_and_threads_do_not_share_them() -> None:
    seen: list[object] = []
    with job_context("b", "outer"):
        with job_context("b", "inner"):
            assert current_job() == ("b", "inner")
        assert current_job() == ("b", "outer")
        thread = threading.Thread(target=lambda: seen.append(current_job()))
        thread.start()
        thread.join()
    assert seen == [None]


def test_an_exception_is_kept_as_text_in_exc_info() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        import sys

        entry = json.loads(JsonFormatter().format(record("oops", level=logging.ERROR,
                                                         exc_info=sys.exc_info())))
    assert entry["level"] == "ERROR"
    assert "Traceback" in entry["exc_info"] and "RuntimeError: boom" in entry["exc_info"]


def test_multiline_and_non_ascii_messages_stay_on_one_valid_line() -> None:
    line = JsonFormatter().format(record("first\nsecond 요약 \x00"))
    assert "\n" not in line and line.isascii()
    assert json.loads(line)["message"] == "first\nsecond 요약 \x00"


def test_cli_logging_writes_json_to_the_stream_only_when_asked(
        monkeypatch: pytest.MonkeyPatch) -> None:
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])
    configure_cli_logging("text")
    assert root.handlers == []
    stream = io.StringIO()
    configure_cli_logging("json", stream=stream)
    configure_cli_logging("json", stream=stream)  # idempotent
    assert len(root.handlers) == 1
    logging.getLogger("kombu").warning("broker %s lost", "redis")
    assert json.loads(stream.getvalue())["message"] == "broker redis lost"


def test_format_line_renders_outside_logging() -> None:
    assert format_line("w", logging.CRITICAL, "corral worker: no Redis", "text") == \
        "corral worker: no Redis"
    entry = json.loads(format_line("w", logging.CRITICAL, "corral worker: no Redis", "json"))
    assert entry["level"] == "CRITICAL" and entry["message"] == "corral worker: no Redis"
