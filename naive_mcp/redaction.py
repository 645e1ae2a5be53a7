"""Keep secrets out of everything the server says: tool results, progress, errors and logs.

Two strengths, for two kinds of text:

- Errors and logs (`Redactor.__call__`): the configured secrets, and anything shaped like a
  credential — a Naive key or session token, a bearer token, a URL's user:password — whoever's it
  is. Nobody needs a log line verbatim, and a key the server was never told about (another
  client's, in a message the upstream echoed) is caught too.
- Answers (`exact`, `json`, `fragment`): the configured secrets only — the server's key, the
  auth tokens, the store's and the base URL's passwords — and the caller's own key
  (`including`), each replaced where it appears as it is. Not the shapes: an answer is the
  user's content, and the shapes would mangle it wherever it explains credentials
  (`Authorization: Bearer YOUR_TOKEN`, `https://user:pass@host`, an example `nv_sk_test_…`
  key in a code sample). A secret an answer can carry is one the upstream was given or the
  client wrote, and those are exactly the configured ones.

Replacing costs a `str.replace` per secret (a fast substring search): a 100 KB answer with a
handful of secrets takes some tens of microseconds.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import re
from collections.abc import Iterable, Sequence
from typing import TypeVar, cast

REDACTED = "[redacted]"
_JsonT = TypeVar("_JsonT")
# Anything shaped like a Naive credential or a bearer token, whoever's it is.
_SECRET_SHAPES = re.compile(
    r"nv_(?:sk_(?:live|test)|sess)_[A-Za-z0-9_.\-]+"  # Naive keys and session tokens (dotted, too)
    r"|(?<=Bearer )[^\s'\"]+"  # any bearer token
    r"|(?<=://)[^/\s:@]*:[^/\s@]*(?=@)",  # user:password in a URL
    re.IGNORECASE,
)


class Redactor:
    """Replaces the configured secrets with `[redacted]`; in errors and logs, anything shaped
    like one too."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # Longest first, so that a secret containing another is replaced whole.
        self._secrets = sorted({secret for secret in secrets if secret.strip()}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        """For errors and logs: the configured secrets, then every credential shape."""
        return _SECRET_SHAPES.sub(REDACTED, self.exact(text))

    def including(self, secret: str | None) -> Redactor:
        """This redactor, knowing one more secret (the caller's key or bearer token)."""
        if secret is None or secret in self._secrets:
            return self
        return Redactor([*self._secrets, secret])

    def exact(self, text: str) -> str:
        """For answers: every configured secret replaced where it appears, nothing else touched."""
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        return text

    def json(self, value: _JsonT) -> _JsonT:
        """`exact` applied to every string (keys too) of a decoded JSON value, as a copy of the
        same shape."""
        if not self._secrets:
            return value
        return cast("_JsonT", self._json(value))

    def _json(self, value: object) -> object:
        if isinstance(value, str):
            return self.exact(value)
        if isinstance(value, list):
            return [self._json(item) for item in value]
        if isinstance(value, dict):
            return {self._json(key): self._json(item) for key, item in value.items()}
        return value

    def spelling_a_secret(self, pieces: Sequence[str]) -> set[int]:
        """The indexes of the pieces that, joined, spell a configured secret or part of one: a
        text that comes in pieces too (an answer's logprob tokens) spells a secret no one piece
        holds, which `exact` on each piece would leave."""
        joined = "".join(pieces)
        ends = list(itertools.accumulate(len(piece) for piece in pieces))
        found: set[int] = set()
        for secret in self._secrets:
            at = joined.find(secret)
            while at != -1:
                first, last = bisect.bisect_right(ends, at), bisect.bisect_left(ends, at + len(secret))
                found.update(range(first, last + 1))
                at = joined.find(secret, at + 1)
        return found

    def fragment(self, text: str, *, cut_before: bool) -> str:
        """`exact` for a piece cut out of a longer text that is still arriving (a progress
        tail): a secret split by a cut leaks neither end. A secret's beginning at the end of
        `text` (its rest has not arrived yet) is held back, and, when `cut_before`, so is a
        secret's end at its start (its beginning was cut off). What is held back is at most the
        length of the longest secret; a text that merely ends like a secret begins loses those
        characters from this notification only."""
        text = self.exact(text)
        start, end = 0, len(text)
        for secret in self._secrets:
            end = min(end, len(text) - _overlap(text, secret, at_end=True))
            if cut_before:
                start = max(start, _overlap(text, secret, at_end=False))
        return text[start:end] if start < end else ""


def _overlap(text: str, secret: str, *, at_end: bool) -> int:
    """The length of the longest proper beginning of `secret` that `text` ends with (`at_end`),
    or of the longest proper end of `secret` that `text` starts with. Only the places where the
    first character matches are compared."""
    if not text:
        return 0
    if at_end:
        at = text.find(secret[0], max(len(text) - len(secret) + 1, 0))
        while at != -1:
            if secret.startswith(text[at:]):
                return len(text) - at
            at = text.find(secret[0], at + 1)
        return 0
    at = secret.find(text[0], 1)
    while at != -1:
        if text.startswith(secret[at:]):
            return len(secret) - at
        at = secret.find(text[0], at + 1)
    return 0


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
