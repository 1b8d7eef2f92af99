"""`results`: writes the finished lines as OpenAI batch output files (results and errors)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from corral.store import Store


@dataclass(frozen=True)
class WrittenCounts:
    results: int
    errors: int


def errors_path_for(output: Path) -> Path:
    """`out.jsonl` → `out.errors.jsonl`: `.errors` before the extension."""
    return output.with_name(f"{output.stem}.errors{output.suffix}") if output.suffix \
        else output.with_name(f"{output.name}.errors")


def write_outputs(store: Store, batch_id: str, results_path: Path, errors_path: Path,
                  *, input_order: bool = False, with_route: bool = False) -> WrittenCounts:
    """Write results and errors files atomically (each appears whole or not at all)."""
    results_tmp = results_path.with_name(results_path.name + ".tmp")
    errors_tmp = errors_path.with_name(errors_path.name + ".tmp")
    counts = {"results": 0, "errors": 0}
    with open(results_tmp, "w", encoding="utf-8") as results, \
            open(errors_tmp, "w", encoding="utf-8") as errors:
        for record in store.records.iter_records(batch_id, input_order=input_order):
            if not with_route:
                record.pop("route", None)
            kind, handle = ("errors", errors) if record.get("error") else ("results", results)
            handle.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n")
            counts[kind] += 1
    os.replace(results_tmp, results_path)
    os.replace(errors_tmp, errors_path)
    return WrittenCounts(**counts)
