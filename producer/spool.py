"""A batch's accepted lines on the submitting machine's disk, one file per model, until fed.

Each line is `<n>:<custom_id><job JSON>` where n is the custom_id's length in bytes, so the
feeder reads a line back without parsing its JSON. Rejected lines wait in `rejected.jsonl`
until the batch exists and they become error records.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from corral.settings import get_settings

REJECTED = "rejected.jsonl"


def spool_root() -> Path:
    """CORRAL_SPOOL_DIR, else $XDG_STATE_HOME/corral/spool (~/.local/state/corral/spool)."""
    configured = get_settings().spool_dir
    if configured:
        return Path(configured)
    state = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(state) / "corral" / "spool"


def model_file(directory: Path, model: str) -> Path:
    """The spool file of one model's lines."""
    return directory / f"{model}.lines"


class SpoolWriter:
    """Appends accepted lines per model and rejected lines, in a directory of its own."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=False)
        self._files: dict[str, BinaryIO] = {}
        self._rejected: BinaryIO | None = None

    def accept(self, model: str, custom_id: str, job_json: str) -> None:
        """Spool one routed line for `model`."""
        handle = self._files.get(model)
        if handle is None:
            handle = self._files[model] = open(model_file(self.directory, model), "wb")  # noqa: SIM115
        key = custom_id.encode()
        handle.write(b"%d:%b%b\n" % (len(key), key, job_json.encode()))

    def reject(self, record_id: str, number: int, reason: str) -> None:
        """Spool one refused line, to be filed as an invalid_request error record."""
        if self._rejected is None:
            self._rejected = open(self.directory / REJECTED, "wb")  # noqa: SIM115
        self._rejected.write(json.dumps([record_id, number, reason]).encode() + b"\n")

    def close(self) -> None:
        """Flush and close every file."""
        for handle in [*self._files.values(), *([self._rejected] if self._rejected else [])]:
            handle.close()

    def discard(self) -> None:
        """Close and remove the whole spool (the file was refused)."""
        self.close()
        shutil.rmtree(self.directory, ignore_errors=True)


def read_model_lines(path: Path, offset: int, limit: int) -> tuple[list[tuple[str, str]], int]:
    """Up to `limit` (custom_id, job JSON) pairs from byte `offset`; returns them and the
    offset after the last one."""
    entries: list[tuple[str, str]] = []
    with open(path, "rb") as handle:
        handle.seek(offset)
        while len(entries) < limit:
            line = handle.readline()
            if not line:
                break
            size, _, rest = line.partition(b":")
            split = int(size)
            entries.append((rest[:split].decode(), rest[split:-1].decode()))
        return entries, handle.tell()


def read_rejected(directory: Path) -> Iterator[tuple[str, int, str]]:
    """(record_id, line number, reason) of each refused line."""
    path = directory / REJECTED
    if path.exists():
        with open(path, "rb") as handle:
            for line in handle:
                record_id, number, reason = json.loads(line)
                yield str(record_id), int(number), str(reason)
