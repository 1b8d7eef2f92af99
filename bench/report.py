"""What the overhead benchmarks print: the machine, medians over runs, aligned tables."""

from __future__ import annotations

import os
import platform
import statistics
from collections.abc import Sequence
from pathlib import Path


def machine() -> dict[str, object]:
    """CPU count and model, Python version, and the load average when the benchmark started."""
    model = "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return {"cpus": os.cpu_count(), "cpu_model": model,
            "python": platform.python_version(), "load_1m_at_start": round(load[0], 2)}


def machine_line(info: dict[str, object], *, timed: bool = True) -> str:
    """One line describing ``machine()``; for timed figures, a load of half the CPUs or more
    is called out."""
    busy = ""
    cpus = info["cpus"]
    load = info["load_1m_at_start"]
    if timed and isinstance(cpus, int) and isinstance(load, float) and load >= 0.5 * cpus:
        busy = "  (BUSY: figures are not comparable)"
    return (f"machine: {cpus} CPUs, {info['cpu_model']}, Python {info['python']}, "
            f"load {load} at start{busy}")


def median(values: Sequence[float | None]) -> float | None:
    """The median of the values that are not None (None if there are none)."""
    present = [value for value in values if value is not None]
    return statistics.median(present) if present else None


def cell(value: float | int | str | None, digits: int = 0) -> str:
    """A number with thousands separators, a string as is, None as "-"."""
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    return f"{value:,.{digits}f}"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns as wide as their widest cell; the first left-aligned, the rest right-aligned."""
    widths = [max(len(row[index]) for row in [header, *rows]) for index in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(text.ljust(width) if index == 0 else text.rjust(width)
                         for index, (text, width) in enumerate(zip(cells, widths, strict=True)))

    rule = "-" * (sum(widths) + 2 * (len(widths) - 1))
    return "\n".join([line(header), rule, *(line(row) for row in rows)])
