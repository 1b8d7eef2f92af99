"""corral's own overhead end to end: lines/s beside a bare Celery task and a one-process client.

One batch (``--lines`` lines, one model, prompts of 120-360 characters from a fixed seed,
``max_tokens`` 50) runs against one simulator at 0 ms with limits far above the load, through
each contender in turn; every run starts from an empty Redis database 9 (the only one flushed),
a fresh record store (a new SQLite file, or ``--store-url`` wiped) and reset simulator counters,
and the contenders alternate within each round so a busy machine slows them alike:

- ``corral``: ``--processes`` workers (threads pool, ``--concurrency`` slots each) already
  consuming, then ``corral submit``; ``corral-quiet``: the same with task events off
  (``CORRAL_TASK_EVENTS=false``, the submit's task-sent events too), so the two side by side
  give what the events Flower needs cost; ``corral-pre``: the same but the workers start once the
  submit has returned (the bare task's method, so its ``served`` compares like for like; lines
  beyond ``CORRAL_QUEUE_DEPTH`` wait in the record store until the workers' feeding loops send
  them);
- ``bare-threads`` / ``bare-gevent``: ``bench.bare_task`` (the same POST, nothing stored), all
  tasks queued first, then the workers; threads share one httpx client per process, gevent
  takes clients from a free list (``--greenlets`` per process);
- ``bare-live``: the gevent bare task end to end, measured as ``corral`` is: its workers
  already consuming, then ``python -m bench.bare_task FILE`` (one task per line of the file,
  as a hand-written batch script sends them);
- ``reference``: ``bench.reference_client``, one asyncio process, in-memory buckets, tuned:
  no pause between dispatches, ``--reference-in-flight`` requests at most;
- ``cookbook``: the same client with the cookbook's own loop: 1 ms asleep after every
  dispatch (its ``seconds_to_sleep_each_loop``) and no cap on requests in flight.

Columns (lines/s, medians over the valid runs): ``e2e`` from launching ``corral submit`` (or the
reference client, or the bare task's sender) to the last stored result (corral: the latest
``at`` of its ledger rows, stamped as each line's record goes to the store; the bare task: the
simulator's last response);
``served`` from the simulator's first request to its last response (the workers' rate);
``enqueue`` lines / time to queue them (``corral submit`` or the bare task's sender as a
process, or the bare tasks sent in-process). A run counts only if the simulator served every
line and (corral) the batch completed with one result per line; invalid runs are listed, never
averaged.

Run it from the repository root with Redis at 127.0.0.1:6379::

    python -m bench.end_to_end --lines 20000 --runs 3
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.harness import MODEL, UPSTREAM
from bench.overhead_runs import Measure, run_bare, run_bare_live, run_corral, run_reference
from bench.overhead_stack import MAX_TOKENS, OverheadStack
from bench.report import cell, machine, machine_line, median, table
from bench.stores import describe
from bench.workload import make_lines, write_jsonl

CONTENDERS = ("corral", "corral-quiet", "corral-pre", "bare-threads", "bare-gevent",
              "bare-live", "reference", "cookbook")
# corral-quiet's settings on top of the stack's: no task events (received, started,
# succeeded from the workers; task-sent from the submit).
QUIET_ENV = {"CORRAL_TASK_EVENTS": "false"}
EVENTS_TARGET = 0.85
ONE_PROCESS = ("reference", "cookbook")
COOKBOOK_LOOP_SLEEP_MS = 1.0
COOKBOOK_IN_FLIGHT = 10_000  # the cookbook caps nothing but the rate
BARE_TARGET = 0.8
REFERENCE_TARGET = 1.2


@dataclasses.dataclass
class Row:
    """One contender at one process count, and what each of its runs gave."""

    contender: str
    processes: int
    slots: int
    measures: list[Measure] = dataclasses.field(default_factory=list)
    invalid: list[str] = dataclasses.field(default_factory=list)

    def rate(self, field: str) -> float | None:
        """The median of one rate over the valid runs; None while any run was invalid."""
        if self.invalid:
            return None
        return median([getattr(measure, field) for measure in self.measures])


def build_parser() -> argparse.ArgumentParser:
    """The benchmark's flags."""
    parser = argparse.ArgumentParser(prog="python -m bench.end_to_end",
                                     description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--lines", type=int, default=20_000, help="lines in the batch")
    add("--runs", type=int, default=3, help="rounds; the table shows medians")
    add("--processes", type=lambda text: [int(item) for item in text.split(",")],
        default=[1, 2], help="worker process counts (comma list)")
    add("--contenders", type=lambda text: text.split(","), default=list(CONTENDERS),
        help=f"comma list of {', '.join(CONTENDERS)}")
    add("--concurrency", type=int, default=64, help="threads per bare-threads process")
    add("--corral-concurrency", type=int, default=None,
        help="task slots per corral worker process (default: --concurrency)")
    add("--greenlets", type=int, default=64, help="greenlets per bare gevent process")
    add("--reference-in-flight", type=int, default=2,
        help="the reference client's concurrent requests (at 0 ms httpx's async client was "
             "fastest with 2 here; 16 or more in flight was markedly slower)")
    add("--corral-pool", choices=("threads", "gevent"), default="threads",
        help="pool of corral's workers (gevent takes httpx clients from a free list)")
    add("--corral-limiter", choices=("shared", "off"), default="shared",
        help="CORRAL_RATE_LIMITER of corral's workers (shared: one Lua call per line)")
    add("--corral-env", type=_setting, action="append", default=[], metavar="CORRAL_X=VALUE",
        help="a setting for corral's processes (repeatable), e.g. CORRAL_TASK_EVENTS=false")
    add("--store-url", default=None, metavar="URL",
        help="a record store to wipe before each run (default: a new SQLite file per run)")
    add("--json-out", type=Path, default=None, help="also write the figures as JSON here")
    return parser


def _setting(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name.startswith("CORRAL_"):
        raise argparse.ArgumentTypeError("expected CORRAL_NAME=VALUE")
    return name, value


def make_rows(args: argparse.Namespace) -> list[Row]:
    """The table's rows in the order they run within a round."""
    unknown = set(args.contenders) - set(CONTENDERS)
    if unknown:
        raise SystemExit(f"unknown contenders: {', '.join(sorted(unknown))}")
    needs_gevent = [name for name in args.contenders if name in ("bare-gevent", "bare-live")]
    if needs_gevent and importlib.util.find_spec("gevent") is None:
        print("end_to_end: gevent is not installed (pip install -e '.[bench]'); "
              f"skipping {', '.join(needs_gevent)}", file=sys.stderr)
        args.contenders = [name for name in args.contenders if name not in needs_gevent]
    corral_slots = args.corral_concurrency or args.concurrency
    slots = {"corral": corral_slots, "corral-quiet": corral_slots, "corral-pre": corral_slots,
             "bare-threads": args.concurrency, "bare-gevent": args.greenlets,
             "bare-live": args.greenlets,
             "reference": args.reference_in_flight, "cookbook": COOKBOOK_IN_FLIGHT}
    return [Row(name, processes, slots[name]) for name in args.contenders
            for processes in ([1] if name in ONE_PROCESS else args.processes)]


def run_row(row: Row, stack: OverheadStack, files: tuple[Path, Path],
            bodies: list[dict[str, Any]], run_dir: Path) -> Measure:
    """One run of one row; ``files``: the batch for corral, the same for the reference client."""
    batch_file, upstream_file = files
    run_dir.mkdir(parents=True, exist_ok=True)
    if row.contender.startswith("corral"):
        return run_corral(stack, batch_file, len(bodies), processes=row.processes,
                          prequeued=row.contender == "corral-pre", run_dir=run_dir,
                          extra_env=QUIET_ENV if row.contender == "corral-quiet" else None)
    if row.contender == "bare-live":
        return run_bare_live(stack, upstream_file, len(bodies), processes=row.processes,
                             pool="gevent", concurrency=row.slots, run_dir=run_dir)
    if row.contender.startswith("bare"):
        return run_bare(stack, bodies, processes=row.processes,
                        pool=row.contender.removeprefix("bare-"), concurrency=row.slots,
                        run_dir=run_dir)
    return run_reference(stack, upstream_file, len(bodies), max_in_flight=row.slots,
                         run_dir=run_dir, loop_sleep_ms=COOKBOOK_LOOP_SLEEP_MS
                         if row.contender == "cookbook" else 0.0)


def format_table(rows: Sequence[Row], runs: int) -> str:
    """Medians side by side, one row per contender and process count."""
    header = ("contender", "procs", "slots", "e2e/s", "served/s", "enqueue/s", "valid",
              "extra calls")
    lines = [(row.contender, str(row.processes),
              "no cap" if row.slots == COOKBOOK_IN_FLIGHT else str(row.slots),
              cell(row.rate("e2e")),
              cell(row.rate("served")), cell(row.rate("enqueue")),
              f"{len(row.measures)}/{runs}",
              cell(median([float(m.extra_calls) for m in row.measures])))
             for row in rows]
    return table(header, lines)


def ratios(rows: Sequence[Row]) -> list[dict[str, Any]]:
    """corral against the best bare task and the two reference clients, per process count."""
    found = {(row.contender, row.processes): row for row in rows}

    def rate(contender: str, processes: int, field: str) -> float | None:
        row = found.get((contender, processes))
        return row.rate(field) if row else None

    reference = rate("reference", 1, "e2e")
    cookbook = rate("cookbook", 1, "e2e")
    result = []
    for processes in sorted({row.processes for row in rows
                             if row.contender not in ONE_PROCESS}):
        bares = [value for value in (rate("bare-threads", processes, "served"),
                                     rate("bare-gevent", processes, "served")) if value]
        best_bare = max(bares) if bares else None
        result.append({
            "processes": processes,
            "corral_e2e_over_bare": _share(rate("corral", processes, "e2e"), best_bare),
            "corral_e2e_over_bare_e2e": _share(rate("corral", processes, "e2e"),
                                               rate("bare-live", processes, "e2e")),
            "corral_served_over_bare": _share(rate("corral", processes, "served"), best_bare),
            "corral_pre_served_over_bare": _share(rate("corral-pre", processes, "served"),
                                                 best_bare),
            "corral_e2e_over_reference": _share(rate("corral", processes, "e2e"), reference),
            "corral_e2e_over_cookbook": _share(rate("corral", processes, "e2e"), cookbook),
            "events_on_over_off": _share(rate("corral", processes, "e2e"),
                                         rate("corral-quiet", processes, "e2e")),
        })
    return result


def _share(top: float | None, bottom: float | None) -> float | None:
    return top / bottom if top and bottom else None


def format_ratios(found: Sequence[dict[str, Any]]) -> str:
    """The targets, one line per process count."""
    def show(value: float | None, target: float) -> str:
        if value is None:
            return "n/a"
        return f"{value:.2f} ({'meets' if value >= target else 'below'} ≥ {target:g})"

    return "\n".join(
        f"{item['processes']} process(es): corral e2e / best bare served = "
        f"{show(item['corral_e2e_over_bare'], BARE_TARGET)}; corral e2e / bare-live e2e = "
        f"{show(item['corral_e2e_over_bare_e2e'], BARE_TARGET)}; corral-pre served / best bare "
        f"served = {show(item['corral_pre_served_over_bare'], BARE_TARGET)}; corral e2e / "
        f"reference e2e = {show(item['corral_e2e_over_reference'], REFERENCE_TARGET)}; "
        f"corral e2e / cookbook e2e = "
        f"{show(item['corral_e2e_over_cookbook'], REFERENCE_TARGET)}; task events on / off "
        f"(corral e2e / corral-quiet e2e) = {show(item['events_on_over_off'], EVENTS_TARGET)}"
        for item in found)


def main(argv: Sequence[str] | None = None) -> int:
    """Run every row ``--runs`` times, then print the medians, the ratios and the machine."""
    args = build_parser().parse_args(argv)
    info = machine()
    rows = make_rows(args)
    work_dir = Path(tempfile.mkdtemp(prefix="corral-overhead-"))
    lines = make_lines(args.lines, model=MODEL, min_chars=120, max_chars=360,
                       max_tokens=MAX_TOKENS, seed=0)
    batch_file = write_jsonl(lines, work_dir / "batch.jsonl")
    # The bare task and the reference client send the upstream id, as corral's workers do.
    upstream_lines = [{**line, "body": {**line["body"], "model": UPSTREAM}} for line in lines]
    upstream_file = write_jsonl(upstream_lines, work_dir / "upstream.jsonl")
    bodies = [line["body"] for line in upstream_lines]
    print(f"end_to_end: {args.lines} lines x {args.runs} runs; logs in {work_dir}",
          file=sys.stderr)
    with OverheadStack(work_dir, concurrency=args.corral_concurrency or args.concurrency,
                       rate_limiter=args.corral_limiter,
                       extra_env=dict(args.corral_env), corral_pool=args.corral_pool,
                       store_url=args.store_url) as stack:
        for run in range(args.runs):
            for row in rows:
                name = f"{row.contender}-{row.processes}-run{run + 1}"
                try:
                    measure = run_row(row, stack, (batch_file, upstream_file), bodies,
                                      work_dir / name)
                except Exception as err:  # a broken run is reported, and the others go on
                    row.invalid.append(f"{name}: {type(err).__name__}: {err}")
                    print(f"end_to_end: {name} INVALID: {err}", file=sys.stderr)
                    continue
                row.measures.append(measure)
                print(f"end_to_end: {name}: {measure}", file=sys.stderr)
        stack.reset()
    found = ratios(rows)
    print(table_title(args))
    print(format_table(rows, args.runs))
    print(format_ratios(found))
    for row in rows:
        for problem in row.invalid:
            print(f"INVALID (not in the medians' row): {problem}")
    print(machine_line(info))
    if args.json_out:
        args.json_out.write_text(json.dumps({
            "machine": info, "lines": args.lines, "runs": args.runs,
            "corral_limiter": args.corral_limiter, "corral_env": dict(args.corral_env),
            "rows": [{"contender": row.contender, "processes": row.processes,
                      "slots": row.slots, "e2e": row.rate("e2e"), "served": row.rate("served"),
                      "enqueue": row.rate("enqueue"), "invalid": row.invalid,
                      "runs": [dataclasses.asdict(measure) for measure in row.measures]}
                     for row in rows],
            "ratios": found}, indent=2))
    return 0 if not any(row.invalid for row in rows) else 1


def table_title(args: argparse.Namespace) -> str:
    """What the table shows, above it."""
    settings = "".join(f", {name}={value}" for name, value in args.corral_env)
    return (f"{args.lines} lines, simulator at 0 ms, limits far above the load, corral limiter "
            f"{args.corral_limiter}, corral pool {args.corral_pool}{settings}, record store "
            f"{describe(args.store_url)}; medians of {args.runs} run(s), lines/s:")


if __name__ == "__main__":
    sys.exit(main())
