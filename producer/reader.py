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


@dataclass(frozen=True)
class Span:
    """Whole lines of a file: bytes [start, end), the first of them numbered `first_number`."""

    start: int
    end: int
    first_number: int


def read_lines(path: str | Path, span: Span | None = None) -> Iterator[RawLine]:
    """Yield the non-blank lines of `path` (or of one span of it), numbered as physical lines
    from 1.

    A UTF-8 BOM at the start and CRLF line ends are accepted; blank lines are skipped but counted.
    """
    offset = span.start if span else 0
    with open(path, "rb") as handle:
        handle.seek(offset)
        for number, line in enumerate(handle, start=span.first_number if span else 1):
            if span is not None and offset >= span.end:
                return
            start, offset = offset, offset + len(line)
            if start == 0 and line.startswith(UTF8_BOM):
                line = line[len(UTF8_BOM):]
            line = line.rstrip(b"\r\n")
            if line.strip():
                yield RawLine(number, line, start)


def spans(path: str | Path, span_bytes: int) -> Iterator[Span]:
    """Cut `path` into spans of about `span_bytes` each, at line ends (one read of the file,
    to number their lines)."""
    start, number = 0, 1
    with open(path, "rb") as handle:
        while True:
            data = handle.read(span_bytes)
            if not data:
                return
            rest = handle.readline()  # the end of the span's last line
            data += rest
            yield Span(start, start + len(data), number)
            start += len(data)
            number += data.count(b"\n")
