"""`notifications/cancelled` for stateless streamable HTTP, on this replica or on another one.

In stateless mode the SDK serves every POST with a fresh transport and dispatcher, so a 2025-era
client's `notifications/cancelled`, which comes as a POST of its own, reaches a dispatcher that
knows no request: the SDK answers it 202 and drops it, and the call it names runs to the end.

Here the streamable-HTTP endpoint is wrapped (`StatelessCancels.install`). A 2025-era POST
carrying a request is served inside a cancel scope registered under its key: the caller (the
SHA-256 digest of its bearer token; one anonymous caller without auth) and the JSON-RPC id.
A POST carrying `notifications/cancelled` is served by the SDK as before, and once the SDK has
accepted it (202) the calls in flight here under its key are cancelled. Cancelling the POST
that carries a call is what a client going away does: the SDK terminates that POST's transport,
its dispatcher cancels the handler, and the upstream connection closes. The POST is then ended
as a stateful session would end it: with a `-32800 Request cancelled` error for the request,
unless its answer already went out.

Behind a load balancer the cancel may land on another replica than the call. A cancel naming
nothing in flight here is published to a `CancelRelay` that all replicas share; while calls
are in flight, one poller per process asks the relay about all their keys at once and cancels
those published after the call started. (Clients number their requests from 1 in each session,
and stateless callers open many sessions: without the time, a cancel that came too late for
its call would cancel every later call that reuses the id, for as long as it is kept.)

Who may cancel what: a cancel's key is the caller and the JSON-RPC id, nothing else, because a
stateless 2025-era client sends nothing else of its own with it (no session id; its cancel is a
POST of its own, on any connection, through any proxy, to any replica). So agents sharing one
bearer token, or all the clients of a server without auth, can cancel each other's calls that
carry the same id (and clients number from 1): give each agent its own token. Stateful sessions
(the SDK matches a cancel within its session) and the 2026-era protocol do not have this.

Everything is left to the SDK otherwise: batches (it rejects them, 400), the 2026-era protocol
(where a client cancels by closing the response stream, and the SDK ignores this notification
on purpose), bodies over the size limit, requests without a valid token (401).

A stateful session has the opposite gap (`DroppedCallCancels`): its dispatcher outlives the
POST that carried a request, so a client that drops its connection without a cancel (a crash,
a network cut, a killed process) leaves the call running to its total timeout, generating and
billing. Stateless POSTs do not have it (the SDK ends the POST's dispatcher with it), nor SSE
(the stream is the session) nor the 2026-era protocol (one exchange per POST). Here, once a
2025-era POST carrying a request ends with its client gone and no answer sent, the SDK is handed
the `notifications/cancelled` the client would have sent: a POST of our own into the session,
with the client's own headers and credentials, so that the SDK's checks of who may cancel what
apply unchanged. (No event store is configured, so a stream cut off cannot be resumed: a call
whose client left is lost to it either way.)
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Collection, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import anyio
import anyio.abc
from mcp.server.streamable_http import REQUEST_CANCELLED
from mcp.shared.dispatcher import as_request_id, coerce_request_id
from mcp_types import ErrorData, JSONRPCError, RequestId
from sse_starlette.event import ServerSentEvent
from starlette.applications import Starlette
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from naive_mcp.asgi import (
    authenticated_post,
    handshake_era,
    own_request_scope,
    read_posted,
    request_caller,
    sends_session_id,
    served_status,
)

logger = logging.getLogger(__name__)

DEFAULT_POLL_INTERVAL = 0.25


class CancelRelay(Protocol):
    """Where replicas leave cancels for one another.

    Keys are opaque (64 hex digits). Times are wall-clock seconds (`time.time()`) of the replica
    that stamped them. Keep each published key for about 10 minutes, and not without bound.
    """

    async def publish(self, key: str, at: float) -> None:
        """A cancel for `key` was accepted at `at` on this replica, and no call here had that key."""
        ...

    async def cancelled(self, keys: Collection[str]) -> Mapping[str, float]:
        """Which of `keys` were published (and not expired): each with its latest publication time."""
        ...


class MemoryCancelRelay:
    """A relay in memory: for one process, or for replicas simulated in one process.

    Keeps each key's latest publication for `ttl` seconds, and at most `limit` keys (the oldest
    go first). Safe to share between threads.
    """

    def __init__(
        self, *, ttl: float = 600.0, limit: int = 10_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._ttl = ttl
        self._limit = limit
        self._clock = clock
        self._lock = threading.Lock()
        # key -> (latest publication time, when it was stored by `clock`), oldest stored first
        self._published: dict[str, tuple[float, float]] = {}

    async def publish(self, key: str, at: float) -> None:
        with self._lock:
            now = self._clock()
            previous = self._published.pop(key, None)
            self._published[key] = (max(at, previous[0]) if previous else at, now)
            self._expire(now)

    async def cancelled(self, keys: Collection[str]) -> dict[str, float]:
        with self._lock:
            self._expire(self._clock())
            return {key: found[0] for key in keys if (found := self._published.get(key)) is not None}

    def __len__(self) -> int:
        with self._lock:
            return len(self._published)

    def _expire(self, now: float) -> None:
        cutoff = now - self._ttl
        while self._published:
            oldest, (_, stored) = next(iter(self._published.items()))
            if stored >= cutoff and len(self._published) <= self._limit:
                break
            del self._published[oldest]


def cancel_key(caller: str, request_id: RequestId) -> str:
    """The key of one caller's request id. The id is compared as the SDK does ("7" is 7)."""
    spelled = json.dumps(coerce_request_id(request_id))
    return hashlib.sha256(f"{caller}\n{spelled}".encode()).hexdigest()


@dataclass(eq=False)
class _Call:
    key: str
    started_at: float
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)


class StatelessCancels:
    """The calls in flight on this replica, by key, and the one poller that asks the relay.

    `poll_interval`: how often the relay is asked while calls are in flight (nothing polls
    otherwise). `clock_skew`: how far another replica's clock may be behind this one's; a
    published cancel stops the calls that started up to this long after it (a cancel must not
    stop a later call that reuses the id, so keep it small). `relay_timeout`: the longest a
    relay call may take.
    """

    def __init__(
        self,
        relay: CancelRelay | None = None,
        *,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        clock_skew: float = 0.0,
        relay_timeout: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.relay: CancelRelay = relay if relay is not None else MemoryCancelRelay()
        self._poll_interval = poll_interval
        self._clock_skew = clock_skew
        self._relay_timeout = relay_timeout
        self._clock = clock
        self._calls: dict[str, list[_Call]] = {}
        self._count = 0
        self._group: anyio.abc.TaskGroup | None = None
        self._polling = False
        self._emptied = anyio.Event()
        self._relay_failing = False

    @property
    def in_flight(self) -> int:
        return self._count

    @property
    def polling(self) -> bool:
        return self._polling

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Where the poller and the relay publications run: the app's lifespan."""
        if self._group is not None:
            raise RuntimeError("StatelessCancels is already running")
        async with anyio.create_task_group() as group:
            self._group = group
            try:
                yield
            finally:
                self._group = None
                group.cancel_scope.cancel()

    def install(self, app: Starlette, endpoint_path: str, *, max_body_bytes: int) -> None:
        """Wrap the SDK's streamable-HTTP endpoint (inside the auth middleware, outside the
        token check) and run this object for as long as the app's lifespan."""
        routes = [r for r in app.router.routes if isinstance(r, Route) and r.path == endpoint_path]
        if len(routes) != 1:
            raise RuntimeError(f"no single route at {endpoint_path} to make cancellable")
        routes[0].app = CancellableEndpoint(routes[0].app, self, max_body_bytes=max_body_bytes)
        inner = app.router.lifespan_context

        @asynccontextmanager
        async def lifespan(app: Starlette) -> AsyncIterator[Any]:
            async with self.running(), inner(app) as state:
                yield state

        app.router.lifespan_context = lifespan

    # --- calls in flight here -----------------------------------------------------------------

    def _register(self, call: _Call) -> None:
        if self._group is None:
            raise RuntimeError("StatelessCancels.running() is not entered (the app's lifespan)")
        self._calls.setdefault(call.key, []).append(call)
        self._count += 1
        if self._emptied.is_set():
            self._emptied = anyio.Event()
        if not self._polling:
            self._polling = True
            self._group.start_soon(self._poll)

    def _unregister(self, call: _Call) -> None:
        calls = self._calls[call.key]
        calls.remove(call)
        if not calls:
            del self._calls[call.key]
        self._count -= 1
        if not self._count:
            self._emptied.set()  # the poller stops now, not at its next turn

    async def _accept_cancel(self, key: str) -> None:
        """A cancel for `key` was accepted here: stop the calls here, else tell the other replicas."""
        calls = self._calls.get(key)
        if calls:
            for call in calls:
                call.scope.cancel()
            logger.info("notifications/cancelled: cancelled %d call(s) in flight", len(calls))
            return
        if self._group is not None:
            self._group.start_soon(self._publish, key, self._clock())

    async def _publish(self, key: str, at: float) -> None:
        try:
            with anyio.fail_after(self._relay_timeout):
                await self.relay.publish(key, at)
        except Exception:
            logger.warning("could not pass a cancel on to the other replicas", exc_info=True)
        else:
            logger.debug("notifications/cancelled for no call here: passed on to the other replicas")

    # --- the poller -----------------------------------------------------------------------------

    async def _poll(self) -> None:
        try:
            while self._calls:
                with anyio.move_on_after(self._poll_interval):
                    await self._emptied.wait()
                if self._calls:
                    await self._check_relay()
        finally:
            self._polling = False

    async def _check_relay(self) -> None:
        try:
            with anyio.fail_after(self._relay_timeout):
                published = await self.relay.cancelled(list(self._calls))
        except Exception:
            if not self._relay_failing:  # once, not every poll
                logger.warning("could not ask the relay for cancels from other replicas", exc_info=True)
            self._relay_failing = True
            return
        self._relay_failing = False
        stopped = 0
        for key, at in published.items():
            for call in self._calls.get(key, ()):
                if call.started_at <= at + self._clock_skew and not call.scope.cancel_called:
                    call.scope.cancel()
                    stopped += 1
        if stopped:
            logger.info("a cancel from another replica cancelled %d call(s) in flight", stopped)


class CancellableEndpoint:
    """ASGI wrapper of the stateless streamable-HTTP endpoint; see the module docstring."""

    def __init__(self, app: ASGIApp, cancels: StatelessCancels, *, max_body_bytes: int) -> None:
        self._app = app
        self._cancels = cancels
        self._max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or not handshake_era(scope):
            await self._app(scope, receive, send)
            return
        caller = request_caller(scope)
        if caller is None:
            await self._app(scope, receive, send)  # auth is on and this POST is not authenticated
            return
        posted, receive = await read_posted(scope, receive, self._max_body_bytes)
        if posted is None:
            return  # the client went away before its body was whole
        message = posted.message
        if message is None:
            await self._app(scope, receive, send)
            return
        method, request_id = message.get("method"), as_request_id(message.get("id"))
        if isinstance(method, str) and request_id is not None:
            await self._serve_call(cancel_key(caller, request_id), request_id, scope, receive, send)
        elif method == "notifications/cancelled" and "id" not in message:
            params = message.get("params")
            cancelled = as_request_id(params.get("requestId")) if isinstance(params, dict) else None
            status = await served_status(self._app, scope, receive, send)
            if status == 202 and cancelled is not None:  # the SDK accepted it as a notification
                await self._cancels._accept_cancel(cancel_key(caller, cancelled))
        else:
            await self._app(scope, receive, send)

    async def _serve_call(
        self, key: str, request_id: RequestId, scope: Scope, receive: Receive, send: Send
    ) -> None:
        call = _Call(key, started_at=self._cancels._clock())
        response = _Response(send)
        with call.scope:
            self._cancels._register(call)
            try:
                await self._app(scope, receive, response.send)
            finally:
                self._cancels._unregister(call)
        if call.scope.cancelled_caught:
            await response.end_cancelled(request_id)


class DroppedCallCancels:
    """ASGI wrapper of the stateful streamable-HTTP endpoint: a 2025-era POST carrying a request
    whose client left before its answer has that request cancelled in its session."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, delivery_timeout: float = 10.0) -> None:
        self._app = app
        self._max_body_bytes = max_body_bytes
        self._delivery_timeout = delivery_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not authenticated_post(scope) or not handshake_era(scope) or not sends_session_id(scope):
            await self._app(scope, receive, send)
            return
        posted, receive = await read_posted(scope, receive, self._max_body_bytes)
        if posted is None:
            return  # the client went away before its body was whole
        message = posted.message
        request_id = as_request_id(message.get("id")) if message is not None else None
        if message is None or not isinstance(message.get("method"), str) or request_id is None:
            await self._app(scope, receive, send)
            return
        client = _Client(receive)
        response = _Response(send)
        await self._app(scope, client.receive, response.send)
        if client.left and response.event_stream and not response.answered:
            await self._cancel_in_session(scope, request_id)

    async def _cancel_in_session(self, scope: Scope, request_id: RequestId) -> None:
        notification = {
            "jsonrpc": "2.0",
            "method": "notifications/cancelled",
            "params": {"requestId": request_id, "reason": "the client went away"},
        }
        body = json.dumps(notification).encode()
        headers = [(k, v) for k, v in scope["headers"] if k != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        pending: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive() -> Message:
            return pending.pop(0) if pending else {"type": "http.disconnect"}

        async def discard(message: Message) -> None:
            pass

        # Shielded: the server may be shutting down, and the call must stop all the same.
        with anyio.move_on_after(self._delivery_timeout, shield=True):
            status = await served_status(self._app, own_request_scope(scope, headers), receive, discard)
            if status == 202:
                logger.info("a client left before its call was answered: cancelled the call in its session")
            else:
                logger.debug("a client left before its call was answered; its session is gone (%s)", status)


@dataclass
class _Client:
    """Watches a request's client: whether it went away."""

    _receive: Receive
    left: bool = False

    async def receive(self) -> Message:
        message = await self._receive()
        if message["type"] == "http.disconnect":
            self.left = True
        return message


@dataclass
class _Response:
    """Watches a response go out, so that a cancelled one can be ended as the SDK ends it."""

    _send: Send
    started: bool = False
    event_stream: bool = False
    answered: bool = False  # a JSON-RPC response or error went out on the event stream
    finished: bool = False

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
            headers = dict(message.get("headers", []))
            self.event_stream = headers.get(b"content-type", b"").startswith(b"text/event-stream")
        elif message["type"] == "http.response.body":
            body = message.get("body", b"")
            if self.event_stream and not self.answered and _carries_answer(body):
                self.answered = True
            if not message.get("more_body", False):
                self.finished = True
        await self._send(message)

    async def end_cancelled(self, request_id: RequestId) -> None:
        """What a stateful session sends for a cancelled request: `-32800 Request cancelled`."""
        if self.finished:
            return
        error = JSONRPCError(
            jsonrpc="2.0", id=request_id, error=ErrorData(code=REQUEST_CANCELLED, message="Request cancelled")
        ).model_dump_json(by_alias=True, exclude_unset=True)
        try:
            if not self.started:
                await self._send(
                    {
                        "type": "http.response.start",
                        "status": 200,
                        "headers": [(b"content-type", b"application/json")],
                    }
                )
                await self._send({"type": "http.response.body", "body": error.encode()})
            elif self.event_stream and not self.answered:
                event = ServerSentEvent(data=error, event="message").encode()
                await self._send({"type": "http.response.body", "body": event, "more_body": False})
            else:
                await self._send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:
            logger.debug("the client left before its cancelled call's response was ended")
        self.finished = True


def _carries_answer(chunk: bytes) -> bool:
    """Whether an SSE chunk carries a JSON-RPC response or error (not a notification)."""
    if b'"result"' not in chunk and b'"error"' not in chunk:
        return False
    for line in chunk.splitlines():
        if line.startswith(b"data:"):
            try:
                message = json.loads(line[5:])
            except ValueError:
                continue
            if isinstance(message, dict) and "method" not in message and message.keys() & {"result", "error"}:
                return True
    return False
