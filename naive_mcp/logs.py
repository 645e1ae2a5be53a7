"""Logging: every line to stderr (stdout is the protocol on stdio), redacted."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable

from naive_mcp.redaction import RedactingFilter, Redactor


def configure_logging(level: str, redact: Redactor, *, process_ids: bool = False) -> None:
    """Send every log line to stderr (stdout is the protocol on stdio), redacted. `process_ids`:
    each line says which process wrote it (`--workers`: the supervisor's and its workers' lines
    share one stderr)."""
    handler = logging.StreamHandler(sys.stderr)
    process = " [%(process)d]" if process_ids else ""
    handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)s{process} %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter(redact))
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
    # One line per upstream request at INFO would drown the server's own lines; Alembic's dozen at
    # every start (plugins set up, each migration) say less than the store's own line on it.
    for noisy in ("httpx2", "httpcore2", "uvicorn.access", "alembic"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    for chatty in CLIENT_CAUSED:
        logging.getLogger(chatty).addFilter(RepeatFilter())


# Loggers whose lines a client can cause at will, once a request or a connection: asyncio's
# accept loop out of file descriptors (a traceback per queued connection, thousands a second),
# a malformed request, a connection refused at the limit, and the SDK's transports: a request
# body dropped midway (a traceback), an unknown session id or Host, a session opened and ended.
CLIENT_CAUSED = (
    "asyncio",
    "uvicorn.error",
    "naive_mcp.connections",
    "mcp.server.streamable_http",
    "mcp.server.streamable_http_manager",
    "mcp.server.sse",
    "mcp.server.transport_security",
    "mcp.server.runner",
)


class RepeatFilter(logging.Filter):
    """Let one record of a kind (logger, level, place in the code, message, exception type)
    through every `window` seconds; the next one to pass says how many were left out meanwhile.
    A place whose message differs from one record to the next (client input formatted into it:
    a session id, a Host) is one kind once it has had `_MESSAGES_PER_PLACE` in a window."""

    _MAX_KINDS = 1000
    _MESSAGES_PER_PLACE = 10

    def __init__(self, window: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._window = window
        self._clock = clock
        self._seen: dict[tuple[object, ...], tuple[float, int]] = {}
        # Per place: when its window began, and how many messages it has had in it.
        self._messages: dict[tuple[object, ...], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[0].__name__ if record.exc_info and record.exc_info[0] else ""
        place = (record.name, record.levelno, record.pathname, record.lineno, error)
        now = self._clock()
        kind = self._kind(place, str(record.msg), now)
        passed, left_out = self._seen.get(kind, (-self._window, 0))
        if now - passed < self._window:
            self._seen[kind] = (passed, left_out + 1)
            return False
        self._seen = self._within_window(self._seen, now)
        self._seen[kind] = (now, 0)
        if left_out:
            like = "like this" if kind[-1] is not None else "from the same place"
            record.msg = f"{record.msg} [{left_out} more {like} in {now - passed:.0f} s left out]"
        return True

    def _kind(self, place: tuple[object, ...], message: str, now: float) -> tuple[object, ...]:
        kind = (*place, message)
        if kind in self._seen:
            return kind
        began, messages = self._messages.get(place, (now, 0))
        if now - began >= self._window:
            began, messages = now, 0
        if messages >= self._MESSAGES_PER_PLACE:
            return (*place, None)
        self._messages = self._within_window(self._messages, now)
        self._messages[place] = (began, messages + 1)
        return kind

    def _within_window(
        self, table: dict[tuple[object, ...], tuple[float, int]], now: float
    ) -> dict[tuple[object, ...], tuple[float, int]]:
        """`table`, rid of entries older than a window once it holds `_MAX_KINDS`."""
        if len(table) < self._MAX_KINDS:
            return table
        return {k: v for k, v in table.items() if now - v[0] < self._window}
