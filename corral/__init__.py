"""corral: run large offline LLM batches on a Celery fleet, inside rate limits, with exact costs.

`from corral import Client` is the Python API (producer/client.py). It loads on first use, so
the workers, which import corral's shared modules, never load the client side.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from producer.client import Batch, Client, InvalidLinesError, Result, Submission

__all__ = ["Batch", "Client", "InvalidLinesError", "Result", "Submission", "__version__"]
_API = frozenset(__all__) - {"__version__"}


def __getattr__(name: str) -> Any:
    if name in _API:
        from producer import client

        return getattr(client, name)
    raise AttributeError(f"module 'corral' has no attribute {name!r}")
