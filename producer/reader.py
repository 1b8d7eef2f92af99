"""Streams a JSONL file as numbered physical lines, without loading it whole."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

UTF8_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class RawLine:
    """One non-blank physical line: its 1-based number, its bytes without the line end, and
    the byte offset where it starts in the file."""

    number: int
    data: bytes
    offset: int = 0


def read_lines(path: str | Path) -> Iterator[RawLine]:
    """Yield the non-blank lines of `path`, numbered as physical lines from 1.

    A UTF-8 BOM at the start and CRLF line ends are accepted; blank lines are skipped but counted.
    """
    offset = 0
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            start, offset = offset, offset + len(line)
            if number == 1 and line.startswith(UTF8_BOM):
                line = line[len(UTF8_BOM):]
            line = line.rstrip(b"\r\n")
            if line.strip():
                yield RawLine(number, line, start)
