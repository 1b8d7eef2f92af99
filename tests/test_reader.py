"""The JSONL reader numbers physical lines and accepts a BOM and CRLF."""

from __future__ import annotations

from pathlib import Path

from producer.reader import read_lines


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
