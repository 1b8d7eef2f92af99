"""Reading a long Redis list a chunk at a time, so memory stays flat however long it is."""

from __future__ import annotations

from collections.abc import Iterator

import redis

CHUNK = 1000


def iter_chunks(client: redis.Redis, key: str,
                chunk: int = CHUNK) -> Iterator[tuple[int, list[str]]]:
    """(offset of the chunk's first item, its items) until the list ends."""
    start = 0
    while items := client.lrange(key, start, start + chunk - 1):
        yield start, [str(item) for item in items]
        start += len(items)
