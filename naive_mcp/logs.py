"""Logging: every line to stderr (stdout is the protocol on stdio), redacted."""

from __future__ import annotations

import logging
import sys

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
