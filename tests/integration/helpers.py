"""Small builders for integration tests' input files."""

from __future__ import annotations

import json
from pathlib import Path


def write_jsonl(path: Path, lines: list[dict | str]) -> Path:
    """Write request lines (dicts as JSON, strings as they are)."""
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line,
                             ensure_ascii=False)) + "\n" for line in lines), encoding="utf-8")
    return path


def request(custom_id: str, model: str, text: str, **body: object) -> dict:
    """One batch input line."""
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": model, "messages": [{"role": "user", "content": text}], **body}}
