"""A small asyncio HTTP/1.1 server: keep-alive, Content-Length bodies, JSON replies."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import traceback
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

MAX_HEAD_BYTES = 64 * 1024
# Room for a 256 MB Anthropic batch or a 200 MB+ batch input file with multipart framing.
MAX_BODY_BYTES = 300 * 1024 * 1024
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_REASONS = {
    200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
    408: "Request Timeout", 411: "Length Required", 413: "Content Too Large",
    429: "Too Many Requests", 431: "Request Header Fields Too Large",
    500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable",
}  # fmt: skip


@dataclasses.dataclass
class Request:
    """One parsed request; header names are lower-cased."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes = b""


@dataclasses.dataclass
class Response:
    """A reply; ``hang`` means send nothing and hold the connection until the client leaves."""

    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    hang: bool = False
    content_type: str = "application/json"


Handler = Callable[[Request], Awaitable[Response]]


def json_response(
    status: int, payload: Any, headers: list[tuple[str, str]] | None = None
) -> Response:
    """A Response whose body is ``payload`` as compact JSON."""
    body = json.dumps(payload, separators=(",", ":")).encode()
    return Response(status, body, headers if headers is not None else [])


def _protocol_error(status: int, message: str) -> Response:
    error = {"message": message, "type": "invalid_request_error", "param": None, "code": None}
    return json_response(status, {"error": error})


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.response = _protocol_error(status, message)


def _parse_head(head: bytes) -> tuple[Request, bool, int]:
    """Parse a request head into (request without body, keep_alive, body length)."""
    lines = head.decode("latin-1").strip("\r\n").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or parts[2] not in ("HTTP/1.1", "HTTP/1.0"):
        raise _BadRequest(400, "Malformed request line.")
    method, target, version = parts
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise _BadRequest(400, "Malformed header line.")
        headers[name.lower()] = value.strip()
    connection = headers.get("connection", "").lower()
    keep_alive = "close" not in connection if version == "HTTP/1.1" else "keep-alive" in connection
    if "transfer-encoding" in headers:
        raise _BadRequest(411, "Chunked bodies are not supported; send Content-Length.")
    raw_length = headers.get("content-length")
    if raw_length is None:
        if method in _BODY_METHODS:
            raise _BadRequest(411, "A Content-Length header is required.")
        length = 0
    elif not raw_length.isdigit():
        raise _BadRequest(400, "Malformed Content-Length header.")
    else:
        length = int(raw_length)
    if length > MAX_BODY_BYTES:
        raise _BadRequest(413, "Request body too large.")
    path, _, query = target.partition("?")
    return Request(method, path, dict(parse_qsl(query)), headers), keep_alive, length


def _encode(response: Response, keep_alive: bool) -> bytes:
    lines = [
        f"HTTP/1.1 {response.status} {_REASONS.get(response.status, 'Unknown')}",
        f"content-type: {response.content_type}",
        f"content-length: {len(response.body)}",
        "connection: keep-alive" if keep_alive else "connection: close",
    ]
    lines.extend(f"{name}: {value}" for name, value in response.headers)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + response.body


class HttpServer:
    """Serves ``handler`` on one port; one request at a time per connection, in order."""

    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[Any]] = set()

    async def start(self, host: str, port: int) -> int:
        """Listen on ``host:port`` (port 0 picks a free one) and return the bound port."""
        self._server = await asyncio.start_server(
            self._serve_connection, host, port, limit=MAX_HEAD_BYTES
        )
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        """Stop listening and drop every open connection, hung ones included."""
        if self._server is not None:
            self._server.close()
        tasks = list(self._connections)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        try:
            await self._serve_requests(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away mid-request; nothing to answer
        finally:
            if task is not None:
                self._connections.discard(task)
            writer.close()

    async def _serve_requests(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                return  # clean EOF between requests
            except asyncio.LimitOverrunError:
                writer.write(_encode(_protocol_error(431, "Request head too large."), False))
                await writer.drain()
                return
            try:
                request, keep_alive, length = _parse_head(head)
            except _BadRequest as err:
                writer.write(_encode(err.response, False))
                await writer.drain()
                return
            if length:
                request.body = await reader.readexactly(length)
            response = await self._dispatch(request)
            if response.hang:
                # Read and drop until EOF so a client disconnect ends the task.
                while await reader.read(65536):
                    pass
                return
            writer.write(_encode(response, keep_alive))
            await writer.drain()
            if not keep_alive:
                return

    async def _dispatch(self, request: Request) -> Response:
        try:
            return await self._handler(request)
        except Exception:
            # A handler bug must not kill the connection silently; show it and answer 500.
            traceback.print_exc()
            return _protocol_error(500, "The simulator failed to handle the request.")
