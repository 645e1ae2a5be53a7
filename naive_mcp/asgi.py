"""What the layers around the SDK's HTTP endpoints share: who sent a request, its body read once
and given again, the status an app answered with, a JSON-RPC error as an HTTP response."""

from __future__ import annotations

import json
from typing import Any

from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.shared.inbound import MCP_PROTOCOL_VERSION_HEADER
from mcp_types import ErrorData, JSONRPCError
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from naive_mcp.caller import secret_digest

ANONYMOUS = "anonymous"  # the one caller of a server without auth; no token digest looks like it
_VERSION_HEADER = MCP_PROTOCOL_VERSION_HEADER.lower().encode("ascii")


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


def jsonrpc_error(status: int, code: int, message: str) -> Response:
    """An HTTP response carrying a JSON-RPC error for no request (`id: null`), as the SDK's own."""
    error = JSONRPCError(jsonrpc="2.0", id=None, error=ErrorData(code=code, message=message))
    return Response(
        error.model_dump_json(by_alias=True, exclude_unset=True),
        status_code=status,
        media_type="application/json",
    )


async def buffered(scope: Scope, receive: Receive, limit: int) -> tuple[bytes | None, Receive]:
    """The whole body (None when it is over `limit`), and a `receive` that gives it again."""
    for name, value in scope["headers"]:
        if name == b"content-length" and value.isdigit() and int(value) > limit:
            return None, receive  # the SDK answers 413
    received: list[Message] = []
    size = 0
    body: bytes | None = None
    while True:
        message = await receive()
        received.append(message)
        if message["type"] != "http.request":
            break  # the client went away
        size += len(message.get("body", b""))
        if size > limit:
            break
        if not message.get("more_body", False):
            body = b"".join(m.get("body", b"") for m in received)
            received = [{"type": "http.request", "body": body, "more_body": False}]
            break

    async def replay() -> Message:
        if received:
            return received.pop(0)
        return await receive()

    return body, replay


def json_object(body: bytes | None) -> dict[str, Any] | None:
    """The body's JSON object; None for no body, not JSON, or a batch (the SDK refuses those)."""
    if body is None:
        return None
    try:
        message = json.loads(body)
    except ValueError:
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
