"""Logging: every line to stderr (stdout is the protocol on stdio), redacted."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable

from naive_mcp.redaction import RedactingFilter, Redactor


def configure_logging(level: str, redact: Redactor) -> None:
    """Send every log line to stderr (stdout is the protocol on stdio), redacted."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter(redact))
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
    # One line per upstream request at INFO would drown the server's own lines.
    for noisy in ("httpx2", "httpcore2", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    # Lines a client can cause at will, once per connection: a malformed request, a connection
    # refused at the limit, asyncio's accept loop out of file descriptors (a traceback per
    # queued connection, thousands a second).
    for chatty in ("asyncio", "uvicorn.error", "naive_mcp.connections"):
        logging.getLogger(chatty).addFilter(RepeatFilter())


class RepeatFilter(logging.Filter):
    """Let one record of a kind (logger, level, message, exception type) through every `window`
    seconds; the next one to pass says how many were left out meanwhile."""

    _MAX_KINDS = 1000

    def __init__(self, window: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._window = window
        self._clock = clock
        self._seen: dict[tuple[str, int, str, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[0].__name__ if record.exc_info and record.exc_info[0] else ""
        kind = (record.name, record.levelno, str(record.msg), error)
        now = self._clock()
        passed, left_out = self._seen.get(kind, (-self._window, 0))
        if now - passed < self._window:
            self._seen[kind] = (passed, left_out + 1)
            return False
        if len(self._seen) >= self._MAX_KINDS:
            self._seen = {k: v for k, v in self._seen.items() if now - v[0] < self._window}
        self._seen[kind] = (now, 0)
        if left_out:
            record.msg = f"{record.msg} [{left_out} more like this in {now - passed:.0f} s left out]"
        return True
