"""bench/result_tables.py reads the real bench/results tables; scripts/plot_benchmarks.py draws
them."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from bench import result_tables

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "plot_benchmarks.py"


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("plot_benchmarks", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def plots() -> ModuleType:
    return load_script()


def test_parsing_needs_no_matplotlib() -> None:
    code = (f"import importlib.util, sys; spec = importlib.util.spec_from_file_location("
            f"'plot_benchmarks', {str(SCRIPT)!r}); module = importlib.util.module_from_spec("
            f"spec); sys.modules['plot_benchmarks'] = module; spec.loader.exec_module(module); "
            f"module.e2e_tables(module.read('e2e.txt')); "
            f"assert 'matplotlib' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_end_to_end_table_is_read_with_its_dashes_and_no_cap() -> None:
    text = result_tables.read("e2e.txt")
    table = result_tables.e2e_tables(text)[0]
    rows = {(row.contender, row.procs): row for row in table}
    assert len(table) == 12
    assert rows[("corral", 1)].e2e == 706 and rows[("corral", 1)].served == 735
    assert rows[("corral", 2)].enqueue == 12_980
    assert rows[("bare-gevent", 2)].e2e is None and rows[("bare-gevent", 2)].served == 1_275
    assert rows[("cookbook", 1)].slots == result_tables.SLOTS_NO_CAP
    assert result_tables.machine_of(text) == "2 CPUs, AMD EPYC"


def test_store_rounds_carry_their_commit_to_the_same_commit_sections() -> None:
    sections = result_tables.e2e_store_sections(result_tables.read("e2e_store.txt"))
    assert [label for label, _ in sections] == [
        "records in Redis @ 0fdbc06", "SQLite @ 453879f", "PostgreSQL @ 453879f",
        "SQLite @ 543ab26", "PostgreSQL @ 543ab26", "SQLite @ 8a78cfc", "PostgreSQL @ 8a78cfc"]
    last = {row.contender: row for row in sections[-1][1]}
    assert last["corral"].e2e == 555 and last["corral-quiet"].e2e == 603
    assert last["bare-gevent"].served == 911


def test_events_tables_are_gevent_then_threads() -> None:
    gevent, threads = result_tables.e2e_tables(result_tables.read("e2e_events.txt"))[:2]
    assert {(r.contender, r.procs): r.e2e for r in gevent}[("corral-quiet", 1)] == 220
    assert {r.slots for r in threads} == {32}


def test_worker_cost_tables_in_file_order() -> None:
    tables = result_tables.cost_tables(result_tables.read("worker_cost_store.txt"))
    assert len(tables) == 4
    sqlite = {(r.contender, r.pool): r for r in tables[0]}
    assert sqlite[("corral", "threads")].machine_ms == pytest.approx(3.207)
    assert sqlite[("bare", "gevent")].rate == 529
    assert [r.pool for r in tables[1]] == ["threads", "gevent"]


def test_intake_cancel_enqueue_and_redis_figures() -> None:
    now, before = result_tables.intake_tables(result_tables.read("intake_store.txt"))
    pipeline = {r.database: r for r in now if r.case.startswith("pipeline (")}
    assert pipeline["sqlite"].rate == 48_948 and pipeline["postgresql"].peak_rss_mb == 238
    assert len(before) == 5
    cancel = result_tables.cancel_tables(result_tables.read("cancel.txt"))
    assert ("postgresql", "command", 8.76) in cancel[0] and len(cancel[1]) == 8
    enqueue = result_tables.enqueue_rows(result_tables.read("enqueue.txt"))
    assert enqueue[-1] == ("(c) corral send_jobs", 197_073, 196_850, 202_844)
    assert result_tables.redis_growth(result_tables.read("redis_bytes_store.txt")) == [
        ("10,000", 9.16), ("100,000", 9.45), ("1,000,000 (cut)", 15.06)]


def test_plots_draw_titled_svgs_with_the_same_bytes_each_time(plots, tmp_path,
                                                              monkeypatch) -> None:
    pytest.importorskip("matplotlib")
    monkeypatch.setattr(plots, "IMAGES", tmp_path)
    plt = plots._pyplot()
    paths = [plot(plt) for plot in plots.PLOTS]
    assert sorted(path.name for path in paths) == sorted(
        f"bench-{name}.svg" for name in ("e2e", "e2e-store", "events", "worker-cpu", "intake",
                                          "cancel", "enqueue", "redis-bytes"))
    for path in paths:
        svg = path.read_text()
        assert "machine: 2 CPUs" in svg and "<dc:date>" not in svg
    first = (tmp_path / "bench-e2e.svg").read_bytes()
    plots.plot_e2e(plt)
    assert (tmp_path / "bench-e2e.svg").read_bytes() == first
