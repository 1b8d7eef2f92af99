"""Intake on every CPU: worker processes find exactly what one process finds, in order."""

from __future__ import annotations

import json
from pathlib import Path

from corral.config import load_config
from producer.parallel_intake import CheckedJob, checked_jobs
from producer.validator import RejectedLine


def request(custom_id: str, content: str = "hi", model: str = "auto") -> bytes:
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
                       "body": {"model": model, "messages": [
                           {"role": "user", "content": content}]}}).encode()


def test_worker_processes_check_a_file_as_one_process_does(write_config, tmp_path: Path,
                                                           monkeypatch) -> None:
    monkeypatch.setattr("producer.parallel_intake.SPAN_BYTES", 700)  # many spans
    lines = [b"\xef\xbb\xbf" + request("q-0")]
    for index in range(1, 60):
        lines.append(request(f"q-{index}", "x" * index, "big" if index % 3 else "small"))
        if index % 7 == 0:
            lines.append(b"")  # a blank line: counted, skipped
        if index % 11 == 0:
            lines.append(b'{"custom_id": "broken"')
        if index % 13 == 0:
            lines.append(request(f"q-{index - 12}"))  # a repeat, spans after its first
    path = tmp_path / "batch.jsonl"
    path.write_bytes(b"\r\n".join(lines) + b"\n")
    config = load_config(write_config())

    alone = list(checked_jobs(path, config, processes=1))
    shared = list(checked_jobs(path, config, processes=2))

    assert shared == alone
    refused = [line for line in alone if isinstance(line, RejectedLine)]
    assert [line.reason for line in refused if "duplicate" in line.reason] == [
        f"duplicate custom_id 'q-{index - 12}'" for index in (13, 26, 39, 52)]
    assert sum("malformed JSON" in line.reason for line in refused) == 5
    accepted = [line for line in alone if isinstance(line, CheckedJob)]
    assert [line.custom_id for line in accepted] == [f"q-{index}" for index in range(60)]
    assert accepted[0].number == 1 and accepted[-1].number == len(lines)
    assert json.loads(accepted[-1].job)["line"] == len(lines)
