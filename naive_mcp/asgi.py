"""What the layers around the SDK's HTTP endpoints share: who sent a request, its body read once
per request and given again, the status an app answered with, a JSON-RPC error as an HTTP response."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.streamable_http import MCP_SESSION_ID_HEADER
from mcp.shared.inbound import MCP_PROTOCOL_VERSION_HEADER
from mcp_types import ErrorData, JSONRPCError
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from naive_mcp.caller import secret_digest

logger = logging.getLogger(__name__)

ANONYMOUS = "anonymous"  # the one caller of a server without auth; no token digest looks like it
SESSION_HEADER = MCP_SESSION_ID_HEADER.encode("ascii")  # lower case, as ASGI gives header names
_VERSION_HEADER = MCP_PROTOCOL_VERSION_HEADER.lower().encode("ascii")
_POSTED = "naive_mcp.posted"  # where a request's ASGI scope keeps its `Posted` for the layers below


def caller_digest(user: object) -> str:
    """Who sent a request: its verified bearer token's SHA-256 digest, or the anonymous caller."""
    if isinstance(user, AuthenticatedUser):
        return secret_digest(user.access_token.token)
    return ANONYMOUS


def request_caller(scope: Scope) -> str | None:
    """Who sent a request (`caller_digest`); None when auth is on and the request has no valid
    token, which the SDK answers with 401 (nothing is read or counted for it)."""
    user = scope.get("user")
    if "user" in scope and not isinstance(user, AuthenticatedUser):
        return None
    return caller_digest(user)


def handshake_era(scope: Scope) -> bool:
    """A 2025-era request, as the SDK routes them: no protocol-version header, or a handshake one."""
    for name, value in scope["headers"]:
        if name == _VERSION_HEADER:
            return bool(value.decode("latin-1") in HANDSHAKE_PROTOCOL_VERSIONS)
    return True


def authenticated_post(scope: Scope) -> bool:
    """An HTTP POST that the SDK will serve (not one it answers 401): what the layers that read
    a posted message look at; everything else they pass through untouched."""
    return scope["type"] == "http" and scope["method"] == "POST" and request_caller(scope) is not None


def sends_session_id(scope: Scope) -> bool:
    """Whether a request names a session (the `mcp-session-id` header)."""
    return any(name == SESSION_HEADER for name, _ in scope["headers"])


def jsonrpc_error(status: int, code: int, message: str, headers: Mapping[str, str] | None = None) -> Response:
    """An HTTP response carrying a JSON-RPC error for no request (`id: null`), as the SDK's own."""
    error = JSONRPCError(jsonrpc="2.0", id=None, error=ErrorData(code=code, message=message))
    return Response(
        error.model_dump_json(by_alias=True, exclude_unset=True),
        status_code=status,
        headers=headers,
        media_type="application/json",
    )


class Posted:
    """A POST's body as the layers around the SDK see it: read once, its JSON parsed at most once."""

    __slots__ = ("_message", "_parsed", "body")

    def __init__(self, body: bytes | None) -> None:
        self.body = body  # the whole body; None when it is over the size limit (the SDK answers 413)
        self._message: dict[str, Any] | None = None
        self._parsed = False

    @property
    def message(self) -> dict[str, Any] | None:
        """The body's JSON object; None for no body, not JSON, or a batch (the SDK refuses those)."""
        if not self._parsed:
            self._message = _json_object(self.body)
            self._parsed = True
        return self._message


async def read_posted(scope: Scope, receive: Receive, limit: int) -> tuple[Posted | None, Receive]:
    """A POST's body, and a `receive` that gives it again to whatever serves the request next.

    Read once per request: the first layer that asks reads it and keeps it in the request's
    scope; the layers below it (handed that layer's `receive`) get the same `Posted`. None: the
    client went away before its body was whole. Then there is no one to answer: serve nothing
    (the SDK would log a traceback for it)."""
    kept = scope.get(_POSTED)
    if isinstance(kept, Posted):
        return kept, receive
    for name, value in scope["headers"]:
        if name == b"content-length" and value.isdigit() and int(value) > limit:
            scope[_POSTED] = posted = Posted(None)
            return posted, receive  # the SDK answers 413, without reading it
    received: list[Message] = []
    size = 0
    body: bytes | None = None
    while True:
        message = await receive()
        if message["type"] != "http.request":
            logger.debug("a client went away before its request's body was whole: nothing served")
            return None, receive
        received.append(message)
        size += len(message.get("body", b""))
        if size > limit:
            break  # the SDK reads the rest, up to its own limit, and answers 413
        if not message.get("more_body", False):
            body = b"".join(m.get("body", b"") for m in received)
            received = [{"type": "http.request", "body": body, "more_body": False}]
            break

    async def replay() -> Message:
        if received:
            return received.pop(0)
        return await receive()

    scope[_POSTED] = posted = Posted(body)
    return posted, replay


def own_request_scope(scope: Scope, headers: list[tuple[bytes, bytes]]) -> Scope:
    """A copy of a request's scope for a request of our own with `headers` (and its own body)."""
    own = {key: value for key, value in scope.items() if key != _POSTED}
    own["headers"] = headers
    return own


def _json_object(body: bytes | None) -> dict[str, Any] | None:
    """The body's JSON object; None for no body, not JSON (nested too deep for Python's parser
    included: the SDK answers those), or a batch."""
    if body is None:
        return None
    try:
        message = json.loads(body)
    except (ValueError, RecursionError):
        return None
    return message if isinstance(message, dict) else None


async def served_status(app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> int | None:
    """Serve the request with `app`; the HTTP status it answered with."""
    status: int | None = None

    async def watch(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        await send(message)

    await app(scope, receive, watch)
    return status
