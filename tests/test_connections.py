"""The HTTP server's connection limits, attacked on loopback: sockets that send half a header
and wait (slowloris), a body sent a byte at a time, idle kept-alive connections, an attack past
the file-descriptor limit; and a long streamed answer that must not be cut."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import json
import logging
import os
import re
import resource
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import h11
import httpx2
import pytest
import uvicorn
from mcp.types import TextContent
from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import H11Protocol, RequestResponseCycle
from uvicorn.server import ServerState

from naive_mcp import connections
from naive_mcp.connections import ConnectionLimits, LimitedH11Protocol
from naive_mcp.logs import CLIENT_CAUSED, RepeatFilter
from naive_mcp.remote import limits_within
from naive_mcp.sandbox import RunningSandbox, SandboxConfig, serve_in_thread
from naive_mcp.sessions import SessionLimits
from naive_mcp.settings import Settings
from tests.conftest import NAIVE_MCP, TOOL_NAMES, upstream_env
from tests.remote import HttpServer, connect, http_server

pytestmark = pytest.mark.anyio
logger = logging.getLogger(__name__)

WAIT = 30  # seconds: the most any condition below is waited for
HEALTH = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
PARTIAL_HEADER = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "
MCP_HEADERS = {
    "Accept": "application/json, text/event-stream",
    "Content-Type": "application/json",
    "MCP-Protocol-Version": "2025-11-25",
}


class RawClient:
    """A hand-driven loopback connection: what it was sent back, and whether it was closed."""

    def __init__(self, port: int, first: bytes = b"") -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
        if first:
            self.sock.sendall(first)
        self.sock.setblocking(False)
        self.received = b""
        self.closed = False

    def send(self, data: bytes) -> None:
        self.sock.setblocking(True)
        try:
            self.sock.sendall(data)
        finally:
            self.sock.setblocking(False)

    def poll(self) -> None:
        while not self.closed:
            try:
                chunk = self.sock.recv(65536)
            except BlockingIOError:
                return
            except ConnectionResetError:
                self.closed = True
                return
            if not chunk:
                self.closed = True
                return
            self.received += chunk

    def ended(self) -> bool:
        """Closed by the server (what it sent before is in `received`)."""
        self.poll()
        return self.closed

    def answers(self) -> int:
        self.poll()
        return self.received.count(b"HTTP/1.1 ")

    @property
    def status(self) -> int | None:
        match = re.match(rb"HTTP/1\.1 (\d{3}) ", self.received)
        return int(match.group(1)) if match else None

    def close(self) -> None:
        self.sock.close()


OpenRaw = Callable[[HttpServer, bytes], RawClient]


@pytest.fixture
def raw_client() -> Iterator[OpenRaw]:
    """Open a `RawClient` to a server, sending `first`; all are closed when the test ends."""
    opened: list[RawClient] = []

    def open_raw(server: HttpServer, first: bytes) -> RawClient:
        opened.append(RawClient(int(server.base.rsplit(":", 1)[1]), first))
        return opened[-1]

    yield open_raw
    for client in opened:
        client.close()


async def wait_until(condition: Callable[[], bool], what: str) -> None:
    with anyio.fail_after(WAIT):
        while not condition():  # noqa: ASYNC110 - another process's sockets: nothing to wait on
            await anyio.sleep(0.02)
    assert condition(), what


def all_ended(clients: list[RawClient]) -> bool:
    return all([client.ended() for client in clients])  # a list: poll every one


def sockets_of(pid: int) -> int:
    """How many sockets the process holds (its listener, clients', upstream)."""
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(FileNotFoundError):  # closed meanwhile
            count += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
    return count


@contextmanager
def socket_peak(pid: int) -> Iterator[list[int]]:
    """Sample the process's socket count until the block ends; yields [peak] (filled in as it goes)."""
    peak = [sockets_of(pid)]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], sockets_of(pid))
            done.wait(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield peak
    finally:
        done.set()
        sampler.join()


def with_nofile(limit: int) -> Callable[[], None]:
    def set_limit() -> None:  # in the child, before it runs naive-mcp
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    return set_limit


def limits_logged(server: HttpServer) -> tuple[int, int]:
    """(max connections, backlog) as the server says at start."""
    match = re.search(r"at most (\d+) connections .* backlog (\d+)", server.logs())
    assert match, server.logs()
    return int(match.group(1)), int(match.group(2))


def timed_health(server: HttpServer) -> tuple[int, float]:
    started = time.monotonic()
    status = httpx2.get(f"{server.base}/health", timeout=WAIT).status_code
    return status, (time.monotonic() - started) * 1000


async def mcp_works(server: HttpServer) -> bool:
    async with connect(server) as client:
        return len((await client.list_tools()).tools) == len(TOOL_NAMES)


def tracebacks(server: HttpServer) -> int:
    return server.logs().count("Traceback")


def tools_call_body(prompt: str) -> bytes:
    params = {"name": "naive_llm_chat", "arguments": {"prompt": prompt}}
    return json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params}).encode()


def post_head(body: bytes, *more: bytes) -> bytes:
    """The head of a POST of `body` to /mcp, with the `more` header lines."""
    lines = [
        b"POST /mcp HTTP/1.1",
        b"Host: 127.0.0.1",
        *(f"{k}: {v}".encode() for k, v in MCP_HEADERS.items()),
        *more,
        f"Content-Length: {len(body)}".encode(),
    ]
    return b"\r\n".join([*lines, b"", b""])


# --- slowloris ------------------------------------------------------------------------------------

ATTACKERS = 300
LIMIT = 100


@pytest.mark.slow
async def test_slowloris_sockets_cannot_lock_clients_out(
    sandbox: RunningSandbox, api_key: str, tmp_path: Path, raw_client: OpenRaw
) -> None:
    """300 sockets send half a header and wait, against NAIVE_MAX_CONNECTIONS=100 under a 1024
    descriptor limit: each one past the limit takes the place of the one waiting longest (which
    gets a 503 at once), /health and MCP keep answering throughout, the last 100 are closed with
    a 408 at the headers timeout, and the server never holds more than its limit."""
    env = {
        **upstream_env(sandbox, api_key),
        "NAIVE_MAX_CONNECTIONS": str(LIMIT),
        "NAIVE_HEADERS_TIMEOUT": "5",
    }
    with http_server(tmp_path, env, preexec_fn=with_nofile(1024)) as server:
        limit, backlog = limits_logged(server)
        assert limit == LIMIT
        baseline = sockets_of(server.process.pid)
        before = [timed_health(server) for _ in range(5)]
        with socket_peak(server.process.pid) as peak:
            attackers = [raw_client(server, PARTIAL_HEADER) for _ in range(ATTACKERS)]

            def closed() -> list[RawClient]:
                all_ended(attackers)
                return [a for a in attackers if a.closed]

            await wait_until(lambda: len(closed()) == ATTACKERS - LIMIT, "the excess was not closed")
            evicted = closed()
            held = [a for a in attackers if not a.received and not a.closed]
            assert {a.status for a in evicted} == {503}
            assert b"NAIVE_MAX_CONNECTIONS=100" in evicted[0].received
            assert len(held) == LIMIT

            during = [timed_health(server) for _ in range(5)]
            mcp_during = await mcp_works(server)

            await wait_until(lambda: all_ended(held), "partial ones kept")
            attack_peak = peak[0]
        after = [timed_health(server) for _ in range(5)]
        mcp_after = await mcp_works(server)
        timed_out = [a for a in held if a.status == 408]
        figures = (
            f"{ATTACKERS} slowloris sockets, limit {LIMIT}: {len(evicted)} got 503 at once, {len(held)} held "
            f"until the headers timeout ({len(timed_out)} got 408, the rest made room for normal clients); "
            f"server sockets: {baseline} before, peak {attack_peak} (limit + {attack_peak - LIMIT}, backlog "
            f"{backlog}); /health at most {max(ms for _, ms in before):.1f} ms before, "
            f"{max(ms for _, ms in during):.1f} ms during the attack {[s for s, _ in during]}, "
            f"{max(ms for _, ms in after):.1f} ms after; MCP during {mcp_during}, after {mcp_after}"
        )
        logger.info(figures)  # pytest --log-cli-level=INFO shows them
        assert all(status == 200 for status, _ in during + after), figures
        assert mcp_during and mcp_after, figures
        assert {a.status for a in held} <= {408, 503} and len(timed_out) >= LIMIT - 10, figures
        assert b"NAIVE_HEADERS_TIMEOUT" in timed_out[0].received
        # Connections held never pass the limit (above: exactly LIMIT were left waiting). The
        # process's sockets peak higher only by connections accepted in a burst (at most `backlog`
        # at a time) before each one made room or was refused, far inside the descriptor limit.
        assert attack_peak <= LIMIT + 3 * backlog + baseline, figures
        assert tracebacks(server) == 0, server.logs()


@pytest.mark.slow
async def test_connections_all_busy_with_requests_turn_a_newcomer_away_with_503(
    sandbox: RunningSandbox, api_key: str, tmp_path: Path, raw_client: OpenRaw
) -> None:
    """When every connection is sending a request body, there is no one to make room: a new
    connection gets a 503 with Retry-After at once; once the bodies time out it is served."""
    env = {**upstream_env(sandbox, api_key), "NAIVE_MAX_CONNECTIONS": "10", "NAIVE_BODY_TIMEOUT": "3"}
    # Expect: 100-continue: the server's "100 Continue" says the app is reading the body.
    head = post_head(b"{" * 100, b"Expect: 100-continue")
    with http_server(tmp_path, env) as server:
        busy = [raw_client(server, head) for _ in range(10)]
        await wait_until(lambda: all([b.answers() == 1 for b in busy]), "no 100 Continue")
        assert {b.status for b in busy} == {100}
        for client in busy:
            client.send(b"{")
        newcomer = raw_client(server, HEALTH)
        await wait_until(newcomer.ended, "the newcomer was kept waiting")
        assert newcomer.status == 503, newcomer.received
        assert b"retry-after: " in newcomer.received and b"every connection busy" in newcomer.received
        assert not any(b.ended() for b in busy)  # nobody was pushed out mid-request
        await wait_until(lambda: all_ended(busy), "bodies never timed out")
        assert all(b.received.count(b"HTTP/1.1 408") == 1 for b in busy)
        assert timed_health(server)[0] == 200
        assert tracebacks(server) == 0, server.logs()


# --- answered before the body came -----------------------------------------------------------------

EARLY_LIMIT = 10
PROBES = 20
TOKEN = "an-operator-token-long-enough-to-pass-0123456789"


@pytest.mark.slow
async def test_requests_answered_before_their_body_came_cannot_lock_clients_out(
    sandbox: RunningSandbox, api_key: str, tmp_path: Path, raw_client: OpenRaw
) -> None:
    """Without a token: NAIVE_MAX_CONNECTIONS sockets each send a POST head declaring 1000 bytes
    and one byte of body; the server answers 401 at once, before the body. Each socket closed is
    reopened at once. Such a connection, answered and still owing its body, may be closed to
    make room: /health keeps answering (before: it had to wait for uvicorn's keep-alive timer to
    free a place, so 0 of 72 probes answered over 20 s). An honest client that sends the rest of
    its body keeps its connection; the body deadline still closes the ones that never do."""
    env = {
        **upstream_env(sandbox, api_key),
        "NAIVE_AUTH_TOKENS": json.dumps([TOKEN]),
        "NAIVE_MAX_CONNECTIONS": str(EARLY_LIMIT),
        "NAIVE_KEEPALIVE_TIMEOUT": "60",  # not the timer that frees a place here
        "NAIVE_BODY_TIMEOUT": "3",
    }
    half_body = post_head(b"{" * 1000) + b"{"
    with http_server(tmp_path, env) as server:

        def answered(client: RawClient) -> bool:
            return client.answers() == 1 or client.ended()

        attackers = [raw_client(server, half_body) for _ in range(EARLY_LIMIT)]
        reopened = 0
        statuses: list[int] = []
        for _ in range(PROBES):
            # Every place taken by a connection that was answered 401 and still owes its body.
            await wait_until(lambda: all([answered(a) for a in attackers]), "no early answer")
            for index, attacker in enumerate(attackers):
                if attacker.ended():
                    attackers[index] = raw_client(server, half_body)
                    reopened += 1
            await wait_until(lambda: all([answered(a) for a in attackers]), "no early answer")
            statuses.append(httpx2.get(f"{server.base}/health", timeout=WAIT).status_code)
        figures = (
            f"{EARLY_LIMIT} half-body POST sockets answered 401 at the limit {EARLY_LIMIT}, "
            f"{reopened} reopened: /health answered 200 to {statuses.count(200)} of {PROBES} probes "
            f"(statuses {sorted(set(statuses))})"
        )
        logger.info(figures)
        assert statuses == [200] * PROBES, figures
        assert {a.status for a in attackers} == {401}, figures

        # An honest client answered early that sends the rest of its body keeps its connection.
        honest = raw_client(server, half_body)
        await wait_until(lambda: answered(honest), "no early answer")
        assert honest.status == 401, honest.received
        honest.send(b"{" * 999 + HEALTH)
        await wait_until(lambda: honest.answers() == 2, "the connection was not kept")
        assert honest.received.count(b"HTTP/1.1 200") == 1 and not honest.ended()
        # The others never send their body: closed at the body deadline, with no second answer.
        others = [a for a in attackers if not a.ended()]
        assert others, "every attacker was closed to make room"
        await wait_until(lambda: all_ended(others), "a connection owing its body was kept")
        assert all(a.answers() == 1 for a in others), [a.received for a in others]
        assert tracebacks(server) == 0, server.logs()


# --- streams and connections ---------------------------------------------------------------------

STREAM_LIMIT = 8  # NAIVE_MAX_CONNECTIONS: streams may take 6 of them


def stream_head(server: HttpServer, token: str) -> bytes:
    """A streamable-HTTP GET stream (stateless: no session needed)."""
    host = server.base.removeprefix("http://")
    return (
        f"GET /mcp HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n"
        f"MCP-Protocol-Version: 2025-11-25\r\nAuthorization: Bearer {token}\r\n\r\n"
    ).encode()


@pytest.mark.slow
async def test_sse_streams_cannot_take_every_connection(
    sandbox: RunningSandbox, api_key: str, tmp_path: Path, raw_client: OpenRaw
) -> None:
    """Streams default to 1000 in all and 100 per client, more than the connections (here 8,
    as a low descriptor limit makes them): two clients opening 5 streams each took every
    connection, and /health got 503. They are now held to three quarters of the connections
    (6), and /health and MCP answer beside them."""
    tokens = [f"stream-client-{n}-token-long-enough-0123456789" for n in range(2)]
    env = {
        **upstream_env(sandbox, api_key),
        "NAIVE_AUTH_TOKENS": json.dumps(tokens),
        "NAIVE_MAX_CONNECTIONS": str(STREAM_LIMIT),
    }
    with http_server(tmp_path, env, "--stateless") as server:
        assert "SSE streams at most 6, 6 per client" in server.logs(), server.logs()
        streams: list[RawClient] = []
        for token in tokens:
            for _ in range(5):
                streams.append(stream := raw_client(server, stream_head(server, token)))
                await wait_until(lambda: stream.answers() == 1, "a stream got no answer")
        opened = [s for s in streams if s.status == 200]
        refused = [s for s in streams if s.status != 200]
        health = [timed_health(server)[0] for _ in range(5)]
        async with connect(server, tokens[0]) as client:
            tools = len((await client.list_tools()).tools)
        figures = (
            f"2 clients x 5 SSE streams at NAIVE_MAX_CONNECTIONS={STREAM_LIMIT}: {len(opened)} opened, "
            f"{len(refused)} refused {sorted({s.status for s in refused})}; /health {health}; MCP listed {tools} tools"
        )
        logger.info(figures)
        assert len(opened) == 6 and {s.status for s in refused} == {503}, figures
        assert b"NAIVE_MAX_SSE_STREAMS" in refused[0].received
        assert health == [200] * 5 and tools == len(TOOL_NAMES), figures


def test_streams_and_requests_set_past_the_connections_are_lowered_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    connections = ConnectionLimits(100, 1.0, 1.0, 5)
    settings = Settings(max_sse_streams=500, max_sse_streams_per_client=50, auth_tokens={"t": {}})
    with caplog.at_level(logging.INFO, logger="naive_mcp.remote"):
        sessions = limits_within(settings, connections)
    assert (sessions.max_sse_streams, sessions.max_sse_streams_per_client) == (75, 50)
    assert sessions.max_requests_per_client == 50, (
        "with auth, half of the connections (the default 100 lowered)"
    )
    assert [r.levelname for r in caplog.records] == ["WARNING"], "a default lowered is not warned of"
    assert "NAIVE_MAX_SSE_STREAMS lowered from 500 to 75" in caplog.text
    assert "NAIVE_MAX_CONNECTIONS" in caplog.text
    caplog.clear()
    fitting = Settings(max_sse_streams=75, max_sse_streams_per_client=10, max_requests_per_client=40)
    assert limits_within(fitting, connections) == SessionLimits.from_settings(fitting)
    assert not caplog.records
    anonymous = limits_within(Settings(max_sessions=300, max_requests_per_client=10), connections)
    assert anonymous.max_sessions_per_client == 300, "without auth, one client: the totals apply"
    assert anonymous.max_requests_per_client > connections.max_connections, "bounded by the connections"


# --- a slow body, idle connections -----------------------------------------------------------------


@pytest.mark.slow
async def test_a_body_sent_a_byte_at_a_time_is_cut_at_the_body_timeout_and_calls_nothing(
    sandbox: RunningSandbox, api_key: str, tmp_path: Path, raw_client: OpenRaw
) -> None:
    env = {**upstream_env(sandbox, api_key), "NAIVE_BODY_TIMEOUT": "1"}
    body = tools_call_body("dripped")
    with http_server(tmp_path, env, "--stateless") as server:
        dripper = raw_client(server, post_head(body))
        sent = 0
        with anyio.fail_after(WAIT):
            while sent < len(body) and not dripper.ended():
                try:
                    dripper.send(body[sent : sent + 1])
                except (BrokenPipeError, ConnectionResetError):
                    break
                sent += 1
                await anyio.sleep(0.1)  # the drip: 10 bytes a second
        await wait_until(dripper.ended, "the dripped body was never cut")
        figures = f"cut after {sent} of {len(body)} bytes"
        assert sent < len(body) and dripper.status == 408, figures
        assert b"NAIVE_BODY_TIMEOUT" in dripper.received
        assert sandbox.sandbox.ledger.requests(api_key) == [], "a call went upstream"
        # The same request, sent whole, is a call: the cut is what kept it from the upstream.
        whole = httpx2.post(server.url, content=body, headers=MCP_HEADERS, timeout=WAIT)
        assert whole.status_code == 200 and "Sandbox reply" in whole.text
        assert len(sandbox.sandbox.ledger.requests(api_key)) >= 1
        assert tracebacks(server) == 0, server.logs()


@pytest.mark.slow
async def test_idle_kept_alive_connections_are_closed_and_a_dripped_next_request_times_out(
    sandbox: RunningSandbox, api_key: str, tmp_path: Path, raw_client: OpenRaw
) -> None:
    env = {**upstream_env(sandbox, api_key), "NAIVE_KEEPALIVE_TIMEOUT": "1", "NAIVE_HEADERS_TIMEOUT": "2"}
    with http_server(tmp_path, env) as server:
        idle = raw_client(server, HEALTH)
        await wait_until(lambda: idle.answers() == 1, "no answer")
        idle.send(HEALTH)  # kept alive: a second request on the same connection
        await wait_until(lambda: idle.answers() == 2, "not kept")
        answers = idle.received
        await wait_until(idle.ended, "an idle connection was kept")
        assert idle.received == answers  # closed without a word

        # Every byte of a next request restarts uvicorn's keep-alive timer; the headers deadline
        # runs from the first one.
        dripper = raw_client(server, HEALTH)
        await wait_until(lambda: dripper.answers() == 1, "no answer")
        dripped = 0
        with anyio.fail_after(WAIT):
            for byte in PARTIAL_HEADER * 4:
                if dripper.ended():
                    break
                dripper.send(bytes([byte]))
                dripped += 1
                await anyio.sleep(0.25)
        await wait_until(dripper.ended, "a dripped request head was kept")
        assert dripped < len(PARTIAL_HEADER) * 4
        assert dripper.received.count(b"HTTP/1.1 408") == 1 and b"NAIVE_HEADERS_TIMEOUT" in dripper.received


# --- past the file-descriptor limit ----------------------------------------------------------------


@pytest.mark.slow
async def test_an_attack_past_the_descriptor_limit_leaves_health_answering_and_stderr_short(
    sandbox: RunningSandbox, api_key: str, tmp_path: Path, raw_client: OpenRaw
) -> None:
    """Under RLIMIT_NOFILE=256, 400 half-header sockets: the default limit is lowered to fit (and
    says so), /health answers during and after, and stderr stays a few lines (before: a traceback
    per queued connection, thousands a second, then the server died of EMFILE)."""
    attackers_count = 400
    env = {**upstream_env(sandbox, api_key), "NAIVE_HEADERS_TIMEOUT": "3"}
    with http_server(tmp_path, env, preexec_fn=with_nofile(256)) as server:
        limit, _ = limits_logged(server)
        assert "NAIVE_MAX_CONNECTIONS lowered from 1000 (the default)" in server.logs()
        with socket_peak(server.process.pid) as peak:
            attackers = [raw_client(server, PARTIAL_HEADER) for _ in range(attackers_count)]
            during = timed_health(server)
            await wait_until(lambda: all_ended(attackers), "attack sockets kept")
        after = timed_health(server)
        lines = server.logs().splitlines()
        figures = (
            f"{attackers_count} sockets under 256 descriptors: limit lowered to {limit}, server sockets "
            f"peak {peak[0]}; /health during {during[0]} in {during[1]:.1f} ms, after {after[0]} in "
            f"{after[1]:.1f} ms; stderr {len(lines)} lines"
        )
        logger.info(figures)
        assert during[0] == after[0] == 200, figures
        assert await mcp_works(server)
        assert tracebacks(server) == 0 and "out of system resource" not in server.logs(), server.logs()
        assert len(lines) < 60, figures + "\n" + server.logs()


# --- what the limits must not cut -----------------------------------------------------------------


@pytest.fixture(scope="module")
def paced() -> Iterator[RunningSandbox]:
    """`sandbox/slow` answers in about 2.5 s (50 chunks, 50 ms apart)."""
    with serve_in_thread(SandboxConfig(slow_chunk_delay=0.05, slow_words=150)) as running:
        yield running


@pytest.mark.slow
async def test_a_streamed_answer_longer_than_every_timeout_is_not_cut(
    paced: RunningSandbox, api_key: str, tmp_path: Path
) -> None:
    env = {
        **upstream_env(paced, api_key),
        "NAIVE_HEADERS_TIMEOUT": "0.5",
        "NAIVE_BODY_TIMEOUT": "0.5",
        "NAIVE_KEEPALIVE_TIMEOUT": "1",
    }
    with http_server(tmp_path, env) as server:
        async with connect(server) as client:
            started = time.monotonic()
            result = await client.call_tool("naive_llm_chat", {"prompt": "long", "model": "sandbox/slow"})
            took = time.monotonic() - started
        assert not result.is_error, result
        block = result.content[0]
        assert isinstance(block, TextContent) and block.text.startswith("Sandbox reply from sandbox/slow")
        assert took > 1, "the answer came quicker than the timeouts it is meant to outlast"
        assert tracebacks(server) == 0, server.logs()


# --- settings, and the uvicorn internals the limits rely on ---------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("NAIVE_HEADERS_TIMEOUT", "0"),
        ("NAIVE_BODY_TIMEOUT", "-1"),
        ("NAIVE_KEEPALIVE_TIMEOUT", "0"),
        ("NAIVE_MAX_CONNECTIONS", "0"),
    ],
)
def test_bad_limits_are_refused_at_start(variable: str, value: str) -> None:
    run = subprocess.run(
        [str(NAIVE_MCP), "--transport", "streamable-http"],
        env={"PATH": os.environ["PATH"], "NAIVE_STORE": "memory", variable: value},
        capture_output=True,
        text=True,
        timeout=WAIT,
    )
    assert run.returncode == 2 and f"bad setting: {variable}: " in run.stderr, run.stderr


@pytest.mark.slow
def test_a_descriptor_limit_too_low_for_any_connection_is_refused() -> None:
    script = (
        "import resource; resource.setrlimit(resource.RLIMIT_NOFILE, (40, 40));"
        "from naive_mcp.connections import ConnectionLimits;"
        "ConnectionLimits.fitted(None, headers_timeout=1, body_timeout=1, keepalive_timeout=1, upstream_connections=200)"
    )
    run = subprocess.run([str(NAIVE_MCP.with_name("python")), "-c", script], capture_output=True, text=True)
    assert run.returncode != 0 and "leaves no room for HTTP connections" in run.stderr, run.stderr


async def test_the_uvicorn_internals_the_limits_rely_on_are_still_there() -> None:
    """LimitedH11Protocol extends uvicorn's H11Protocol and reads and sets its per-connection
    state. If this fails, uvicorn changed: check connections.py against its h11_impl.py."""
    assert list(inspect.signature(H11Protocol.__init__).parameters) == [
        "self",
        "config",
        "server_state",
        "app_state",
        "_loop",
    ]
    for method in ("connection_made", "data_received", "on_response_complete", "connection_lost", "shutdown"):
        assert callable(getattr(H11Protocol, method)), method
    assert callable(H11Protocol.timeout_keep_alive_handler)
    bound = ConnectionLimits(10, 1.0, 1.0, 3).protocol()
    config = Config(app=_app, http=bound, timeout_keep_alive=3, lifespan="off")
    config.load()
    assert config.http_protocol_class is bound  # `http=` takes a protocol class as it is
    protocol = bound(config, ServerState(), {})
    assert isinstance(protocol, LimitedH11Protocol)
    assert isinstance(protocol.conn, h11.Connection) and protocol.conn.their_state is h11.IDLE
    assert protocol.connections is protocol.server_state.connections
    assert protocol.timeout_keep_alive == 3 and protocol.timeout_keep_alive_task is None
    assert protocol.cycle is None
    cycle_state = inspect.getsource(RequestResponseCycle.__init__)
    for attribute in (
        "self.disconnected",
        "self.response_started",
        "self.response_complete",
        "self.message_event",
    ):
        assert attribute in cycle_state, attribute


async def _app(scope: Any, receive: Any, send: Any) -> None:
    raise AssertionError("never called")


def test_lines_a_client_can_cause_at_will_are_rate_limited() -> None:
    """asyncio's accept loop out of descriptors reports every queued connection (thousands a
    second): one line of a kind passes per window, the next says how many were left out."""
    now = [0.0]
    repeats = RepeatFilter(window=10, clock=lambda: now[0])
    asyncio_logger = logging.getLogger("asyncio")
    asyncio_logger.addFilter(repeats)
    loop = asyncio.new_event_loop()
    records: list[logging.LogRecord] = []
    catcher = logging.Handler()
    catcher.emit = records.append  # type: ignore[method-assign]
    asyncio_logger.addHandler(catcher)
    try:
        error = OSError(24, "Too many open files")
        for _ in range(2048):
            loop.call_exception_handler(
                {"message": "socket.accept() out of system resource", "exception": error}
            )
        other = logging.LogRecord("asyncio", logging.ERROR, __file__, 1, "something else", None, None)
        assert repeats.filter(other)
        now[0] = 11
        loop.call_exception_handler({"message": "socket.accept() out of system resource", "exception": error})
    finally:
        asyncio_logger.removeHandler(catcher)
        asyncio_logger.removeFilter(repeats)
        loop.close()
    assert len(records) == 2, [r.getMessage() for r in records]
    assert "[2047 more like this in 11 s left out]" in records[1].getMessage()


def test_a_message_that_differs_each_time_is_one_kind_past_a_few() -> None:
    """The SDK formats client input into some lines (f"Invalid Host header: {host}"): past 10
    different messages from one place in a window, the rest are one kind."""
    now = [0.0]
    repeats = RepeatFilter(window=10, clock=lambda: now[0])

    def record(message: str, line: int = 69) -> logging.LogRecord:
        return logging.LogRecord(
            "mcp.server.transport_security", logging.WARNING, "ts.py", line, message, None, None
        )

    passed = [r for r in (record(f"Invalid Host header: evil-{n}") for n in range(500)) if repeats.filter(r)]
    assert len(passed) == 11, [r.getMessage() for r in passed]
    assert repeats.filter(record("from another place", line=53))
    now[0] = 11  # a new window: 10 different ones again, then the rest as one kind
    again = [r for r in (record(f"Invalid Host header: again-{n}") for n in range(20)) if repeats.filter(r)]
    assert len(again) == 11
    assert "[489 more from the same place in 11 s left out]" in again[-1].getMessage()


def test_the_sdk_loggers_rate_limited_are_the_ones_it_logs_to() -> None:
    """If this fails, the mcp SDK moved its transports' logging: update logs.CLIENT_CAUSED."""
    for name in CLIENT_CAUSED:
        if name.startswith("mcp."):
            module = importlib.import_module(name)
            assert module.logger.name == name, name


@pytest.mark.slow
async def test_request_bodies_dropped_midway_do_not_flood_stderr_with_tracebacks(
    sandbox: RunningSandbox, api_key: str, tmp_path: Path, raw_client: OpenRaw
) -> None:
    """100 POSTs that declare 1000 bytes, send one and hang up: the SDK logged a traceback for
    each (ClientDisconnect, from mcp.server.streamable_http) and two lines of session opened
    and ended. Now such a request never reaches the SDK (`asgi.read_posted`), and what the SDK's
    transports log passes at most once of a kind per 10 s (`logs.py`)."""
    dropped = 100
    with http_server(tmp_path, upstream_env(sandbox, api_key)) as server:
        host = server.base.removeprefix("http://")
        head = post_head(b"{" * 1000).replace(b"Host: 127.0.0.1", f"Host: {host}".encode())
        lines_before = len(server.logs().splitlines())
        baseline = sockets_of(server.process.pid)
        for _ in range(dropped):
            raw_client(server, head + b"{").close()
        with anyio.fail_after(WAIT):  # every dropped connection seen closed
            while sockets_of(server.process.pid) > baseline:  # noqa: ASYNC110 - another process
                await anyio.sleep(0.02)
        assert timed_health(server)[0] == 200
        lines = len(server.logs().splitlines()) - lines_before
        figures = (
            f"{dropped} request bodies dropped: {tracebacks(server)} tracebacks, {lines} lines on stderr"
        )
        logger.info(figures)
        assert tracebacks(server) <= 1 and lines < 80, figures + "\n" + server.logs()


# --- a connection accepted just before the server stops -----------------------------------------


async def _ok(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


@contextlib.asynccontextmanager
async def stopping_server() -> Any:
    """An in-process uvicorn under `ConnectionLimits`, and a connection to it that has brought no
    request yet; the server is told to stop and has stopped listening when this yields."""
    config = Config(app=_ok, http=ConnectionLimits(10, WAIT, WAIT, 5).protocol(), port=0, lifespan="off")
    server = uvicorn.Server(config)
    async with anyio.create_task_group() as group:
        group.start_soon(server.serve)
        await wait_until(lambda: server.started, "the server started")
        port = server.servers[0].sockets[0].getsockname()[1]
        stream = await anyio.connect_tcp("127.0.0.1", port)
        await wait_until(lambda: len(server.server_state.connections) == 1, "the connection was accepted")
        server.should_exit = True
        await wait_until(lambda: not server.servers[0].is_serving(), "the server stopped listening")
        async with stream:
            yield stream
        with anyio.fail_after(WAIT):
            while server.started and server.server_state.connections:  # noqa: ASYNC110 - uvicorn's own state
                await anyio.sleep(0.02)


async def _read_all(stream: Any) -> bytes:
    received = b""
    with anyio.fail_after(WAIT):
        with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError):
            while True:
                received += await stream.receive()
    return received


async def test_a_request_on_a_connection_accepted_before_the_stop_is_served_then_closed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A balancer connects and sends at once; a replica told to stop just then must not reset the
    connection its request is on (a POST that was sent is never retried: the client gets a 502)."""
    monkeypatch.setattr(connections, "FIRST_REQUEST_AT_SHUTDOWN", WAIT)  # the request comes in time
    async with stopping_server() as stream:
        await stream.send(HEALTH)
        answer = await _read_all(stream)
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"ok"), answer  # whole, then closed


async def test_a_connection_that_brings_no_request_is_closed_soon_after_the_stop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(connections, "FIRST_REQUEST_AT_SHUTDOWN", 0.05)
    async with stopping_server() as stream:
        assert await _read_all(stream) == b"", "closed without a word, and the server stops"
