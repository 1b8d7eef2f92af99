"""Benchmark: a submitted file's lines stored in one transaction (LineIntake) — lines/s, peak RSS.

Per database (SQLite: a file in a temp directory; PostgreSQL: CORRAL_TEST_POSTGRES_URL, in a
schema of its own that is dropped after, so other users of that database are left alone):

    storage   LineIntake alone: synthetic lines (~300-byte jobs, 1% refused) from a generator
    pipeline  a JSONL file validated and routed by `producer.parallel_intake.checked_jobs` (the
              example config) as `corral submit` does it: in one worker process per CPU, each
              line fed to LineIntake in this one, then `finish` (the commit)
    serial    the same pipeline validating in this one process

and, as the pipeline's ceiling, the same validation storing nothing. Every case runs in a
child process of its own (tables dropped and re-created first, outside the timing); lines/s
is lines over the seconds from the first line to the commit (worker start-up included),
measured in the child; peak RSS is the child's (getrusage of the waited process) plus, for
the pipeline, the peak of each process it starts (ChildrenPeaks), all summed.

    python -m bench.intake_store --lines 1000000 --runs 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from bench.intake import MODELS, TEXTS
from corral.store import store_engine, upgrade
from corral.store.intake import LineIntake
from corral.store.schema import metadata

DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
PG_SCHEMA = "corral_intake_bench"
EXAMPLE_CONFIG = Path(__file__).resolve().parent.parent / "corral" / "data" / \
    "corral.example.toml"
TARGET_LINES_PER_S = 40_000
TARGET_RSS_MB_1M = 250
REFUSED_EVERY = 100  # 1% of lines refused, in both the synthetic lines and the file
SYNTHETIC_MODELS = ("gpt-5.4-mini", "deepseek-v3.2", "claude-opus-4.6")
CASES = (("storage", "sqlite"), ("storage", "postgresql"), ("pipeline", "sqlite"),
         ("pipeline", "postgresql"), ("serial", "sqlite"), ("validate", ""))
CASE_NAMES = {"storage": "storage (LineIntake alone)",
              "pipeline": "pipeline (validate+route+store)",
              "serial": "pipeline, validating in 1 process",
              "validate": "validate+route only (no store)"}


def synthetic_lines(count: int) -> Iterator[tuple[int, str, str, str]]:
    """(line number, custom_id, model, stored job) of `count` lines; every REFUSED_EVERY-th
    has an empty model: a refused line. The job has the validator's shape (~300 bytes)."""
    for number in range(1, count + 1):
        if number % REFUSED_EVERY == 0:
            yield number, f"req-{number:07d}", "", ""
            continue
        model = SYNTHETIC_MODELS[number % 3]
        yield number, f"req-{number:07d}", model, (
            f'{{"tokens":82,"model":"{model}","input_max":76,"output_max":64,"line":{number},'
            f'"route":{{"model":"{model}","rule":"default","reason":"no rule matched"}},'
            f'"body":{{"model":"{model}","max_tokens":64,"messages":[{{"role":"user",'
            f'"content":"{TEXTS[number % 5]} #{number}"}}]}}}}')


def write_file(path: Path, count: int) -> None:
    """bench.intake's batch (short chat requests, `auto` and explicit models mixed), with
    every REFUSED_EVERY-th line missing its body."""
    with open(path, "w") as handle:
        for i in range(count):
            line: dict[str, Any] = {"custom_id": f"req-{i:07d}", "method": "POST",
                                    "url": "/v1/chat/completions"}
            if (i + 1) % REFUSED_EVERY:
                line["body"] = {"model": MODELS[i % 5], "max_tokens": 64, "messages": [
                    {"role": "user", "content": f"{TEXTS[i % 5]} #{i}"}]}
            handle.write(json.dumps(line) + "\n")


def fresh_store(url: str) -> Engine:
    """An engine on `url` whose corral tables were dropped and re-created."""
    engine = store_engine(url)
    metadata.drop_all(engine)
    with engine.begin() as connection:
        connection.execute(text("DROP TABLE IF EXISTS alembic_version"))
    upgrade(engine)
    return engine


def finish(intake: LineIntake, total: int, source: str, models: list[str]) -> None:
    intake.finish(total=total, completion_window="24h", expires_at=int(time.time()) + 86_400,
                  input_file=source, options={"models": models})


def run_storage(url: str, count: int) -> dict[str, Any]:
    """LineIntake of `count` synthetic lines; also times the generator alone."""
    engine = fresh_store(url)
    started = time.perf_counter()
    job_bytes = sum(len(job) for *_, job in synthetic_lines(count))
    generator_s = time.perf_counter() - started
    started = time.perf_counter()
    with LineIntake(engine, "batch_bench") as intake:
        for number, custom_id, model, job in synthetic_lines(count):
            if model:
                intake.accept(custom_id, number, model, job)
            else:
                intake.reject(custom_id, number, "body: required")
        finish(intake, count, "synthetic", list(SYNTHETIC_MODELS))
    seconds = time.perf_counter() - started
    refused = count // REFUSED_EVERY
    return {"seconds": seconds, "lines": count, "generator_s": generator_s,
            "job_bytes": job_bytes / (count - refused), **stored_counts(engine)}


def run_pipeline(url: str, path: Path, *, store: bool, processes: int) -> dict[str, Any]:
    """Validate and route `path` as submit does (`processes` validating: 0 one per CPU), each
    accepted line into LineIntake (when `store`)."""
    from corral.config import load_config
    from producer.parallel_intake import CheckedJob, checked_jobs

    config = load_config(EXAMPLE_CONFIG)
    engine = fresh_store(url) if store else None
    models: set[str] = set()
    accepted = refused = 0
    children = ChildrenPeaks()
    started = time.perf_counter()
    with children, LineIntake(engine, "batch_bench") if engine else nullcontext() as intake:
        for checked in checked_jobs(path, config, processes):
            if isinstance(checked, CheckedJob):
                if intake is not None:
                    intake.accept(checked.custom_id, checked.number, checked.model, checked.job)
                models.add(checked.model)
                accepted += 1
            else:
                if intake is not None:
                    intake.reject(checked.record_id, checked.number, checked.reason)
                refused += 1
        if intake is not None:
            finish(intake, accepted + refused, str(path), sorted(models))
    seconds = time.perf_counter() - started
    counts = stored_counts(engine) if engine else {"stored": 0, "records": 0}
    return {"seconds": seconds, "lines": accepted + refused, "accepted": accepted, **counts,
            "children_rss_mb": sorted(children.peaks_mb.values(), reverse=True)}


class ChildrenPeaks:
    """Each child process's peak resident memory (VmRSS, sampled every 0.1 s from /proc):
    the validating workers and multiprocessing's resource tracker. (getrusage counts a
    spawned child at its parent's size, from the fork before its exec.)"""

    def __init__(self) -> None:
        self.peaks_mb: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> ChildrenPeaks:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _watch(self) -> None:
        parent = f"PPid:\t{os.getpid()}\n"
        while not self._stop.wait(0.1):
            for pid in filter(str.isdigit, os.listdir("/proc")):
                try:
                    status = Path(f"/proc/{pid}/status").read_text()
                except OSError:
                    continue
                if parent in status and "VmRSS:" in status:
                    rss_mb = int(status.split("VmRSS:")[1].split()[0]) / 1024
                    self.peaks_mb[int(pid)] = max(self.peaks_mb.get(int(pid), 0.0), rss_mb)


def stored_counts(engine: Engine) -> dict[str, Any]:
    """What the intake left (a sanity check, after the timing)."""
    with engine.connect() as connection:
        return {"stored": connection.execute(text("SELECT count(*) FROM lines")).scalar_one(),
                "records": connection.execute(text(
                    "SELECT count(*) FROM records")).scalar_one(),
                "batch": connection.execute(text(
                    "SELECT status || ' failed=' || failed FROM batches")).scalar_one()}


def child_main(args: argparse.Namespace) -> None:
    if args.child == "storage":
        outcome = run_storage(args.url, args.lines)
    else:
        outcome = run_pipeline(args.url, Path(args.file), store=args.child != "validate",
                               processes=1 if args.child == "serial" else 0)
    print(json.dumps(outcome))


def run_child(case: str, url: str, lines: int, path: Path) -> tuple[dict[str, Any], float]:
    """One case in a child process; returns its outcome and its peak RSS in MB."""
    child = subprocess.Popen(
        [sys.executable, "-m", "bench.intake_store", "--child", case, "--url", url,
         "--lines", str(lines), "--file", str(path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(child.pid, 0)
    out, err = child.stdout.read(), child.stderr.read()  # type: ignore[union-attr]
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{case} on {url} failed: {err.decode()[-3000:]}")
    outcome = json.loads(out.decode().strip().splitlines()[-1])
    return outcome, usage.ru_maxrss / 1024 + sum(outcome.get("children_rss_mb", []))


def postgres_in_own_schema(url: str) -> str:
    """`url` with search_path set to PG_SCHEMA, created if missing."""
    run_sql(url, f"CREATE SCHEMA IF NOT EXISTS {PG_SCHEMA}")
    return make_url(url).update_query_dict({"options": f"-csearch_path={PG_SCHEMA}"}
                                           ).render_as_string(hide_password=False)


def drop_schema(url: str) -> None:
    run_sql(url, f"DROP SCHEMA IF EXISTS {PG_SCHEMA} CASCADE")


def run_sql(url: str, sql: str) -> None:
    """One statement on a connection of its own, committed."""
    engine = store_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(text(sql))
    finally:
        engine.dispose()


def machine(postgres_url: str) -> str:
    import psycopg

    from corral.settings import get_settings
    from corral.tokens import resolve_prompt_estimator

    engine = store_engine(postgres_url)
    try:
        with engine.connect() as connection:
            server = connection.execute(text("SHOW server_version")).scalar_one()
            fsync = connection.execute(text("SHOW synchronous_commit")).scalar_one()
    finally:
        engine.dispose()
    estimator = resolve_prompt_estimator(get_settings().token_estimator)[1]
    return (f"machine: {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, "
            f"Python {platform.python_version()}, load {os.getloadavg()[0]:.1f}\n"
            f"SQLite {sqlite3.sqlite_version} (WAL, synchronous NORMAL, file on "
            f"{Path(tempfile.gettempdir())}); PostgreSQL {server} on this host "
            f"(synchronous_commit {fsync}), psycopg {psycopg.__version__} "
            f"({psycopg.pq.__impl__}) COPY\nprompt tokens: {estimator}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cases", type=lambda text: text.split(","), default=None,
                        help="comma list of storage, pipeline, serial, validate (default all)")
    parser.add_argument("--postgres-url", default=os.environ.get("CORRAL_TEST_POSTGRES_URL",
                                                                 DEFAULT_POSTGRES_URL))
    parser.add_argument("--child", choices=("storage", "pipeline", "serial", "validate"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_main(args)
        return
    print(machine(args.postgres_url))
    postgres = postgres_in_own_schema(args.postgres_url)
    rows = []
    try:
        with tempfile.TemporaryDirectory(prefix="corral-intake-store-") as tmp:
            path = Path(tmp) / "batch.jsonl"
            write_file(path, args.lines)
            print(f"input file: {args.lines:,} lines, {path.stat().st_size / 1e6:.0f} MB, "
                  f"1 in {REFUSED_EVERY} refused; {args.runs} runs per case", flush=True)
            for case, dialect in CASES:
                if args.cases and case not in args.cases:
                    continue
                runs = []
                for run in range(args.runs):
                    database = Path(tmp) / f"store-{run}.db"
                    url = {"sqlite": f"sqlite:///{database}", "postgresql": postgres}.get(
                        dialect, "")
                    runs.append(run_child(case, url, args.lines, path))
                    for leftover in Path(tmp).glob("store-*.db*"):
                        leftover.unlink()
                rows.append((case, dialect, runs))
                print(f"  {CASE_NAMES[case]} {dialect or '-'}: "
                      + ", ".join(f"{outcome['lines'] / outcome['seconds']:,.0f}/s "
                                  f"{rss:.0f} MB" + (
                                      f" ({rss - sum(outcome['children_rss_mb']):.0f} + "
                                      + " + ".join(f"{child:.0f}" for child in
                                                   outcome["children_rss_mb"]) + " MB)"
                                      if outcome.get("children_rss_mb") else "")
                                  for outcome, rss in runs), flush=True)
    finally:
        drop_schema(args.postgres_url)
    print_table(rows)


def print_table(rows: list[tuple[str, str, list[tuple[dict[str, Any], float]]]]) -> None:
    print(f"\n{'case':<32} {'database':<10} {'lines':>9} {'stored':>9} {'records':>7} "
          f"{'median s':>8} {'lines/s':>9} {'peak RSS MB':>11}")
    for case, dialect, runs in rows:
        seconds = statistics.median(outcome["seconds"] for outcome, _ in runs)
        first = runs[0][0]
        rss = max(rss for _, rss in runs)
        print(f"{CASE_NAMES[case]:<32} {dialect or '-':<10} {first['lines']:>9,} "
              f"{first['stored']:>9,} {first['records']:>7,} {seconds:>8.2f} "
              f"{first['lines'] / seconds:>9,.0f} {rss:>11.0f}")
    storage = next((outcome for case, _, runs in rows if case == "storage"
                    for outcome, _ in runs), None)
    if storage:
        print(f"synthetic lines: jobs of {storage['job_bytes']:.0f} bytes on average; the "
              f"generator alone ran at {storage['lines'] / storage['generator_s']:,.0f} "
              "lines/s")
    print(f"targets: >= {TARGET_LINES_PER_S:,} lines/s stored; peak RSS < {TARGET_RSS_MB_1M} MB "
          f"at 1M lines (load average at the end: {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
