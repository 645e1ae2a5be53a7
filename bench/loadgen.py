"""A light load generator for the HTTP figures: raw HTTP/1.1 on kept-alive connections, over
asyncio streams, so that a figure measures the server and not its clients.

The SDK's own client spends ~4 ms of CPU on a call (bench/history.md), more than the server it
drives; 200 of them sharing two cores with the server measured mostly themselves. Here each
connection builds its request once, as bytes, and reads an answer with no more parsing than
checking it needs: the status line, the headers, the body (Content-Length or chunked), and the
JSON-RPC answer in it, a JSON body or the `data:` lines of an SSE stream (what streamable HTTP
answers a call with). An answer counts only as a JSON-RPC result without `isError`; anything
else (another status, an error, a tool error, a dropped connection) is counted, never raised.

- Stateless streamable HTTP: every request stands alone.
- Stateful: each connection opens a session of its own (`initialize`, then
  `notifications/initialized`) and names its `mcp-session-id` on every later request; it ends
  the session (DELETE) when it closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

PROTOCOL_VERSION = "2025-11-25"
_INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 0,
    "method": "initialize",
    "params": {
        "protocolVersion": PROTOCOL_VERSION,
        "capabilities": {},
        "clientInfo": {"name": "bench-loadgen", "version": "1"},
    },
}
_INITIALIZED = {"jsonrpc": "2.0", "method": "notifications/initialized"}


class ProtocolError(Exception):
    """The server answered in a way HTTP or MCP does not allow here (not a failed call)."""


@dataclass(frozen=True)
class Endpoint:
    """Where the MCP endpoint is: `http://host:port/path`."""

    host: str
    port: int
    path: str

    @classmethod
    def of(cls, url: str) -> Endpoint:
        parts = urlsplit(url)
        if parts.scheme != "http" or parts.hostname is None or parts.port is None:
            raise ValueError(f"{url}: the load generator speaks plain http://host:port/path only")
        return cls(parts.hostname, parts.port, parts.path or "/")


@dataclass(frozen=True)
class Call:
    """The tool call every request makes."""

    tool: str
    arguments: dict[str, Any]

    def message(self, request_id: int) -> dict[str, Any]:
        params = {"name": self.tool, "arguments": self.arguments}
        return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params}


@dataclass
class Response:
    status: int
    headers: dict[bytes, bytes]
    body: bytes

    def message(self) -> dict[str, Any] | None:
        """The JSON-RPC answer in the body: the JSON body itself, or the SSE `data:` line that
        answers a request (progress notifications, which have a method, are passed over)."""
        if self.headers.get(b"content-type", b"").startswith(b"text/event-stream"):
            for line in self.body.split(b"\n"):
                if line.startswith(b"data:"):
                    message = json.loads(line[5:])
                    if isinstance(message, dict) and "method" not in message:
                        return message
            return None
        if not self.body:
            return None
        message = json.loads(self.body)
        return message if isinstance(message, dict) else None


def answered(response: Response) -> bool:
    """Whether `response` is a JSON-RPC result without `isError` (a call that succeeded)."""
    if response.status != 200:
        return False
    try:
        message = response.message()
    except ValueError:
        return False
    result = message.get("result") if message is not None else None
    return isinstance(result, dict) and not result.get("isError", False)


class Connection:
    """One kept-alive HTTP/1.1 connection making the same tool call over and over."""

    def __init__(
        self,
        endpoint: Endpoint,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        session: str | None,
    ) -> None:
        self._endpoint = endpoint
        self._reader = reader
        self._writer = writer
        self.session = session
        self._request = b""
        self.closed = False  # the server closed it (or it broke): open another to go on

    @classmethod
    async def open(cls, endpoint: Endpoint, call: Call, *, stateful: bool, request_id: int = 1) -> Connection:
        reader, writer = await asyncio.open_connection(endpoint.host, endpoint.port)
        connection = cls(endpoint, reader, writer, None)
        if stateful:
            opened = await connection.exchange(connection.build("POST", _INITIALIZE))
            session = opened.headers.get(b"mcp-session-id")
            if opened.status != 200 or session is None:
                await connection.close()
                raise ProtocolError(f"initialize answered {opened.status} without a session id")
            connection.session = session.decode("ascii")
            acknowledged = await connection.exchange(connection.build("POST", _INITIALIZED))
            if acknowledged.status != 202:
                await connection.close()
                raise ProtocolError(f"notifications/initialized answered {acknowledged.status}, not 202")
        connection._request = connection.build("POST", call.message(request_id))
        return connection

    @property
    def local_port(self) -> int:
        """This end's port: which server process holds the other end can be read from /proc."""
        return int(self._writer.get_extra_info("sockname")[1])

    def build(self, method: str, message: dict[str, Any] | None = None) -> bytes:
        body = json.dumps(message, separators=(",", ":")).encode() if message is not None else b""
        lines = [
            f"{method} {self._endpoint.path} HTTP/1.1",
            f"Host: {self._endpoint.host}:{self._endpoint.port}",
            "Accept: application/json, text/event-stream",
            "Content-Type: application/json",
            f"MCP-Protocol-Version: {PROTOCOL_VERSION}",
            f"Content-Length: {len(body)}",
        ]
        if self.session is not None:
            lines.append(f"Mcp-Session-Id: {self.session}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii") + body

    async def call(self) -> bool:
        """Make the call once; whether it was answered (`answered`). A broken connection is a
        failed call, and marks the connection closed."""
        try:
            return answered(await self.exchange(self._request))
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ProtocolError, ValueError):
            self.closed = True
            return False

    async def exchange(self, request: bytes) -> Response:
        """Send `request`, read its whole response."""
        self._writer.write(request)
        head = await self._reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head[:-4].split(b"\r\n")
        parts = status_line.split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
            raise ProtocolError(f"not an HTTP/1.1 status line: {status_line[:80]!r}")
        status = int(parts[1])
        headers: dict[bytes, bytes] = {}
        for line in header_lines:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        if headers.get(b"connection", b"").lower() == b"close":
            self.closed = True
        length = headers.get(b"content-length")
        if length is not None:
            body = await self._reader.readexactly(int(length))
        elif headers.get(b"transfer-encoding", b"").lower() == b"chunked":
            body = await self._chunked()
        elif status in (204, 304) or 100 <= status < 200:
            body = b""
        else:  # no length: the body runs to the end of the connection
            body = await self._reader.read()
            self.closed = True
        return Response(status, headers, body)

    async def _chunked(self) -> bytes:
        chunks: list[bytes] = []
        while True:
            size_line = await self._reader.readuntil(b"\r\n")
            size = int(size_line.split(b";", 1)[0], 16)
            if size == 0:
                while await self._reader.readuntil(b"\r\n") != b"\r\n":  # trailers, if any
                    pass
                return b"".join(chunks)
            chunks.append((await self._reader.readexactly(size + 2))[:-2])

    async def close(self) -> None:
        """End the session (stateful) and close the connection."""
        if self.session is not None and not self.closed:
            with contextlib.suppress(OSError, asyncio.IncompleteReadError, ProtocolError, ValueError):
                await self.exchange(self.build("DELETE"))
        self._writer.close()
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()


@dataclass
class Pool:
    """`size` connections to one endpoint making one call; a connection the server closes is
    replaced on its next call."""

    endpoint: Endpoint
    call: Call
    stateful: bool
    size: int
    connections: list[Connection] = field(default_factory=list)

    async def open(self) -> None:
        """Open the connections one after another, as clients arriving in turn would: opened all
        at once, they would land on a server's workers unevenly (the first worker to wake takes
        every connection waiting), and a connection stays with the worker that took it."""
        self.connections = [await self._connect(i) for i in range(self.size)]

    async def _connect(self, index: int) -> Connection:
        return await Connection.open(self.endpoint, self.call, stateful=self.stateful, request_id=index + 1)

    async def call_on(self, index: int) -> bool:
        connection = self.connections[index]
        if connection.closed:
            await connection.close()
            connection = self.connections[index] = await self._connect(index)
        return await connection.call()

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self.connections))


@dataclass
class Sustained:
    """A sustained run: every connection calling back to back."""

    calls: int
    errors: int
    seconds: float
    latencies_ms: list[float]
    client_cpu_seconds: float  # this process's CPU over the run: the generator's own cost

    @property
    def calls_per_second(self) -> float:
        return self.calls / self.seconds


async def sustained(pool: Pool, calls_each: int, on_halfway: Callable[[], None] | None = None) -> Sustained:
    """Each of the pool's connections makes `calls_each` calls back to back; `on_halfway` runs
    once half of all the calls are answered."""
    latencies: list[float] = []
    errors = 0
    total = calls_each * pool.size

    async def connection(index: int) -> None:
        nonlocal errors
        for _ in range(calls_each):
            started = time.perf_counter()
            ok = await pool.call_on(index)
            latencies.append((time.perf_counter() - started) * 1000)
            errors += not ok
            if on_halfway is not None and len(latencies) == total // 2:
                on_halfway()

    cpu = time.process_time()
    started = time.perf_counter()
    await asyncio.gather(*(connection(i) for i in range(pool.size)))
    seconds = time.perf_counter() - started
    return Sustained(total, errors, seconds, latencies, time.process_time() - cpu)


@dataclass(frozen=True)
class Burst:
    total_ms: float  # from the go to the last answer
    errors: int


async def burst(pool: Pool) -> Burst:
    """Every connection of the pool makes its call at once; the clock runs to the last answer."""
    started = time.perf_counter()
    outcomes = await asyncio.gather(*(pool.call_on(i) for i in range(pool.size)))
    return Burst((time.perf_counter() - started) * 1000, sum(not ok for ok in outcomes))
