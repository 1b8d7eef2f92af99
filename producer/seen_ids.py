"""The custom_ids already accepted from one file, at about 32 bytes each, exact.

A set of a million str objects costs about 100 MB; this keeps only a 64-bit hash and the
line's byte offset in two flat arrays (open addressing, at most half full). Two ids with one
hash are told apart exactly by reading the earlier line back from the file, which is rare
(a real duplicate, or a hash collision at odds of about n²/2⁶⁵).
"""

from __future__ import annotations

import json
from array import array
from collections.abc import Callable
from pathlib import Path

from producer.reader import UTF8_BOM

EMPTY = 0
INITIAL_SLOTS = 1 << 16


class SeenIds:
    """Remembers the custom_ids added so far; `add` says whether one was seen before."""

    def __init__(self, path: str | Path, hash_id: Callable[[str], int] = hash) -> None:
        self.path = path
        self._hash_id = hash_id
        self._hashes = array("q", bytes(8 * INITIAL_SLOTS))
        self._offsets = array("q", bytes(8 * INITIAL_SLOTS))
        self._mask = INITIAL_SLOTS - 1
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def add(self, custom_id: str, offset: int) -> bool:
        """Remember `custom_id` (of the line at byte `offset`); False if it was there already."""
        key = self._hash_id(custom_id) or 1  # 0 marks an empty slot
        hashes, mask = self._hashes, self._mask
        slot = key & mask
        while (found := hashes[slot]) != EMPTY:
            if found == key and self._id_at(self._offsets[slot]) == custom_id:
                return False
            slot = (slot + 1) & mask
        hashes[slot] = key
        self._offsets[slot] = offset
        self._count += 1
        if self._count * 2 > len(hashes):
            self._grow()
        return True

    def _id_at(self, offset: int) -> str:
        with open(self.path, "rb") as handle:  # rare: a duplicate, or a hash collision
            handle.seek(offset)
            line = handle.readline()
        if offset == 0 and line.startswith(UTF8_BOM):
            line = line[len(UTF8_BOM):]
        return str(json.loads(line)["custom_id"])

    def _grow(self) -> None:
        old_hashes, old_offsets = self._hashes, self._offsets
        size = len(old_hashes) * 2
        self._hashes = hashes = array("q", bytes(8 * size))
        self._offsets = offsets = array("q", bytes(8 * size))
        self._mask = mask = size - 1
        for key, offset in zip(old_hashes, old_offsets, strict=True):
            if key != EMPTY:
                slot = key & mask
                while hashes[slot] != EMPTY:
                    slot = (slot + 1) & mask
                hashes[slot] = key
                offsets[slot] = offset
