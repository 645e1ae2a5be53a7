"""Serving on stdio: the MCP SDK's stdio transport, handed streams that run on the event loop,
and reading stdin one bounded line at a time.

The SDK's own streams read stdin and write stdout through anyio's worker threads, a hop to a
thread and back for every message each way. When stdin and stdout are pipes or sockets (as every
MCP client spawns a server) they are read and written here by the event loop itself (asyncio's
pipe transports: one `os.read` per chunk that arrived, one `os.write` per message); otherwise (a
terminal, a file) through a worker thread, as the SDK does. Either way:

- stdout is the protocol's: while serving, fd 1 points at stderr (as the SDK's own transport
  does), so stray output from anywhere cannot corrupt the protocol; the wire is written through a
  private duplicate, and fd 1 is restored on exit.
- stdin is read in place (naive-mcp starts no child process and reads stdin nowhere else), at
  most NAIVE_MAX_STDIO_LINE_BYTES of a line held: the SDK reads each message with `readline()`,
  which holds a line whole, however long (a 200 MB line without a newline kept 328 MB resident).
  The rest of a longer line is read and dropped, one line says so on stderr, and the client gets
  a JSON-RPC "Invalid Request" error that names the limit — for its request's id when the line
  begins as the SDKs write a request (`{"jsonrpc":"2.0","id":…,"method":…`), so that its call
  fails at once instead of waiting; otherwise with id null, as JSON-RPC 2.0 asks when the id
  cannot be read.
- when stdin ends, a client on pipes has left (MCP's stdio shutdown), and what it asked and is not
  yet answered is cancelled, as the SDK does. From a file or a terminal (`naive-mcp < requests >
  answers`), where someone reads the answers later, stdin's end waits for the answer to every
  request read first (`Unanswered`).
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import re
import stat
import sys
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass
from typing import Any, BinaryIO, Protocol, cast

import anyio
from anyio.abc import ObjectReceiveStream, ObjectSendStream
from mcp.server.mcpserver import MCPServer
from mcp.server.stdio import stdio_server
from mcp.shared.message import SessionMessage
from mcp_types import INVALID_REQUEST, ErrorData, JSONRPCError

logger = logging.getLogger(__name__)

# How much is read at a time.
_PIECE_BYTES = 64 * 1024
# Where a request's id is looked for: the line's beginning, as the SDKs write it.
_HEAD_BYTES = 1024
_REQUEST_ID = re.compile(
    rb'\A\s*\{\s*(?:"jsonrpc"\s*:\s*"2\.0"\s*,\s*)?"id"\s*:\s*(-?\d{1,15}|"(?:[^"\\]|\\.){0,200}")\s*,'
    rb'\s*"method"\s*:'
)

Chunks = Callable[[], Awaitable[bytes]]  # the next bytes of stdin that arrived; b"" at its end


@dataclass(frozen=True, slots=True)
class OverlongLine:
    """A line that was dropped: how long it was, and the id of the request it began, if readable."""

    size: int
    request_id: int | str | None


class LineSplitter:
    """Lines out of the chunks of a byte stream, none held longer than `limit` bytes besides its
    newline: a longer one becomes an `OverlongLine` (its size, newline included, and the id its
    head names), its bytes dropped as they come."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._line = bytearray()  # the beginning of a line whose newline has not come yet
        self._dropping: tuple[bytes, int] | None = None  # an overlong line's head and size so far

    def feed(self, chunk: bytes) -> Iterator[bytes | OverlongLine]:
        """The lines (newline included) and dropped lines that `chunk` completes."""
        start, size = 0, len(chunk)
        while start < size:
            end = chunk.find(b"\n", start)
            stop = size if end < 0 else end + 1
            if self._dropping is None and len(self._line) + (stop - start) - (end >= 0) > self._limit:
                head = bytes(self._line[:_HEAD_BYTES]) + chunk[start : start + _HEAD_BYTES]
                self._dropping = (head[:_HEAD_BYTES], len(self._line))
                self._line = bytearray()
            if self._dropping is not None:
                head, dropped = self._dropping
                self._dropping = (head, dropped + stop - start)
                if end >= 0:
                    yield self._dropped()
            elif end < 0:
                self._line += chunk[start:]
            elif self._line:
                self._line += chunk[start:stop]
                yield bytes(self._line)
                self._line = bytearray()
            elif start == 0 and stop == size:
                yield chunk  # the usual chunk: one whole message, nothing copied
            else:
                yield chunk[start:stop]
            start = stop

    def end(self) -> Iterator[bytes | OverlongLine]:
        """What is left when the stream ends: a last line without its newline."""
        if self._dropping is not None:
            yield self._dropped()
        elif self._line:
            yield bytes(self._line)
            self._line = bytearray()

    def _dropped(self) -> OverlongLine:
        assert self._dropping is not None
        head, size = self._dropping
        self._dropping = None
        return OverlongLine(size, _request_id(head))


class Unanswered:
    """The requests read and not answered yet, by id: what the end of a file or a terminal's
    input waits for. Each line is parsed here once more, off the pipes' path."""

    def __init__(self) -> None:
        self._waiting: Counter[int | str] = Counter()
        self._none = anyio.Event()
        self._none.set()

    def asked(self, line: str) -> None:
        message = _parsed(line)
        if "method" not in message:
            return
        if "id" in message:
            self._add(message["id"], 1)
        elif message["method"] == "notifications/cancelled":  # the SDK answers no cancelled request
            params = message.get("params")
            self._add(params.get("requestId") if isinstance(params, dict) else None, -1)

    def answered(self, text: str) -> None:
        message = _parsed(text)
        if "method" not in message and "id" in message:
            self._add(message["id"], -1)

    async def wait(self) -> None:
        await self._none.wait()

    def _add(self, request_id: object, count: int) -> None:
        if not isinstance(request_id, int | str) or isinstance(request_id, bool):
            return
        if count < 0 and request_id not in self._waiting:
            return
        self._waiting[request_id] += count
        if self._waiting[request_id] <= 0:
            del self._waiting[request_id]
        if self._waiting:
            if self._none.is_set():
                self._none = anyio.Event()
        else:
            self._none.set()


def _parsed(text: str) -> dict[str, Any]:
    try:
        message = json.loads(text)
    except ValueError:
        return {}
    return message if isinstance(message, dict) else {}


class BoundedLines:
    """The lines of stdin (`chunks`), decoded as the SDK decodes stdin (UTF-8, errors replaced),
    none longer than `limit` bytes besides its newline. A longer line is dropped, logged and sent
    to `overlong`; reading goes on with the next line. With `unanswered`, each line is noted
    there, and the end of stdin waits for every request's answer."""

    def __init__(
        self,
        chunks: Chunks,
        limit: int,
        overlong: ObjectSendStream[OverlongLine],
        unanswered: Unanswered | None = None,
    ) -> None:
        self._chunks = chunks
        self._limit = limit
        self._overlong = overlong
        self._unanswered = unanswered

    async def __aiter__(self) -> AsyncIterator[str]:
        splitter = LineSplitter(self._limit)
        while True:
            chunk = await self._chunks()
            for line in splitter.feed(chunk) if chunk else splitter.end():
                if isinstance(line, OverlongLine):
                    await self._dropped(line)
                else:
                    text = line.decode("utf-8", "replace")
                    if self._unanswered is not None:
                        self._unanswered.asked(text)
                    yield text
            if not chunk:
                if self._unanswered is not None:
                    await self._unanswered.wait()
                return

    async def _dropped(self, line: OverlongLine) -> None:
        logger.warning(
            "stdio: dropped a message of %d bytes (request id %s): longer than "
            "NAIVE_MAX_STDIO_LINE_BYTES (%d); the client was sent a JSON-RPC error",
            line.size,
            "unknown" if line.request_id is None else json.dumps(line.request_id),
            self._limit,
        )
        await self._overlong.send(line)


def _request_id(head: bytes) -> int | str | None:
    match = _REQUEST_ID.match(head)
    if match is None:
        return None
    try:
        value = json.loads(match.group(1))
    except ValueError:
        return None
    return value if isinstance(value, int | str) else None


def overlong_error(line: OverlongLine, limit: int) -> JSONRPCError:
    """What the client is told about a line that was dropped."""
    return JSONRPCError(
        jsonrpc="2.0",
        id=line.request_id,
        error=ErrorData(
            code=INVALID_REQUEST,
            message=(
                f"Request too large: the message is longer than NAIVE_MAX_STDIO_LINE_BYTES ({limit} bytes) "
                "and was dropped unread. Send a smaller one (e.g. smaller attachments), or raise "
                "NAIVE_MAX_STDIO_LINE_BYTES in the server's environment."
            ),
        ),
    )


# --- the streams ---------------------------------------------------------------------------------


class TextOut(Protocol):
    """What the SDK's stdio transport does with its stdout: write a message's line, then flush."""

    async def write(self, text: str) -> object: ...
    async def flush(self) -> object: ...


class PipeOut:
    """A pipe or socket written by the event loop: the line goes to the transport at once (one
    `os.write` when the pipe has room, as it does while the client reads), and `flush` waits only
    while the client is not keeping up. A client that has gone away is written nothing."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer

    async def write(self, text: str) -> None:
        if not self._writer.is_closing():
            self._writer.write(text.encode("utf-8"))

    async def flush(self) -> None:
        with suppress(ConnectionError):  # the client is gone; its stdin ends the server
            await self._writer.drain()


def _is_pipe(fd: int) -> bool:
    """Whether `fd` is a pipe or a socket: what the event loop may read and write without
    blocking. A terminal is not (making it non-blocking would leave the user's shell so), nor a
    file (always "ready", and asyncio refuses it). On Windows, nothing is: served by a thread."""
    if sys.platform == "win32":
        return False
    mode = os.fstat(fd).st_mode
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


@contextmanager
def _stdout_diverted() -> Iterator[int]:
    """A private duplicate of fd 1 (the wire), fd 1 pointing at stderr meanwhile; restored on
    exit. The SDK's transport does the same when it is not handed a stdout."""
    sys.stdout.flush()
    wire = _duplicate_above_standard(1)
    os.dup2(2, 1)
    try:
        yield wire
    finally:
        sys.stdout.flush()
        os.dup2(wire, 1)
        os.close(wire)


def _duplicate_above_standard(fd: int) -> int:
    """A duplicate of `fd` (not inherited by children) that is none of 0, 1, 2, whichever of
    those happen to be closed."""
    lower: list[int] = []
    try:
        while (duplicate := os.dup(fd)) <= 2:
            lower.append(duplicate)
        return duplicate
    finally:
        for spare in lower:
            os.close(spare)


@contextmanager
def _kept_blocking(*fds: int) -> Iterator[None]:
    """Put `fds` back in blocking mode on exit: asyncio's pipe transports make them non-blocking,
    and the file descriptions may outlive this process (a parent's, a shell's)."""
    try:
        yield
    finally:
        for fd in fds:
            with suppress(OSError):
                os.set_blocking(fd, True)


@asynccontextmanager
async def _streams(
    stdin: io.BufferedReader[Any],
) -> AsyncIterator[tuple[Chunks, TextOut, Unanswered | None]]:
    """stdin's chunks and stdout for the SDK's transport: on the event loop for pipes and
    sockets (a client's), through a worker thread otherwise, with the requests not answered yet
    counted so that the end of stdin waits for them."""
    async with AsyncExitStack() as stack:
        wire = stack.enter_context(_stdout_diverted())
        out_file = stack.enter_context(os.fdopen(wire, "wb", buffering=0, closefd=False))
        in_fd = stdin.fileno()
        loop = asyncio.get_running_loop()
        chunks: Chunks
        stdout: TextOut
        unanswered: Unanswered | None = None
        if _is_pipe(in_fd) and _is_pipe(wire):
            stack.enter_context(_kept_blocking(in_fd, wire))
            reader = asyncio.StreamReader(limit=_PIECE_BYTES)
            in_file = stack.enter_context(os.fdopen(in_fd, "rb", buffering=0, closefd=False))
            read_transport, _ = await loop.connect_read_pipe(
                lambda: asyncio.StreamReaderProtocol(reader), in_file
            )
            stack.callback(read_transport.close)
            write_transport, write_protocol = await loop.connect_write_pipe(
                lambda: asyncio.StreamReaderProtocol(asyncio.StreamReader()), out_file
            )
            stack.callback(write_transport.close)
            chunks = lambda: reader.read(_PIECE_BYTES)  # noqa: E731
            stdout = PipeOut(asyncio.StreamWriter(write_transport, write_protocol, None, loop))
        else:
            chunks = lambda: anyio.to_thread.run_sync(stdin.read1, _PIECE_BYTES)  # noqa: E731
            unanswered = Unanswered()
            stdout = ThreadOut(out_file, unanswered)
        yield chunks, stdout, unanswered


class ThreadOut:
    """The wire written through a worker thread (a terminal, a file): each line in one write,
    and each answer noted in `unanswered` once written."""

    def __init__(self, binary: BinaryIO, unanswered: Unanswered) -> None:
        self._binary = binary
        self._unanswered = unanswered

    async def write(self, text: str) -> None:
        await anyio.to_thread.run_sync(self._binary.write, text.encode("utf-8"))
        self._unanswered.answered(text)

    async def flush(self) -> None:
        """Nothing to do: the wire is unbuffered."""


async def serve_stdio(server: MCPServer[Any], max_line_bytes: int) -> None:
    """Serve `server` on stdin and stdout until stdin ends."""
    overlong_send, overlong_receive = anyio.create_memory_object_stream[OverlongLine](16)
    # The SDK's MCPServer.run_stdio_async, with our streams; the SDK only iterates its stdin
    # (`async for line in stdin`) and calls its stdout's `write` and `flush`, and its own
    # in-memory client reaches the low-level server the same way (test_memory_bounds.py pins all).
    lowlevel = server._lowlevel_server
    async with _streams(cast("io.BufferedReader[Any]", sys.stdin.buffer)) as (chunks, out, unanswered):
        lines = BoundedLines(chunks, max_line_bytes, overlong_send, unanswered)
        stdin = cast("anyio.AsyncFile[str]", lines)
        stdout = cast("anyio.AsyncFile[str]", out)
        async with (
            stdio_server(stdin=stdin, stdout=stdout) as (read_stream, write_stream),
            anyio.create_task_group() as tasks,
        ):
            tasks.start_soon(_answer_overlong, overlong_receive, write_stream, max_line_bytes)
            await lowlevel.run(read_stream, write_stream, lowlevel.create_initialization_options())
            tasks.cancel_scope.cancel()


async def _answer_overlong(
    dropped: ObjectReceiveStream[OverlongLine], write: ObjectSendStream[SessionMessage], limit: int
) -> None:
    async with dropped:
        async for line in dropped:
            try:
                await write.send(SessionMessage(overlong_error(line, limit)))
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                return  # the server is stopping
