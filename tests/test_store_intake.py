"""Taking a file into the store in one transaction, on SQLite and PostgreSQL: all or nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from corral.store import BatchRows, LineStore, store_engine
from corral.store.intake import IntakeRefusedError, LineIntake

REPO = Path(__file__).resolve().parent.parent
NOW = 1_700_000_000
TABLES = ("batches", "lines", "records", "ledger", "retry_history")
JOB = '{"tokens":12,"model":"small","body":{"messages":[{"role":"user","content":"hi"}]}}'


@pytest.fixture()
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> int:
    """Flush every 4 rows, so a few lines already span several chunks."""
    monkeypatch.setattr("corral.store.intake.ROWS_PER_FLUSH", 4)
    return 4


def row_counts(engine: Engine) -> dict[str, int]:
    """Rows in every store table, seen over a connection of a new engine (a new process's
    view: nothing cached, nothing shared with the intake's connection)."""
    fresh = store_engine(engine.url.render_as_string(hide_password=False))
    try:
        with fresh.connect() as connection:
            return {table: int(connection.execute(
                text(f"SELECT count(*) FROM {table}")).scalar_one()) for table in TABLES}
    finally:
        fresh.dispose()


NOTHING = dict.fromkeys(TABLES, 0)


def finish(intake: LineIntake, total: int) -> None:
    intake.finish(total=total, completion_window="24h", expires_at=NOW + 86_400,
                  input_file="/data/in.jsonl", options={"models": ["small"], "cap": None})


def test_lines_and_refused_records_land_with_the_batch_row_on_finish(
        engine: Engine, small_chunks: int) -> None:
    with LineIntake(engine, "batch_1", clock=lambda: NOW) as intake:
        for number in range(1, 14):
            if number in (3, 8, 9):
                intake.reject(f"line-{number}", number, "not JSON")
            else:
                intake.accept(f"q{number}", number, "small" if number % 2 else "big", JOB)
        finish(intake, total=13)

    assert row_counts(engine) == {**NOTHING, "batches": 1, "lines": 10, "records": 3}
    batch = BatchRows(engine).get("batch_1")
    assert batch is not None
    assert {key: batch[key] for key in (
        "status", "end_status", "total", "completed", "failed", "created_at", "expires_at",
        "rebuilds", "input_file", "completion_window", "ended_at", "options")} == {
        "status": "in_progress", "end_status": "completed", "total": 13, "completed": 0,
        "failed": 3, "created_at": NOW, "expires_at": NOW + 86_400, "rebuilds": 0,
        "input_file": "/data/in.jsonl", "completion_window": "24h", "ended_at": None,
        "options": '{"models":["small"],"cap":null}'}
    small = LineStore(engine).unended("batch_1", "small", after=0, limit=100)
    assert [(line.line_no, line.custom_id, line.job) for line in small] == [
        (n, f"q{n}", JOB) for n in (1, 5, 7, 11, 13)]
    with engine.connect() as connection:
        rows = connection.execute(text(
            "SELECT custom_id, line_no, error_code, written_at, record FROM records "
            "ORDER BY line_no")).all()
    assert [row[:4] for row in rows] == [(f"line-{n}", n, "invalid_request", NOW)
                                         for n in (3, 8, 9)]
    record = json.loads(rows[0].record)
    assert rows[0].record == json.dumps(record, separators=(",", ":"))  # compact
    assert record["id"].startswith("batch_req_")
    assert {key: record[key] for key in ("custom_id", "response", "error")} == {
        "custom_id": "line-3", "response": None,
        "error": {"code": "invalid_request", "message": "line 3: not JSON"}}


def test_jobs_and_ids_with_escapes_and_non_ascii_come_back_unchanged(engine: Engine) -> None:
    # COPY's text format has its own escapes (backslash, tab, newline): the driver must add them.
    job = json.dumps({"body": {"content": "tab\there\nnew \\N \\. 적분 ☃"}}) + "\t\\N\n"
    with LineIntake(engine, "batch_1") as intake:
        intake.accept("id\twith\\tab", 1, "small", job)
        intake.reject("적분-2", 2, "bad \\ reason\twith tab")
        finish(intake, total=2)
    assert LineStore(engine).jobs("batch_1", ["id\twith\\tab"]) == {"id\twith\\tab": job}
    with engine.connect() as connection:
        record = connection.execute(text("SELECT record FROM records")).scalar_one()
    assert json.loads(record)["error"]["message"] == "line 2: bad \\ reason\twith tab"
    assert json.loads(record)["custom_id"] == "적분-2"


def test_a_batch_whose_every_line_was_refused_ends_failed(engine: Engine) -> None:
    with LineIntake(engine, "batch_1", clock=lambda: NOW) as intake:
        intake.reject("line-1", 1, "not JSON")
        finish(intake, total=1)
    batch = BatchRows(engine).get("batch_1")
    assert batch is not None
    assert (batch["status"], batch["failed"], batch["ended_at"]) == ("failed", 1, NOW)


def test_an_exception_inside_the_block_leaves_no_row(engine: Engine, small_chunks: int) -> None:
    with pytest.raises(KeyboardInterrupt), LineIntake(engine, "batch_1") as intake:
        for number in range(1, 20):
            intake.accept(f"q{number}", number, "small", JOB)
            intake.reject(f"r{number}", 100 + number, "bad")
        assert intake.stored >= 30  # most rows have gone out, uncommitted
        raise KeyboardInterrupt  # Ctrl-C during submit
    assert row_counts(engine) == NOTHING


def test_leaving_without_finish_leaves_nothing(engine: Engine, small_chunks: int) -> None:
    with LineIntake(engine, "batch_1") as intake:
        for number in range(1, 11):
            intake.accept(f"q{number}", number, "small", JOB)
        intake.reject("line-11", 11, "bad")
    assert intake.stored == 8
    assert row_counts(engine) == NOTHING
    with pytest.raises(RuntimeError, match="not open"):
        intake.accept("q12", 12, "small", JOB)


def test_a_total_that_does_not_match_the_lines_taken_in_stores_nothing(engine: Engine) -> None:
    with pytest.raises(ValueError, match="total 3"), LineIntake(engine, "batch_1") as intake:
        intake.accept("q1", 1, "small", JOB)
        finish(intake, total=3)
    assert row_counts(engine) == NOTHING


@pytest.mark.parametrize("repeat", [("q1", 7), ("q7", 1)], ids=["custom_id", "line_no"])
def test_a_repeated_line_is_refused_and_nothing_stays(engine: Engine, small_chunks: int,
                                                      repeat: tuple[str, int]) -> None:
    with pytest.raises(IntakeRefusedError) as refused, LineIntake(engine, "batch_1") as intake:
        for number in range(1, 7):
            intake.accept(f"q{number}", number, "small", JOB)
        intake.accept(*repeat, "small", JOB)  # in a later chunk than the first
        finish(intake, total=7)
    assert refused.value.batch_id == "batch_1"
    assert row_counts(engine) == NOTHING
    with pytest.raises(RuntimeError, match="not open"):
        finish(intake, total=7)


def test_a_repeated_refused_record_is_refused(engine: Engine) -> None:
    with pytest.raises(IntakeRefusedError), LineIntake(engine, "batch_1") as intake:
        intake.reject("line-1", 1, "bad")
        intake.reject("line-1", 2, "bad")
        finish(intake, total=2)
    assert row_counts(engine) == NOTHING


def test_a_batch_id_already_taken_is_refused_and_the_first_batch_stays(engine: Engine) -> None:
    with LineIntake(engine, "batch_1") as first:
        first.accept("q1", 1, "small", JOB)
        finish(first, total=1)
    with pytest.raises(IntakeRefusedError), LineIntake(engine, "batch_1") as second:
        second.accept("other", 1_000, "small", JOB)
        finish(second, total=1)
    assert row_counts(engine) == {**NOTHING, "batches": 1, "lines": 1}


CHILD = textwrap.dedent("""
    import sys
    from itertools import count

    from corral.store import intake, store_engine

    intake.ROWS_PER_FLUSH = 100
    with intake.LineIntake(store_engine(sys.argv[1]), "batch_1") as taking:
        stored, chunks = 0, 0
        for number in count(1):  # never reaches finish()
            if number % 10:
                taking.accept(f"q{number}", number, "small", sys.argv[2])
            else:
                taking.reject(f"line-{number}", number, "bad")
            if taking.stored > stored:
                stored, chunks = taking.stored, chunks + 1
                print(f"stored {chunks} chunks", flush=True)
""")


def test_a_submit_killed_mid_intake_leaves_nothing(engine: Engine) -> None:
    url = engine.url.render_as_string(hide_password=False)
    child = subprocess.Popen([sys.executable, "-c", CHILD, url, JOB], cwd=REPO,
                             env={**os.environ, "PYTHONPATH": str(REPO)},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        for said in child.stdout:  # blocks on the child's progress; pytest's timeout bounds it
            if said.strip() == "stored 20 chunks":
                break
        else:
            pytest.fail(f"the intake child ended early: {child.communicate()[1][-2000:]}")
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.communicate()
    assert child.returncode == -signal.SIGKILL
    assert row_counts(engine) == NOTHING
    # Its keys and locks are free: the same lines go in again.
    with LineIntake(engine, "batch_1") as again:
        for number in range(1, 101):
            again.accept(f"q{number}", number, "small", JOB)
        finish(again, total=100)
    assert row_counts(engine) == {**NOTHING, "batches": 1, "lines": 100}
