"""Keep secrets out of everything the server says: tool results, errors and logs."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

_REDACTED = "[redacted]"
# Anything shaped like a Naive credential or a bearer token, whoever's it is.
_SECRET_SHAPES = re.compile(
    r"nv_(?:sk_(?:live|test)|sess)_[A-Za-z0-9_.\-]+"  # Naive keys and session tokens (dotted, too)
    r"|(?<=Bearer )[^\s'\"]+"  # any bearer token
    r"|(?<=://)[^/\s:@]*:[^/\s@]*(?=@)",  # user:password in a URL
    re.IGNORECASE,
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
