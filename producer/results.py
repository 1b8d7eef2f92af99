"""`results`: writes the finished lines as OpenAI batch output files (results and errors)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from corral.redis_keys import BatchKeys
from producer.redis_lists import iter_chunks


@dataclass(frozen=True)
class WrittenCounts:
    results: int
    errors: int


def errors_path_for(output: Path) -> Path:
    """`out.jsonl` → `out.errors.jsonl`: `.errors` before the extension."""
    return output.with_name(f"{output.stem}.errors{output.suffix}") if output.suffix \
        else output.with_name(f"{output.name}.errors")


def iter_records(client: redis.Redis, batch_id: str, *,
                 input_order: bool = False) -> Iterator[dict[str, Any]]:
    """Terminal records written so far, in completion order or input order, chunk by chunk.

    A line re-run by `retry` appears in `done` more than once; only the position its current
    record was written at (kept in `seq`) counts.
    """
    keys = BatchKeys(batch_id)
    for start, ids in iter_chunks(client, keys.order if input_order else keys.done):
        pipe = client.pipeline(transaction=False)
        pipe.hmget(keys.outcomes, ids)
        pipe.hmget(keys.seq, ids)
        records, positions = pipe.execute()
        for offset, (raw, position) in enumerate(zip(records, positions, strict=True)):
            if raw is None:  # in input order, lines still running have no record yet
                continue
            if not input_order and position != str(start + offset + 1):
                continue  # an earlier, replaced completion of a retried line
            yield json.loads(raw)


def write_outputs(client: redis.Redis, batch_id: str, results_path: Path, errors_path: Path,
                  *, input_order: bool = False, with_route: bool = False) -> WrittenCounts:
    """Write results and errors files atomically (each appears whole or not at all)."""
    results_tmp = results_path.with_name(results_path.name + ".tmp")
    errors_tmp = errors_path.with_name(errors_path.name + ".tmp")
    counts = {"results": 0, "errors": 0}
    with open(results_tmp, "w", encoding="utf-8") as results, \
            open(errors_tmp, "w", encoding="utf-8") as errors:
        for record in iter_records(client, batch_id, input_order=input_order):
            if not with_route:
                record.pop("route", None)
            kind, handle = ("errors", errors) if record.get("error") else ("results", results)
            handle.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n")
            counts[kind] += 1
    os.replace(results_tmp, results_path)
    os.replace(errors_tmp, errors_path)
    return WrittenCounts(**counts)
