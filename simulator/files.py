"""OpenAI Files: an in-memory file store and the /v1/files endpoints batches read from."""

from __future__ import annotations

import dataclasses
import os
import time
from typing import TYPE_CHECKING, Any

from . import errors
from .http_server import Request, Response, json_response
from .multipart import MultipartError, parse_form

if TYPE_CHECKING:
    from .state import SimState

UPLOAD_PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")


@dataclasses.dataclass(frozen=True)
class StoredFile:
    """One file and its metadata; ``created_at`` is Unix seconds."""

    id: str
    filename: str
    purpose: str
    content: bytes
    created_at: int

    def to_json(self) -> dict[str, Any]:
        """The OpenAI ``file`` object."""
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.content),
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "expires_at": None,
            "status_details": None,
        }


class FileStore:
    """Files by id, held in memory for the server's life."""

    def __init__(self) -> None:
        self._files: dict[str, StoredFile] = {}

    def add(self, filename: str, purpose: str, content: bytes) -> StoredFile:
        """Store ``content`` under a new ``file-…`` id."""
        stored = StoredFile(
            f"file-{os.urandom(12).hex()}", filename, purpose, content, int(time.time())
        )
        self._files[stored.id] = stored
        return stored

    def get(self, file_id: str) -> StoredFile | None:
        """The file with ``file_id``, or None."""
        return self._files.get(file_id)

    def delete(self, file_id: str) -> bool:
        """Forget a file; False if there was none."""
        return self._files.pop(file_id, None) is not None

    def clear(self) -> None:
        """Forget every file."""
        self._files.clear()


def no_such_file(file_id: str) -> Response:
    """404 as OpenAI answers an unknown file id."""
    return errors.error_response(
        404, f"No such File object: {file_id}", "invalid_request_error", None, "id"
    )


def handle_files(state: SimState, request: Request, tail: list[str]) -> Response:
    """Answer /v1/files[/{id}[/content]]; ``tail`` is the path after /v1/files."""
    if not state.authorized(request.headers):
        return errors.invalid_api_key()
    if not tail and request.method == "POST":
        return _upload(state, request)
    if len(tail) in (1, 2):
        stored = state.files.get(tail[0])
        if stored is None:
            return no_such_file(tail[0])
        if len(tail) == 1 and request.method == "GET":
            return json_response(200, stored.to_json())
        if len(tail) == 1 and request.method == "DELETE":
            state.files.delete(stored.id)
            return json_response(200, {"id": stored.id, "object": "file", "deleted": True})
        if tail[1:] == ["content"] and request.method == "GET":
            return Response(200, stored.content, content_type="application/octet-stream")
    return errors.route_not_found(request.method, request.path)


def _upload(state: SimState, request: Request) -> Response:
    try:
        form = parse_form(request.headers.get("content-type", ""), request.body)
    except MultipartError as err:
        return errors.invalid_request(str(err))
    upload = form.get("file")
    purpose = form.get("purpose")
    if upload is None or upload.filename is None:
        return errors.invalid_request("Missing required parameter: 'file'.", "file")
    if purpose is None:
        return errors.invalid_request("Missing required parameter: 'purpose'.", "purpose")
    purpose_text = purpose.content.decode("utf-8", "replace").strip()
    if purpose_text not in UPLOAD_PURPOSES:
        return errors.invalid_request(
            f"Invalid value for 'purpose': {purpose_text!r}; expected one of {UPLOAD_PURPOSES}.",
            "purpose",
        )
    stored = state.files.add(upload.filename, purpose_text, upload.content)
    return json_response(200, stored.to_json())
