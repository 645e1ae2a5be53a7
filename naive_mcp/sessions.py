"""What one client can make the HTTP server hold: requests in flight, sessions and SSE streams.

- Requests in flight to the streamable-HTTP endpoint (POST, DELETE; its GET streams are counted
  as streams): at most `max_requests_per_client` per client at once (`remote.py` fits it, with
  auth on, to half of the connections, so that one client's calls cannot take every connection).
- Stateful streamable HTTP: at most `max_sessions` sessions open in all, `max_sessions_per_client`
  per client, and a session with no request in flight for `idle_timeout` seconds is ended. The
  total and the idle expiry are the SDK's own (its session manager's `max_sessions` and
  `session_idle_timeout`); the count per client is kept here. Only a 2025-era POST without a
  session id that may be an `initialize` opens a session; a 2026-era request has no session
  and is never counted as one.
- SSE streams: a legacy SSE session (its GET stream), and a streamable-HTTP GET stream (stateful
  or stateless), each holds a connection open for as long as the client keeps it: at most
  `max_sse_streams` in all, `max_sse_streams_per_client` per client.
- A client is its bearer token (the SHA-256 digest of it). Without auth every client is one, the
  operator's, and only the totals apply (`SessionLimits.from_settings`).
- Over a limit, a client gets HTTP 429 (its own limit) or 503 (the server's) with a JSON-RPC
  error that names the setting and what to do; nothing else is held for it.
- A POST whose client went away before its body was whole is served nothing (`read_posted`).

How sessions are counted per client: a session is its client's from the response that opened it
(a status under 400 with an `mcp-session-id` header, as the SDK decides it) for as long as the
SDK keeps it. The SDK ends sessions on its own (DELETE, idle expiry, a crash, shutdown) and tells
no one, so a client's sessions are checked against the session manager's table of open ones
(`StreamableHTTPSessionManager._server_instances`, a private attribute: `SdkSessions` checks it
is there when the app is built, and tests/test_sessions.py fails loudly if it changes). Opening
requests still in flight count too, so that a burst cannot overshoot the limit.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from naive_mcp.asgi import (
    SESSION_HEADER,
    Posted,
    handshake_era,
    jsonrpc_error,
    read_posted,
    request_caller,
    sends_session_id,
)

if TYPE_CHECKING:
    from naive_mcp.settings import Settings

logger = logging.getLogger(__name__)

# JSON-RPC's range for errors an implementation defines; the SDK's own 503 uses -32603.
LIMIT_REACHED = -32000
RETRY_AFTER_SECONDS = 1  # a client over its limit of requests in flight: when to try again
# Requests in flight of the one client of a server without auth: bounded by its connections.
_UNBOUNDED = 2**31


@dataclass(frozen=True, slots=True)
class SessionLimits:
    max_sessions: int
    max_sessions_per_client: int
    idle_timeout: float
    max_sse_streams: int
    max_sse_streams_per_client: int
    max_requests_per_client: int = 100

    @classmethod
    def from_settings(cls, settings: Settings) -> SessionLimits:
        """The limits the settings give. Without auth there is one client, the operator's, with
        no other to be fair to: the per-client limits give way to the totals (and requests in
        flight are bounded by the connections)."""
        with_auth = bool(settings.auth_tokens) or settings.client_keys
        return cls(
            max_sessions=settings.max_sessions,
            max_sessions_per_client=settings.max_sessions_per_client if with_auth else settings.max_sessions,
            idle_timeout=settings.session_idle_timeout,
            max_sse_streams=settings.max_sse_streams,
            max_sse_streams_per_client=settings.max_sse_streams_per_client
            if with_auth
            else settings.max_sse_streams,
            max_requests_per_client=settings.max_requests_per_client if with_auth else _UNBOUNDED,
        )


class SdkSessions:
    """The ids of the sessions the SDK's session manager has open (read, never changed)."""

    def __init__(self, manager: StreamableHTTPSessionManager) -> None:
        table = getattr(manager, "_server_instances", None)
        if not isinstance(table, dict):
            raise RuntimeError(
                "the mcp SDK's StreamableHTTPSessionManager no longer keeps its sessions in "
                "_server_instances: naive_mcp/sessions.py must learn the new way to count them"
            )
        self._table: dict[str, object] = table

    def open_ids(self) -> Collection[str]:
        return self._table.keys()


class _HeldCounts:
    """How many of one kind of thing (requests in flight, streams) are held, in all and per client."""

    def __init__(self, limits: SessionLimits) -> None:
        self._limits = limits
        self._by_client: Counter[str] = Counter()
        self._total = 0

    @property
    def total(self) -> int:
        return self._total

    def of(self, client: str) -> int:
        return self._by_client[client]

    @contextmanager
    def held(self, client: str) -> Iterator[None]:
        self._by_client[client] += 1
        self._total += 1
        try:
            yield
        finally:
            self._total -= 1
            self._by_client[client] -= 1
            if not self._by_client[client]:
                del self._by_client[client]


class RequestCounts(_HeldCounts):
    """The requests in flight to the streamable-HTTP endpoint (its GET streams aside)."""

    def refusal(self, client: str) -> Response | None:
        limit = self._limits.max_requests_per_client
        if self._by_client[client] < limit:
            return None
        return jsonrpc_error(
            429,
            LIMIT_REACHED,
            f"Too many requests in flight for this client: {limit}, the most one client (bearer token) "
            "may have at once (NAIVE_MAX_REQUESTS_PER_CLIENT, at most half of NAIVE_MAX_CONNECTIONS). "
            "Wait for some of your calls to end and retry, send fewer at once, or ask the operator to "
            "raise NAIVE_MAX_REQUESTS_PER_CLIENT (and NAIVE_MAX_CONNECTIONS).",
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )


class StreamCounts(_HeldCounts):
    """The SSE streams held open."""

    def refusal(self, client: str) -> Response | None:
        limits = self._limits
        if self._total >= limits.max_sse_streams:
            return jsonrpc_error(
                503,
                LIMIT_REACHED,
                f"The server holds as many SSE streams as it allows ({limits.max_sse_streams}, "
                "NAIVE_MAX_SSE_STREAMS). Try again later, or ask the operator to raise "
                "NAIVE_MAX_SSE_STREAMS.",
            )
        if self._by_client[client] >= limits.max_sse_streams_per_client:
            return jsonrpc_error(
                429,
                LIMIT_REACHED,
                f"Too many open SSE streams for this client: {limits.max_sse_streams_per_client}, the "
                "most one client (bearer token) may hold (NAIVE_MAX_SSE_STREAMS_PER_CLIENT). Close the "
                "streams you no longer read, or ask the operator to raise NAIVE_MAX_SSE_STREAMS_PER_CLIENT.",
            )
        return None


@dataclass(eq=False)
class _Opening:
    client: str
    session_id: str | None = None


class SessionCounts:
    """The stateful sessions open, per client, checked against the SDK's (see the docstring)."""

    def __init__(self, limits: SessionLimits, sdk: SdkSessions) -> None:
        self._limits = limits
        self._sdk = sdk
        self._by_client: dict[str, set[str]] = {}
        self._kept = 0  # session ids in _by_client, some perhaps ended since
        self._opening: Counter[str] = Counter()

    @property
    def kept(self) -> int:
        """Session ids kept, some perhaps ended since: at most about twice `max_sessions`."""
        return self._kept

    def of(self, client: str) -> int:
        """The client's sessions open, and being opened."""
        ids = self._by_client.get(client)
        if ids:
            self._forget_ended(client, ids)
        return len(self._by_client.get(client, ())) + self._opening[client]

    def refusal(self, client: str) -> Response | None:
        limits = self._limits
        if len(self._sdk.open_ids()) >= limits.max_sessions:  # the SDK's own limit, with the fix named
            return jsonrpc_error(
                503,
                LIMIT_REACHED,
                f"The server has as many open sessions as it allows ({limits.max_sessions}, "
                f"NAIVE_MAX_SESSIONS). Try again later (an idle session ends after "
                f"{limits.idle_timeout:g} s), or ask the operator to raise NAIVE_MAX_SESSIONS.",
            )
        if self.of(client) >= limits.max_sessions_per_client:
            return jsonrpc_error(
                429,
                LIMIT_REACHED,
                f"Too many open sessions for this client: {limits.max_sessions_per_client}, the most one "
                "client (bearer token) may hold (NAIVE_MAX_SESSIONS_PER_CLIENT). End the sessions you no "
                "longer use (an HTTP DELETE with their mcp-session-id header; an idle one ends by itself "
                f"after {limits.idle_timeout:g} s), or ask the operator to raise "
                "NAIVE_MAX_SESSIONS_PER_CLIENT.",
            )
        return None

    @contextmanager
    def opening(self, client: str) -> Iterator[_Opening]:
        """While a request that may open a session is served; `opened` once its response says so."""
        opening = _Opening(client)
        self._opening[client] += 1
        try:
            yield opening
        finally:
            if opening.session_id is None:
                self._stop_opening(client)

    def opened(self, opening: _Opening, session_id: str) -> None:
        self._stop_opening(opening.client)
        opening.session_id = session_id
        self._by_client.setdefault(opening.client, set()).add(session_id)
        self._kept += 1
        if self._kept > 2 * self._limits.max_sessions:  # clients that never came back: bounded memory
            for client, ids in list(self._by_client.items()):
                self._forget_ended(client, ids)

    def _stop_opening(self, client: str) -> None:
        self._opening[client] -= 1
        if not self._opening[client]:
            del self._opening[client]

    def _forget_ended(self, client: str, ids: set[str]) -> None:
        open_ids = self._sdk.open_ids()
        ended = [i for i in ids if i not in open_ids]
        ids.difference_update(ended)
        self._kept -= len(ended)
        if not ids:
            del self._by_client[client]


class StreamableHttpGate:
    """ASGI wrapper of the streamable-HTTP endpoint, outermost of the layers around the SDK's:
    GET streams and other requests in flight counted, a POST's body read (once, for every layer
    below: `read_posted`), and (stateful) the requests that may open sessions admitted or
    refused. `sessions` None: stateless."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        requests: RequestCounts,
        streams: StreamCounts,
        sessions: SessionCounts | None,
        max_body_bytes: int,
    ) -> None:
        self._app = app
        self._requests = requests
        self._streams = streams
        self._sessions = sessions
        self._max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = request_caller(scope) if scope["type"] == "http" else None
        if client is None:  # not HTTP, or not authenticated (the SDK answers 401)
            await self._app(scope, receive, send)
            return
        if scope["method"] == "GET":
            await _hold_stream(self._app, self._streams, client, scope, receive, send)
            return
        refusal = self._requests.refusal(client)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        with self._requests.held(client):
            if scope["method"] != "POST":
                await self._app(scope, receive, send)
                return
            posted, receive = await read_posted(scope, receive, self._max_body_bytes)
            if posted is None:
                return  # the client went away before its body was whole
            if self._sessions is not None and _may_open_session(scope, posted):
                await self._open_session(self._sessions, client, scope, receive, send)
            else:
                await self._app(scope, receive, send)

    async def _open_session(
        self, sessions: SessionCounts, client: str, scope: Scope, receive: Receive, send: Send
    ) -> None:
        refusal = sessions.refusal(client)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        with sessions.opening(client) as opening:

            async def watch(message: Message) -> None:
                if message["type"] == "http.response.start" and message["status"] < 400:
                    session_id = dict(message.get("headers", [])).get(SESSION_HEADER)
                    if session_id is not None:
                        sessions.opened(opening, session_id.decode("latin-1"))
                await send(message)

            await self._app(scope, receive, watch)


def _may_open_session(scope: Scope, posted: Posted) -> bool:
    """A 2025-era POST without a session id, unless it is plainly not an `initialize` (the SDK
    takes every such POST for an opening one; only an `initialize` can succeed). A 2026-era
    request has no session."""
    if not handshake_era(scope) or sends_session_id(scope):
        return False
    message = posted.message
    method = message.get("method") if message is not None else None
    return not isinstance(method, str) or method == "initialize"


class SseStreamGate:
    """ASGI wrapper of the legacy SSE endpoint (GET): its streams counted."""

    def __init__(self, app: ASGIApp, streams: StreamCounts) -> None:
        self._app = app
        self._streams = streams

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = request_caller(scope) if scope["type"] == "http" else None
        if client is None:
            await self._app(scope, receive, send)
            return
        await _hold_stream(self._app, self._streams, client, scope, receive, send)


async def _hold_stream(
    app: ASGIApp, streams: StreamCounts, client: str, scope: Scope, receive: Receive, send: Send
) -> None:
    refusal = streams.refusal(client)
    if refusal is not None:
        await refusal(scope, receive, send)
        return
    with streams.held(client):
        await app(scope, receive, send)
