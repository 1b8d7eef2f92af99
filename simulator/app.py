"""Routing: the OpenAI and Anthropic endpoints and the /_sim control endpoints tests use."""

from __future__ import annotations

import json
from typing import Any

from . import errors
from .anthropic_batches import handle_message_batches
from .chat import handle_chat
from .files import handle_files
from .http_server import Request, Response, json_response
from .openai_batches import handle_batches
from .state import SimState

# Resource prefixes whose handlers route the rest of the path themselves.
_RESOURCES = (
    ("/v1/messages/batches", handle_message_batches),
    ("/v1/batches", handle_batches),
    ("/v1/files", handle_files),
)


class App:
    """The request handler given to HttpServer."""

    def __init__(self, state: SimState) -> None:
        self.state = state

    async def handle(self, request: Request) -> Response:
        """Route one request to its handler; unknown routes get an OpenAI-style 404."""
        route = (request.method, request.path.rstrip("/") or "/")
        if route == ("POST", "/v1/chat/completions"):
            return await handle_chat(self.state, request)
        if route == ("GET", "/v1/models"):
            return self._models(request)
        if route == ("GET", "/_sim/stats"):
            return json_response(200, self.state.stats.to_json())
        if route == ("GET", "/_sim/admissions"):
            return self._admissions(request)
        if route == ("GET", "/_sim/calls"):
            name = request.query.get("model", "")
            return json_response(200, {"model": name, "calls": self.state.stats.calls(name)})
        if route == ("POST", "/_sim/faults"):
            return self._faults(request)
        if route == ("POST", "/_sim/reset"):
            self.state.reset()
            return json_response(200, {"reset": True})
        for prefix, handler in _RESOURCES:
            if route[1] == prefix or route[1].startswith(prefix + "/"):
                tail = [part for part in route[1][len(prefix) :].split("/") if part]
                return handler(self.state, request, tail)
        return errors.route_not_found(request.method, request.path)

    def _models(self, request: Request) -> Response:
        if not self.state.authorized(request.headers):
            return errors.invalid_api_key()
        data = [
            {"id": name, "object": "model", "created": 0, "owned_by": "corral-sim"}
            for name in self.state.served_models()
        ]
        return json_response(200, {"object": "list", "data": data})

    def _admissions(self, request: Request) -> Response:
        name = request.query.get("model")
        if not name:
            return errors.invalid_request("Query parameter 'model' is required.", "model")
        spec = self.state.resolve_model(name)
        if spec is None:
            return errors.model_not_found(name)
        return json_response(
            200,
            {
                "model": name,
                "period_s": self.state.config.period_s,
                "rpm": spec.rpm,
                "tpm": spec.tpm,
                "admitted": self.state.stats.admissions(name),
            },
        )

    def _faults(self, request: Request) -> Response:
        try:
            changes: Any = json.loads(request.body or b"{}")
        except ValueError:
            return errors.invalid_request("We could not parse the JSON body of your request.")
        if not isinstance(changes, dict):
            return errors.invalid_request("The request body must be a JSON object.")
        storm = changes.pop("storm", None)
        batch_stall = changes.pop("batch_stall", None)
        try:
            settings = self.state.faults.updated(changes)
            if storm is not None:
                if not isinstance(storm, dict):
                    raise ValueError("storm must be an object")
                self.state.storms.start(storm, self.state.now_s())
            if batch_stall is not None:
                self.state.batch_stall.update(batch_stall)
        except ValueError as err:
            return errors.invalid_request(str(err))
        self.state.faults = settings
        body = {
            **vars(settings),
            "storms": self.state.storms.describe(self.state.now_s()),
            "batch_stall": self.state.batch_stall.describe(),
        }
        return json_response(200, body)
