"""One line's answer as the Python API hands it out: its record, read as typed fields."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from openai.types.chat import ChatCompletion


@dataclass(frozen=True)
class Result:
    """One line's terminal record (the OpenAI batch output shape, in `record`)."""

    record: dict[str, Any]

    @property
    def custom_id(self) -> str:
        """The line's custom_id."""
        return str(self.record["custom_id"])

    @property
    def ok(self) -> bool:
        """Whether the line has an answer (not an error)."""
        return not self.record.get("error")

    @property
    def error(self) -> dict[str, Any] | None:
        """`{"code", "message"}` of a failed line, else None."""
        error = self.record.get("error")
        return dict(error) if error else None

    @property
    def body(self) -> dict[str, Any] | None:
        """The provider's response body (also a 4xx's error body), as a dict."""
        response = self.record.get("response")
        return dict(response["body"]) if response and response.get("body") else None

    @property
    def completion(self) -> ChatCompletion:
        """The answer as the openai SDK's `ChatCompletion` (needs `pip install openai`).

        Raises:
            ValueError: the line failed (see `error`).
        """
        from openai.types.chat import ChatCompletion

        if not self.ok or self.body is None:
            raise ValueError(f"line {self.custom_id} has no answer: {self.error}")
        return ChatCompletion.model_validate(self.body)

    @property
    def text(self) -> str | None:
        """The first choice's message text (None for a failed line or no text)."""
        if not self.ok or self.body is None:
            return None
        choices = self.body.get("choices") or []
        content = choices[0].get("message", {}).get("content") if choices else None
        return content if isinstance(content, str) else None
