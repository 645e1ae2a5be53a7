"""Serving on stdio: the MCP SDK's stdio transport, reading stdin one bounded line at a time.

The SDK reads each message with `readline()`, which holds a line whole, however long: a 200 MB
line without a newline kept 328 MB resident. Here a line is read with at most
NAIVE_MAX_STDIO_LINE_BYTES held; the rest of a longer one is read and dropped, one line says so
on stderr (stdout is the protocol's), and the client gets a JSON-RPC "Invalid Request" error that
names the limit — for its request's id when the line begins as the SDKs write a request
(`{"jsonrpc":"2.0","id":…,"method":…`), so that its call fails at once instead of waiting;
otherwise with id null, as JSON-RPC 2.0 asks when the id cannot be read.

stdin is read in place from `sys.stdin.buffer` (as the SDK does when it cannot divert fd 0):
naive-mcp starts no child process and reads stdin nowhere else. The SDK still diverts fd 1 to
stderr while serving, so stray output cannot corrupt the protocol.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, BinaryIO, cast

import anyio
from anyio.abc import ObjectReceiveStream, ObjectSendStream
from mcp.server.mcpserver import MCPServer
from mcp.server.stdio import stdio_server
from mcp.shared.message import SessionMessage
from mcp_types import INVALID_REQUEST, ErrorData, JSONRPCError

logger = logging.getLogger(__name__)

# How much of a line is read at a time.
_PIECE_BYTES = 64 * 1024
# Where a request's id is looked for: the line's beginning, as the SDKs write it.
_HEAD_BYTES = 1024
_REQUEST_ID = re.compile(
    rb'\A\s*\{\s*(?:"jsonrpc"\s*:\s*"2\.0"\s*,\s*)?"id"\s*:\s*(-?\d{1,15}|"(?:[^"\\]|\\.){0,200}")\s*,'
    rb'\s*"method"\s*:'
)


@dataclass(frozen=True, slots=True)
class OverlongLine:
    """A line that was dropped: how long it was, and the id of the request it began, if readable."""

    size: int
    request_id: int | str | None


class BoundedLines:
    """The lines of `binary`, decoded as the SDK decodes stdin (UTF-8, errors replaced), none
    longer than `limit` bytes besides its newline. A longer line is dropped, logged and sent to
    `overlong`; reading goes on with the next line."""

    def __init__(self, binary: BinaryIO, limit: int, overlong: ObjectSendStream[OverlongLine]) -> None:
        self._binary = binary
        self._limit = limit
        self._overlong = overlong

    async def __aiter__(self) -> AsyncIterator[str]:
        while True:
            line, dropped = await anyio.to_thread.run_sync(self._read_line)
            if dropped is not None:
                logger.warning(
                    "stdio: dropped a message of %d bytes (request id %s): longer than "
                    "NAIVE_MAX_STDIO_LINE_BYTES (%d); the client was sent a JSON-RPC error",
                    dropped.size,
                    "unknown" if dropped.request_id is None else json.dumps(dropped.request_id),
                    self._limit,
                )
                await self._overlong.send(dropped)
                continue
            if not line:
                return
            yield line.decode("utf-8", "replace")

    def _read_line(self) -> tuple[bytearray, OverlongLine | None]:
        """One line (empty at the end of input), or the description of one that was too long.
        Read a piece at a time into one buffer: `readline(limit)` would hold its pieces and
        their join at once, twice the limit."""
        line = bytearray()
        while len(line) <= self._limit:
            piece = self._binary.readline(min(_PIECE_BYTES, self._limit + 1 - len(line)))
            line += piece
            if not piece or piece.endswith(b"\n"):
                return line, None
        head, size = bytes(line[:_HEAD_BYTES]), len(line)
        del line
        while True:
            rest = self._binary.readline(_PIECE_BYTES)
            size += len(rest)
            if not rest or rest.endswith(b"\n"):
                return bytearray(), OverlongLine(size, _request_id(head))


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


async def serve_stdio(server: MCPServer[Any], max_line_bytes: int) -> None:
    """Serve `server` on stdin and stdout until stdin ends."""
    overlong_send, overlong_receive = anyio.create_memory_object_stream[OverlongLine](16)
    lines = BoundedLines(sys.stdin.buffer, max_line_bytes, overlong_send)
    # The SDK's MCPServer.run_stdio_async, with our stdin; the SDK only iterates its stdin
    # (`async for line in stdin`), and its own in-memory client reaches the low-level server
    # the same way (test_memory_bounds.py pins both).
    lowlevel = server._lowlevel_server
    stdin = cast("anyio.AsyncFile[str]", lines)
    async with stdio_server(stdin=stdin) as (read_stream, write_stream), anyio.create_task_group() as tasks:
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
