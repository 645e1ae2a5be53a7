"""A 2025-era request whose JSON-RPC id is neither a string nor an integer gets an error.

JSON-RPC 2.0 allows a request id to be a string or a number (MCP: a string or an integer). The
SDK's 2025-era transports (streamable HTTP, stateful or stateless, and the legacy SSE messages
endpoint) take a message with a `method` and any other `id` (an object, an array, null, a bool,
a float: NaN, 1e308, 1.0) for a notification: they answer 202 and the client waits forever for a
response that never comes. Here such a POST gets HTTP 400 and `-32600 Invalid Request` (`id:
null`, as JSON-RPC answers a request whose id cannot be read), and the SDK never sees it. The
2026-era protocol already refuses these (400, -32600); requests without a valid token are left
to the SDK (401), and so are bodies over the size limit (413) and whatever is not a JSON object.
A POST whose client went away before its body was whole is served nothing.

The legacy SSE messages endpoint (`only_messages=True`) also gets, here, the error for a body
that is no JSON-RPC message at all: HTTP 400 and `-32700 Parse error` (not JSON, or nested too
deep) or `-32600 Invalid Request` (JSON, but no JSON-RPC message). The SDK would log a traceback
for each and end the client's session (it hands the error to the session's reader, which stops).
"""

from __future__ import annotations

from typing import Any

from mcp.shared.dispatcher import as_request_id
from mcp_types import INVALID_REQUEST, PARSE_ERROR, jsonrpc_message_adapter
from pydantic import ValidationError
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from naive_mcp.asgi import Posted, authenticated_post, handshake_era, jsonrpc_error, read_posted


def has_malformed_id(message: dict[str, Any]) -> bool:
    """A request (it has a method) whose id is not a string or an integer."""
    return "method" in message and "id" in message and as_request_id(message["id"]) is None


class RequestIdCheck:
    """ASGI wrapper of an endpoint that takes JSON-RPC messages by POST; see the module docstring."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, only_messages: bool = False) -> None:
        self._app = app
        self._max_body_bytes = max_body_bytes
        self._only_messages = only_messages

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Legacy SSE has no eras.
        if not authenticated_post(scope) or not (self._only_messages or handshake_era(scope)):
            await self._app(scope, receive, send)
            return
        posted, receive = await read_posted(scope, receive, self._max_body_bytes)
        if posted is None:
            return  # the client went away before its body was whole
        refusal = _refusal(posted, only_messages=self._only_messages)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        await self._app(scope, receive, send)


def _refusal(posted: Posted, *, only_messages: bool) -> Response | None:
    message = posted.message
    if message is not None and has_malformed_id(message):
        return jsonrpc_error(
            400,
            INVALID_REQUEST,
            f"Invalid Request: a request's id must be a string or an integer, not {_kind(message['id'])}",
        )
    if not only_messages or posted.body is None:  # None: over the size limit, the SDK answers 413
        return None
    if message is None:
        return jsonrpc_error(400, PARSE_ERROR, "Parse error: the body is not a JSON object")
    try:
        jsonrpc_message_adapter.validate_python(message, by_name=False)
    except ValidationError:
        return jsonrpc_error(400, INVALID_REQUEST, "Invalid Request: the body is not a JSON-RPC message")
    return None


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, float):
        return "a number with a fraction or an exponent"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return "this"
