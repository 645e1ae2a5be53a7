"""The HTTP server's connection-level limits: how many connections it holds, how long a client
may take to send a request, and how many file descriptors that needs.

uvicorn bounds the time an idle connection is kept alive between requests and the size of a
request's head (h11: 16 KiB), but not the time a client takes to send its headers or its body,
and its `limit_concurrency` counts a connection only once a whole request head has arrived. A
client that sends half a header and waits holds a socket for ever; enough of them exhaust the
process's file descriptors, after which asyncio's accept loop logs a traceback for every queued
connection (thousands a second) and nothing is served, `/health` included.

`LimitedH11Protocol` is uvicorn's h11 protocol (the one it uses when httptools is not
installed, as here) with these rules; every connection is under exactly one deadline until its
request is in:

- a new connection, or the first byte of a later request on a kept-alive one, starts the
  headers deadline (`headers_timeout`); the end of the headers starts the body deadline
  (`body_timeout`); the end of the body ends both. A request past its deadline gets 408 and
  the connection is closed. Once the body is in there is no deadline: an answer may stream (SSE)
  for as long as it takes.
- a request answered before its body is in (401 before reading it, 413 from the declared
  length, …) owes nothing more: the rest of its body is read and dropped (closing at once could
  reset the connection and lose the answer) until it ends, when the connection is kept alive,
  or until the body deadline; meanwhile it counts as without a request under way.
- between requests, uvicorn's keep-alive timer (`keepalive_timeout`) closes an idle connection.
- at most `max_connections` are open. A connection past it takes the place of the one that
  has waited longest without a request under way (idle, still sending its headers: a
  slowloris socket, or answered and still sending a body), which gets a 503 if it had started
  a request and had no answer; only when every connection
  is busy with a request is the newcomer itself refused with a 503 (`Connection: close`,
  `Retry-After`). Either way it is closed at once, without a traceback.
- when the server stops, a connection that has brought no request yet gets a moment
  (`FIRST_REQUEST_AT_SHUTDOWN`) for the one a balancer may already have sent on it, instead of
  the reset uvicorn would give it.

`ConnectionLimits.fitted` raises the soft RLIMIT_NOFILE to the hard limit and lowers the
maximum of connections (and the listen backlog, which is also how many connections asyncio
accepts in one go) until they fit the descriptors: a server out of descriptors cannot even
refuse.
"""

from __future__ import annotations

import asyncio
import http
import logging
import math
import os
import sys
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import h11
from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

from naive_mcp.errors import ConfigurationError

logger = logging.getLogger(__name__)

DEFAULT_MAX_CONNECTIONS = 1000
# uvicorn's default backlog, and the most connections asyncio's accept loop takes in one go.
_MAX_BACKLOG = 2048
_MIN_BACKLOG = 16
# Descriptors the process may open besides clients' and upstream connections (the store, log
# files, modules imported late), over those already open at start.
_SPARE_DESCRIPTORS = 32
# When the server stops, how long a connection that has brought no request yet is kept for the
# one it may have on the way (seconds): a balancer sends its request as soon as it has connected.
FIRST_REQUEST_AT_SHUTDOWN = 1.0

Deadline = Literal["headers", "body"]


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    max_connections: int
    headers_timeout: float
    body_timeout: float
    keepalive_timeout: int
    # The listen queue, and so the most connections accepted at once before any is refused.
    backlog: int = _MAX_BACKLOG

    @classmethod
    def fitted(
        cls,
        max_connections: int | None,
        *,
        headers_timeout: float,
        body_timeout: float,
        keepalive_timeout: int,
        upstream_connections: int,
    ) -> ConnectionLimits:
        """The limits this process can keep: `max_connections` (default 1000) lowered, with a
        warning, to what the file-descriptor limit allows once raised as far as it goes, beside
        an upstream pool of at most `upstream_connections`."""
        descriptors = raise_descriptor_limit()
        if descriptors is None:  # no RLIMIT_NOFILE (Windows): the system's own limits apply
            wanted = max_connections or DEFAULT_MAX_CONNECTIONS
            return cls(wanted, headers_timeout, body_timeout, keepalive_timeout)
        free = descriptors - _open_descriptors() - _SPARE_DESCRIPTORS
        backlog = max(_MIN_BACKLOG, min(_MAX_BACKLOG, free // 8))
        fitting = _connections_fitting(free - backlog, upstream_connections)
        if fitting < 1:
            raise ConfigurationError(
                f"the file-descriptor limit ({descriptors}) leaves no room for HTTP connections: raise it "
                "(ulimit -n, or LimitNOFILE= in a systemd unit); 4096 fits the default 1000 connections"
            )
        wanted = max_connections or DEFAULT_MAX_CONNECTIONS
        if wanted > fitting:
            logger.warning(
                "NAIVE_MAX_CONNECTIONS lowered from %d%s to %d: the process may open %d files "
                "(RLIMIT_NOFILE), and each connection may need a second one upstream. Raise the limit "
                "(ulimit -n, or LimitNOFILE= in a systemd unit) to allow more.",
                wanted,
                "" if max_connections else " (the default)",
                fitting,
                descriptors,
            )
        return cls(min(wanted, fitting), headers_timeout, body_timeout, keepalive_timeout, backlog)

    @property
    def max_streams(self) -> int:
        """The most long-lived streams (SSE) these connections leave room for: three quarters
        of them, so that streams cannot take the connections ordinary requests need."""
        return max(1, self.max_connections * 3 // 4)

    def protocol(self) -> type[LimitedH11Protocol]:
        """uvicorn's `http=` for one server under these limits (uvicorn applies `backlog` and
        `keepalive_timeout` itself, as `backlog=` and `timeout_keep_alive=`)."""
        return ConnectionBoard(self).protocol()

    def describe(self) -> str:
        return (
            f"at most {self.max_connections} connections (NAIVE_MAX_CONNECTIONS), "
            f"headers within {self.headers_timeout:g} s (NAIVE_HEADERS_TIMEOUT), "
            f"body within {self.body_timeout:g} s (NAIVE_BODY_TIMEOUT), "
            f"idle kept {self.keepalive_timeout} s (NAIVE_KEEPALIVE_TIMEOUT), backlog {self.backlog}"
        )


def _connections_fitting(room: int, upstream_connections: int) -> int:
    """How many client connections `room` descriptors hold, when each may be making a call that
    holds an upstream connection too (the upstream pool opens at most `upstream_connections`)."""
    if room >= 2 * upstream_connections:
        return room - upstream_connections
    return room // 2


def raise_descriptor_limit() -> int | None:
    """Raise the soft RLIMIT_NOFILE to the hard one (common practice for servers; the soft limit
    is often 1024 for compatibility with select(), which asyncio does not use here). The limit
    now in force, or None where there is none (Windows)."""
    if sys.platform == "win32":
        return None
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):  # e.g. macOS caps it below the hard limit
            pass
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def _open_descriptors() -> int:
    for listing in ("/proc/self/fd", "/dev/fd"):
        try:
            return len(os.listdir(listing))
        except OSError:
            continue
    return 64


class ConnectionBoard:
    """What the connections of one server share: the limits, and the connections with no request
    under way, longest waiting first (the ones to close to make room)."""

    def __init__(self, limits: ConnectionLimits) -> None:
        self.limits = limits
        self._waiting: dict[LimitedH11Protocol, None] = {}
        retry = str(max(1, math.ceil(min(limits.headers_timeout, limits.keepalive_timeout))))
        self.busy_response = _plain_response(
            503,
            f"naive-mcp is at its connection limit (NAIVE_MAX_CONNECTIONS={limits.max_connections}), "
            "every connection busy with a request: retry later. Operators: raise NAIVE_MAX_CONNECTIONS "
            "(and the file-descriptor limit), or add replicas.",
            retry_after=retry,
        )
        self.evicted_response = _plain_response(
            503,
            f"naive-mcp is at its connection limit (NAIVE_MAX_CONNECTIONS={limits.max_connections}) and "
            "closed this connection, which had not sent a whole request, to make room: send the "
            "request again, promptly.",
            retry_after="1",
        )
        self.timeout_responses: dict[Deadline, bytes] = {
            "headers": _plain_response(
                408,
                f"request headers not received within {limits.headers_timeout:g} s "
                "(NAIVE_HEADERS_TIMEOUT): send the whole request head at once.",
            ),
            "body": _plain_response(
                408,
                f"request body not received within {limits.body_timeout:g} s of its headers "
                "(NAIVE_BODY_TIMEOUT).",
            ),
        }

    def protocol(self) -> type[LimitedH11Protocol]:
        """The protocol class for uvicorn's `http=`: one per server, bound to this board."""
        this_board = self

        class BoundProtocol(LimitedH11Protocol):
            board = this_board

        return BoundProtocol

    def waiting(self, connection: LimitedH11Protocol) -> None:
        self._waiting.setdefault(connection, None)

    def busy(self, connection: LimitedH11Protocol) -> None:
        self._waiting.pop(connection, None)

    def longest_waiting(self) -> LimitedH11Protocol | None:
        for connection in self._waiting:
            del self._waiting[connection]
            return connection
        return None


class LimitedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol under `ConnectionLimits` (see the module's docstring)."""

    board: ClassVar[ConnectionBoard]

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._refused = False
        self._deadline: asyncio.TimerHandle | None = None
        self._deadline_for: Deadline | None = None
        # Kept alive after an answer, nothing of a next request received: closed without a word.
        self._between_requests = False
        # The server is stopping and this connection had brought no request: one more, then close.
        self._last_request = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if len(self.connections) >= self.board.limits.max_connections and not self._make_room():
            self._refused = True
            transport.write(self.board.busy_response)
            transport.close()
            logger.warning(
                "refusing new connections with 503: all %d allowed (NAIVE_MAX_CONNECTIONS) are busy",
                self.board.limits.max_connections,
            )
            return
        super().connection_made(transport)
        self._arm("headers")
        self._follow_request()

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._deadline is None and self.conn.their_state is h11.IDLE:
            self._arm("headers")  # a later request begins on a kept-alive connection
        self._between_requests = False
        super().data_received(data)
        if self._last_request and self.cycle is not None:
            self.cycle.keep_alive = False  # closed once it is answered
        self._follow_request()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # may start the next, pipelined, request
        if self.conn.their_state is h11.IDLE:
            self._between_requests = not self.conn.trailing_data[0]
        self._follow_request()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._refused:
            return  # never got further than connection_made
        self._disarm()
        self.board.busy(self)
        super().connection_lost(exc)

    def shutdown(self) -> None:
        """The server is stopping. uvicorn would close at once every connection without a request
        under way; one that has not yet brought its first request is kept a moment instead
        (`FIRST_REQUEST_AT_SHUTDOWN`): a balancer connects and sends at once, so its request may
        already be on the way, and closing now would reset it — and a POST that was sent is never
        passed to another replica, so its client would get a 502. That request is served, then
        the connection closed; a connection still without one by then is closed."""
        if self.cycle is not None:
            super().shutdown()  # now, or when its answer is complete
            return
        self._last_request = True
        self.loop.call_later(FIRST_REQUEST_AT_SHUTDOWN, self._close_if_no_request_came)

    def _close_if_no_request_came(self) -> None:
        if self.cycle is None and not self.transport.is_closing():
            self._disarm()
            super().shutdown()

    def _follow_request(self) -> None:
        """Keep the connection under the deadline of where its request is."""
        if self.transport.is_closing():
            self._disarm()
            self.board.busy(self)
            return
        state = self.conn.their_state
        if state is h11.IDLE:
            # No request under way: it may be closed to make room.
            self.board.waiting(self)
            if self._deadline_for == "body":  # a body that ended after an early answer
                self._disarm()
            if self._deadline is None and self.conn.trailing_data[0]:
                self._arm("headers")  # part of a pipelined request is already in
            if self._deadline is None and self.timeout_keep_alive_task is None:
                # uvicorn arms its keep-alive timer when an answer ends, but not when the body
                # of a request answered early ends after the answer.
                self.timeout_keep_alive_task = self.loop.call_later(
                    self.timeout_keep_alive, self.timeout_keep_alive_handler
                )
            return
        if state is h11.SEND_BODY:
            if self._deadline_for != "body":
                self._arm("body")
            if self._answered_early():
                # Nothing of this request is left to serve: its body is read and dropped (so
                # the answer reaches the client rather than a reset) until it ends or its
                # deadline passes, and meanwhile the connection may be closed to make room.
                self.board.waiting(self)
                return
        else:  # the request is in (DONE), or the connection is ending
            self._disarm()
        self.board.busy(self)

    def _answered_early(self) -> bool:
        """Answered before its request's body came (401, 413 from the declared length, …)."""
        return self.cycle is not None and self.cycle.response_complete

    def _arm(self, deadline: Deadline) -> None:
        self._disarm()
        limits = self.board.limits
        seconds = limits.headers_timeout if deadline == "headers" else limits.body_timeout
        self._deadline = self.loop.call_later(seconds, self._time_out, deadline)
        self._deadline_for = deadline

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline = None
        self._deadline_for = None

    def _time_out(self, deadline: Deadline) -> None:
        self._deadline = None
        self._deadline_for = None
        if self.transport.is_closing():
            return
        logger.debug("closing a connection: its request %s did not arrive in time", deadline)
        cycle = self.cycle if deadline == "body" else None
        if cycle is None or not cycle.response_started:
            self.transport.write(self.board.timeout_responses[deadline])
        if cycle is not None and not cycle.response_complete:
            # What uvicorn does when the client goes: the app's receive() says so at once and
            # whatever it sends is dropped (its request never came whole: nothing was called).
            cycle.disconnected = True
            cycle.message_event.set()
        self._close()

    def _make_room(self) -> bool:
        """Close the connection that has waited longest without a request under way, if any."""
        victim = self.board.longest_waiting()
        if victim is None:
            return False
        if victim.transport.is_closing():  # already leaving (kept alive too long, say)
            self.connections.discard(victim)
            return True
        logger.warning(
            "at NAIVE_MAX_CONNECTIONS (%d): closing the connection longest without a request to make room",
            self.board.limits.max_connections,
        )
        if not victim._between_requests and not victim._answered_early():
            victim.transport.write(self.board.evicted_response)
        victim._close()
        return True

    def _close(self) -> None:
        # No longer counted: the descriptor goes on the loop's next turn.
        self._disarm()
        self.board.busy(self)
        self.connections.discard(self)
        self.transport.close()


def _plain_response(status: int, text: str, *, retry_after: str | None = None) -> bytes:
    body = f"{text}\n".encode()
    head = [
        f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}",
        "content-type: text/plain; charset=utf-8",
        f"content-length: {len(body)}",
        "connection: close",
        *([f"retry-after: {retry_after}"] if retry_after else []),
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body
