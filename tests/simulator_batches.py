"""For the simulator's batch tests: the key their simulators take, polling for a state,
holding one, and JSONL bodies."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

KEY = "sk-sim-batch"

StartSimulator = Callable[..., str]


def poll(probe: Callable[[], Any], timeout_s: float = 10.0) -> Any:
    """Call ``probe`` until it returns something truthy (returned); fail after ``timeout_s``."""
    pause = threading.Event()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = probe()
        if result:
            return result
        pause.wait(0.005)
    raise AssertionError(f"not reached within {timeout_s:g} s")


def hold(seconds: float, check: Callable[[], None]) -> None:
    """Run ``check`` over and over for ``seconds``: a state that must not change meanwhile."""
    pause = threading.Event()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        check()
        pause.wait(0.01)


def messages(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def jsonl(lines: list[Any]) -> bytes:
    return "".join(json.dumps(line) + "\n" for line in lines).encode()
