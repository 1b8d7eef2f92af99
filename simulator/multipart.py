"""A minimal multipart/form-data parser for file uploads: field name -> (filename, bytes)."""

from __future__ import annotations

import dataclasses
import re

_BOUNDARY = re.compile(r'boundary="?([^";]+)"?', re.IGNORECASE)
_DISPOSITION_PARAM = re.compile(r';\s*(name|filename)="((?:[^"\\]|\\.)*)"', re.IGNORECASE)


class MultipartError(ValueError):
    """The body is not multipart/form-data this parser can read."""


@dataclasses.dataclass(frozen=True)
class FormPart:
    """One form field; ``filename`` is None for a plain (non-file) field."""

    name: str
    filename: str | None
    content: bytes


def parse_form(content_type: str, body: bytes) -> dict[str, FormPart]:
    """Split a multipart/form-data ``body`` into its named parts.

    Args:
        content_type: The request's Content-Type header, which carries the boundary.
        body: The raw request body.

    Returns:
        Parts by field name; a repeated name keeps its last part.

    Raises:
        MultipartError: Without a boundary, or when a part has no name.
    """
    if not content_type.lower().startswith("multipart/form-data"):
        raise MultipartError("Content-Type must be multipart/form-data.")
    match = _BOUNDARY.search(content_type)
    if match is None:
        raise MultipartError("The multipart/form-data Content-Type has no boundary.")
    delimiter = b"--" + match.group(1).encode("latin-1")
    parts: dict[str, FormPart] = {}
    # Chunks between delimiters: a preamble, the parts, then the "--" epilogue.
    for chunk in body.split(delimiter)[1:]:
        if chunk.startswith(b"--"):
            break
        head, sep, content = chunk.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        if not sep:
            raise MultipartError("A multipart part has no header block.")
        part = _part(head.decode("latin-1"), content.removesuffix(b"\r\n"))
        parts[part.name] = part
    return parts


def _part(head: str, content: bytes) -> FormPart:
    params: dict[str, str] = {}
    for line in head.split("\r\n"):
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-disposition":
            params = {key.lower(): text for key, text in _DISPOSITION_PARAM.findall(value)}
    if "name" not in params:
        raise MultipartError("A multipart part has no Content-Disposition name.")
    return FormPart(params["name"], params.get("filename"), content)
