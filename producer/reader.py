"""Streams a JSONL file as numbered physical lines, without loading it whole."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

UTF8_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class RawLine:
    """One non-blank physical line: its 1-based number and its bytes without the line end."""

    number: int
    data: bytes


def read_lines(path: str | Path) -> Iterator[RawLine]:
    """Yield the non-blank lines of `path`, numbered as physical lines from 1.

    A UTF-8 BOM at the start and CRLF line ends are accepted; blank lines are skipped but counted.
    """
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            if number == 1 and line.startswith(UTF8_BOM):
                line = line[len(UTF8_BOM):]
            line = line.rstrip(b"\r\n")
            if line.strip():
                yield RawLine(number, line)
