"""naive-mcp over HTTP: streamable HTTP (stateful or stateless) or legacy SSE, secure by default.

- Binds to loopback unless told otherwise, and refuses any other address without
  authentication (`NAIVE_AUTH_TOKENS` and/or `NAIVE_CLIENT_KEYS`, see `access.py`).
- DNS-rebinding protection is always on: a Host or Origin that is not allowed is rejected.
- Request bodies are capped (`NAIVE_MAX_REQUEST_BYTES`); connections are counted and a
  request's headers and body must arrive in time (`connections.py`).
- One HTTP client, one model cache and one access control serve every connection.
- SIGINT/SIGTERM: stop accepting, give calls in flight `NAIVE_SHUTDOWN_GRACE` seconds, cancel
  the rest (which closes their upstream connections), close the upstream client.
- Stateless: a 2025-era client's `notifications/cancelled` stops its call, on whichever replica
  it runs (`cancels.py`; replicas share a `CancelRelay`). Stateful: a call whose client dropped
  its connection is cancelled in its session (`cancels.py`).
- Sessions, SSE streams and requests in flight are limited in all or per client, idle sessions
  expire (`sessions.py`); a request whose JSON-RPC id is malformed gets an error (`request_ids.py`).
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
from collections.abc import Awaitable, Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from typing import TypeVar

import anyio
import uvicorn
from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from sse_starlette.sse import AppStatus
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from naive_mcp.cancels import DEFAULT_POLL_INTERVAL, CancelRelay, DroppedCallCancels, StatelessCancels
from naive_mcp.client import UPSTREAM_MAX_CONNECTIONS, make_http_client
from naive_mcp.connections import ConnectionLimits
from naive_mcp.exposure import check_exposure, is_loopback, is_wildcard, url_host
from naive_mcp.guard import SpendGuard
from naive_mcp.keycheck import KeyCheckUnavailable, KeyRefused
from naive_mcp.request_ids import RequestIdCheck
from naive_mcp.server import create_server, freeze_startup_objects
from naive_mcp.services import CallsInFlight, Services
from naive_mcp.sessions import (
    RequestCounts,
    SdkSessions,
    SessionCounts,
    SessionLimits,
    SseStreamGate,
    StreamableHttpGate,
    StreamCounts,
)
from naive_mcp.settings import Settings

logger = logging.getLogger(__name__)

_RouteT = TypeVar("_RouteT", Route, Mount)
_LOOPBACK_HOSTS = ["127.0.0.1:*", "localhost:*", "[::1]:*"]
_LOOPBACK_ORIGINS = ["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"]


async def serve_http(
    settings: Settings,
    *,
    cancel_relay: CancelRelay | None = None,
    sockets: list[socket.socket] | None = None,
    serving: Callable[[uvicorn.Server], None] | None = None,
) -> None:
    """Serve until SIGINT/SIGTERM. `cancel_relay`: what replicas share to pass stateless cancels
    on to one another (default: the store, which every replica on it shares). A worker of
    `--workers` (`workers.py`) passes `sockets`, its share of the one listening socket, to serve
    on instead of binding its own, and `serving`, told of the uvicorn server once it is made."""
    check_exposure(settings)
    async with make_http_client(settings) as http:
        services = Services.create(settings, http, progress_needs_token=True)
        relay = cancel_relay or StoreCancelRelay(services.guard)
        limits = ConnectionLimits.fitted(
            settings.max_connections,
            headers_timeout=settings.headers_timeout,
            body_timeout=settings.body_timeout,
            keepalive_timeout=settings.keepalive_timeout,
            upstream_connections=UPSTREAM_MAX_CONNECTIONS,
        )
        session_limits = limits_within(settings, limits)
        app = build_app(
            create_server(settings, services=services),
            settings,
            cancel_relay=relay,
            session_limits=session_limits,
        )
        answer_unchecked_keys(app)  # a client key that cannot be checked now: 503, not a traceback
        freeze_startup_objects()
        config = uvicorn.Config(
            app,
            host=settings.host,
            port=settings.port,
            log_config=None,  # our handler: stderr, redacted
            timeout_graceful_shutdown=settings.shutdown_grace,
            server_header=False,
            http=limits.protocol(),
            backlog=limits.backlog,
            timeout_keep_alive=limits.keepalive_timeout,
        )
        logger.info(
            "naive-mcp serving %s on http://%s:%d%s%s; upstream %s",
            settings.transport,
            url_host(settings.host),
            settings.port,
            settings.endpoint_path,
            " (stateless)" if settings.stateless and settings.transport == "streamable-http" else "",
            settings.shown_base_url,
        )
        logger.info(
            "connection limits: %s; SSE streams at most %d, %d per client; requests in flight %d per client",
            limits.describe(),
            session_limits.max_sse_streams,
            session_limits.max_sse_streams_per_client,
            session_limits.max_requests_per_client,
        )
        async with services.running():
            server = _Server(config, services.calls, settings.shutdown_grace)
            if serving is not None:
                serving(server)
            await server.serve(sockets)
    logger.info("naive-mcp stopped")


def limits_within(settings: Settings, connections: ConnectionLimits) -> SessionLimits:
    """The session limits of `settings`, fitted to the connections the server holds: SSE streams
    (each holds a connection) at most `connections.max_streams`, in all and per client, and, with
    auth on, one client's requests in flight at most half of the connections, so that neither
    can take every connection. (Without auth all clients are one, with no others to leave
    connections for.) Lowering what the operator set is a warning; a default lowered is only
    said in the start line on connection limits."""
    sessions = SessionLimits.from_settings(settings)
    streams = connections.max_streams
    requests = max(1, connections.max_connections // 2)
    with_auth = bool(settings.auth_tokens) or settings.client_keys
    fitted = replace(
        sessions,
        max_sse_streams=min(sessions.max_sse_streams, streams),
        max_sse_streams_per_client=min(sessions.max_sse_streams_per_client, streams),
        max_requests_per_client=min(sessions.max_requests_per_client, requests)
        if with_auth
        else sessions.max_requests_per_client,
    )
    stream = "each SSE stream holds a connection, and a quarter of them are kept for other requests"
    why = {
        "max_sse_streams": stream,
        "max_sse_streams_per_client": stream,
        "max_requests_per_client": "one client's requests in flight may hold at most half of them",
    }
    for name, reason in why.items():
        before, after = getattr(sessions, name), getattr(fitted, name)
        if after < before and name in settings.model_fields_set:
            logger.warning(
                "NAIVE_%s lowered from %d to %d: the server holds %d connections (NAIVE_MAX_CONNECTIONS), "
                "and %s. Raise NAIVE_MAX_CONNECTIONS (and the file-descriptor limit) to allow more.",
                name.upper(),
                before,
                after,
                connections.max_connections,
                reason,
            )
    return fitted


class StoreCancelRelay:
    """The cancel relay between replicas: the store's table of cancels (`CancelRelay`)."""

    def __init__(self, guard: SpendGuard) -> None:
        self._guard = guard

    async def publish(self, key: str, at: float) -> None:
        await (await self._guard.store()).publish_cancel(key, at)

    async def cancelled(self, keys: Collection[str]) -> Mapping[str, float]:
        return await (await self._guard.store()).cancelled(keys)


class _Server(uvicorn.Server):
    """uvicorn with a shutdown that drains tool calls, not connections.

    A client keeps SSE streams open for as long as it is connected, so waiting for connections
    to close would wait out the whole grace whenever anyone is connected; sse-starlette's own
    drain would instead end every stream at once, calls in flight included. Here the tool calls
    under way get up to the grace to finish; then every SSE stream is ended, the connections
    close, and what is left is cancelled. The signal is not re-raised afterwards (uvicorn's
    default), so a completed shutdown exits with status 0.
    """

    def __init__(self, config: uvicorn.Config, calls: CallsInFlight, grace: float) -> None:
        super().__init__(config)
        self._calls = calls
        self._grace = grace
        AppStatus.disable_automatic_graceful_drain()  # type: ignore[no-untyped-call]

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        async with anyio.create_task_group() as group:
            group.start_soon(self._end_streams_when_calls_are_done)
            await super().shutdown(sockets)

    async def _end_streams_when_calls_are_done(self) -> None:
        if self._calls.count:
            logger.info("letting %d call(s) in flight finish (up to %s s)", self._calls.count, self._grace)
        with anyio.move_on_after(self._grace):
            while self._calls.count and not self.force_exit:  # a second Ctrl-C: stop waiting
                with anyio.move_on_after(0.1):
                    await self._calls.wait_idle()
        AppStatus.should_exit = True

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        original = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)


def build_app(
    server: MCPServer[Services],
    settings: Settings,
    *,
    cancel_relay: CancelRelay | None = None,
    cancel_poll_interval: float = DEFAULT_POLL_INTERVAL,
    session_limits: SessionLimits | None = None,
) -> Starlette:
    """The HTTP app. Stateless streamable HTTP: `notifications/cancelled` stops the call it names,
    here or, through `cancel_relay` (default: in memory, this process only), on another replica
    sharing it, which asks the relay every `cancel_poll_interval` seconds while calls run.
    Stateful: a call whose client left is cancelled in its session. Every transport: sessions,
    SSE streams and requests in flight are limited in all or per client (`sessions.py`), and a
    request whose id is not a string or an integer is refused (`request_ids.py`). Around the
    streamable-HTTP endpoint the layers go, outermost first: `StreamableHttpGate` (which reads
    a POST's body once for all of them), `RequestIdCheck`, the cancels, the SDK.
    `session_limits`: those limits (default: from `settings`; `serve_http` fits the SSE streams
    to the connections)."""
    register: Callable[[Callable[[Request], Awaitable[Response]]], object] = server.custom_route(
        "/health", methods=["GET"]
    )
    register(_health)
    security = transport_security(settings)
    limits = session_limits or SessionLimits.from_settings(settings)
    streams = StreamCounts(limits)
    max_body = settings.max_request_bytes
    if settings.transport == "sse":
        message_path = f"{settings.endpoint_path.rstrip('/')}/messages/"
        app = server.sse_app(
            sse_path=settings.endpoint_path,
            message_path=message_path,
            max_request_body_size=max_body,
            transport_security=security,
            host=settings.host,
        )
        stream_route = _route(app, settings.endpoint_path, Route)
        stream_route.app = SseStreamGate(stream_route.app, streams)
        messages = _route(app, message_path.rstrip("/"), Mount)
        messages.app = RequestIdCheck(messages.app, max_body_bytes=max_body, only_messages=True)
        return app
    app = server.streamable_http_app(
        streamable_http_path=settings.endpoint_path,
        stateless_http=settings.stateless,
        max_request_body_size=max_body,
        session_idle_timeout=limits.idle_timeout,
        max_sessions=limits.max_sessions,
        transport_security=security,
        host=settings.host,
    )
    endpoint = _route(app, settings.endpoint_path, Route)
    sessions: SessionCounts | None = None
    if settings.stateless:
        cancels = StatelessCancels(cancel_relay, poll_interval=cancel_poll_interval)
        cancels.install(app, settings.endpoint_path, max_body_bytes=max_body)
    else:
        endpoint.app = DroppedCallCancels(endpoint.app, max_body_bytes=max_body)
        sessions = SessionCounts(limits, SdkSessions(server.session_manager))
    endpoint.app = StreamableHttpGate(
        RequestIdCheck(endpoint.app, max_body_bytes=max_body),
        requests=RequestCounts(limits),
        streams=streams,
        sessions=sessions,
        max_body_bytes=max_body,
    )
    return app


def _route(app: Starlette, path: str, kind: type[_RouteT]) -> _RouteT:
    """The one route of `kind` at `path` (the SDK's endpoint there), to wrap."""
    found = [r for r in app.router.routes if isinstance(r, kind) and r.path == path]
    if len(found) != 1:
        raise RuntimeError(f"no single {kind.__name__} at {path} in the SDK's app")
    return found[0]


async def _health(request: Request) -> Response:
    """For load balancers and orchestrators: no auth, no upstream call."""
    return JSONResponse({"status": "ok"})


def transport_security(settings: Settings) -> TransportSecuritySettings:
    """DNS-rebinding protection, always on: loopback names, the bind address, and what the operator adds."""
    hosts = [*_LOOPBACK_HOSTS, *settings.allowed_hosts]
    if not is_loopback(settings.host) and not is_wildcard(settings.host):
        hosts.append(f"{url_host(settings.host)}:*")
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=hosts,
        allowed_origins=[*_LOOPBACK_ORIGINS, *settings.allowed_origins],
    )


def answer_unchecked_keys(app: Starlette) -> Starlette:
    """`app`, whose requests with a key that could not be checked get 503 (`AnswerUncheckedKeys`)."""
    app.add_middleware(AnswerUncheckedKeys)
    return app


class AnswerUncheckedKeys:
    """ASGI middleware around the SDK's authentication: a request whose key could not be checked
    gets 503 with Retry-After and the reason (as an OAuth error body, like the SDK's 401), not a
    traceback; one whose key was refused in client-keys mode gets the SDK's 401 with why. The SDK
    lets any exception of a token verifier but `AuthenticationError` (a 400) through; a test fails
    loudly if it stops doing so."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.app(scope, receive, send)
        except KeyCheckUnavailable as unavailable:
            response = JSONResponse(
                {"error": "temporarily_unavailable", "error_description": unavailable.message},
                status_code=503,
                headers={"Retry-After": str(unavailable.retry_after)},
            )
            await response(scope, receive, send)
        except KeyRefused as refused:
            ascii_reason = refused.message.replace("…", "...")
            # As the SDK's own 401 is made, with the reason in place of "Authentication required".
            response = JSONResponse(
                {"error": "invalid_token", "error_description": refused.message},
                status_code=401,
                # A header is Latin-1: the ellipsis spelt out.
                headers={
                    "WWW-Authenticate": f'Bearer error="invalid_token", error_description="{ascii_reason}"'
                },
            )
            await response(scope, receive, send)
