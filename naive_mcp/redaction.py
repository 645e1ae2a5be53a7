"""Keep secrets out of everything the server says: tool results, errors and logs."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable

_REDACTED = "[redacted]"
# Anything shaped like a Naive credential or a bearer token, whoever's it is.
_SECRET_SHAPES = re.compile(
    r"nv_(?:sk_(?:live|test)|sess)_[A-Za-z0-9_\-]+|(?<=Bearer )[^\s'\"]+", re.IGNORECASE
)


class Redactor:
    """Replaces the configured secrets, and anything shaped like one, with `[redacted]`."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets = sorted({secret for secret in secrets if secret.strip()}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, _REDACTED)
        return _SECRET_SHAPES.sub(_REDACTED, text)


class RedactingFilter(logging.Filter):
    """Formats each record once and redacts the result, so no handler sees a secret."""

    def __init__(self, redact: Redactor) -> None:
        super().__init__()
        self._redact = redact

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self._redact(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self._redact(record.exc_text)
        return True


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
