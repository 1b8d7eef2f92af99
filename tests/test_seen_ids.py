"""SeenIds: exact duplicate detection in flat arrays, including when hashes collide."""

from __future__ import annotations

from pathlib import Path

from producer.seen_ids import INITIAL_SLOTS, SeenIds


def write_ids(path: Path, ids: list[str]) -> list[int]:
    """One JSON line per id; returns each line's byte offset."""
    offsets, offset = [], 0
    with open(path, "wb") as handle:
        for custom_id in ids:
            data = f'{{"custom_id": "{custom_id}"}}\n'.encode()
            handle.write(data)
            offsets.append(offset)
            offset += len(data)
    return offsets


def test_repeats_are_found_across_growth(tmp_path: Path) -> None:
    ids = [f"req-{i}" for i in range(INITIAL_SLOTS)]  # enough to grow the table twice
    offsets = write_ids(tmp_path / "in.jsonl", ids)
    seen = SeenIds(tmp_path / "in.jsonl")
    assert all(seen.add(cid, off) for cid, off in zip(ids, offsets, strict=True))
    assert len(seen) == len(ids)
    assert not seen.add("req-123", 0) and not seen.add(ids[-1], 0)
    assert seen.add("req-new", 0)


def test_colliding_hashes_are_told_apart_by_reading_the_line_back(tmp_path: Path) -> None:
    ids = ["a", "b", "c"]
    offsets = write_ids(tmp_path / "in.jsonl", ids)
    seen = SeenIds(tmp_path / "in.jsonl", hash_id=lambda _: 42)  # every id collides
    assert [seen.add(cid, off) for cid, off in zip(ids, offsets, strict=True)] == [True] * 3
    assert not seen.add("b", 999)
    assert seen.add("d", 999)
