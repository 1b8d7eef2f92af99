"""The JSONL reader numbers physical lines and accepts a BOM and CRLF."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

from producer.reader import read_lines, spans


def test_bom_crlf_and_blank_lines_keep_physical_numbering(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"a":1}\r\n\r\n   \n{"b":2}\r\n{"c":3}')
    lines = list(read_lines(path))
    assert [(line.number, line.data) for line in lines] == [
        (1, b'{"a":1}'), (4, b'{"b":2}'), (5, b'{"c":3}')]


def test_a_bom_after_the_first_line_is_not_stripped(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(b'{"a":1}\n\xef\xbb\xbf{"b":2}\n')
    assert list(read_lines(path))[1].data.startswith(b"\xef\xbb\xbf")


def test_spans_cut_at_line_ends_and_read_back_every_line_with_its_number(
        tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"a":1}\r\n\r\n{"bb":2}\n\n\n{"c":3}\n{"dddd":4}')
    whole = list(read_lines(path))
    for span_bytes in (1, 5, 9, 64):
        cut = list(spans(path, span_bytes))
        assert cut[0].start == 0 and cut[-1].end == path.stat().st_size
        assert all(left.end == right.start for left, right in pairwise(cut))
        assert [line for span in cut for line in read_lines(path, span)] == whole
