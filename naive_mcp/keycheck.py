"""Client keys, checked upstream: in client-keys mode a bearer token authenticates only once the
upstream has accepted it as a Naive key.

Each key is checked once (`NaiveClient.key_accepted`: one small, free, authenticated request) and
the verdict kept for `NAIVE_CLIENT_KEY_CACHE_TTL` seconds, for up to `NAIVE_CLIENT_KEY_CACHE_SIZE`
keys accepted and as many refused, kept apart so that a flood of bad keys cannot push a good one
out. Requests that arrive with one key while it is being checked wait for that one check. At most
`NAIVE_CLIENT_KEY_CHECKS_PER_MINUTE` checks go upstream in any minute, whatever clients send:
past that, or when the upstream cannot say (unreachable, slow, 429, 5xx), the request is turned
away as unavailable (`KeyCheckUnavailable`, answered 503 with Retry-After) and nothing is kept,
so the next try asks again. Keys are held by digest only.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable

import anyio

from naive_mcp.caller import secret_digest
from naive_mcp.errors import NaiveError, UpstreamError, UpstreamTimeout, UpstreamUnreachable

_WINDOW_SECONDS = 60.0
_RETRY_AFTER_UPSTREAM_DOWN = 5


class KeyCheckUnavailable(Exception):
    """A client key could not be checked now: nothing is known about it, retry after a while."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


class KeyRefused(Exception):
    """A bearer token refused in client-keys mode, with why (answered 401): never the token itself."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class _Check:
    """One check under way, which requests with the same key wait on instead of repeating."""

    def __init__(self) -> None:
        self.finished = anyio.Event()
        self.accepted: bool | None = None
        self.error: Exception | None = None


class KeyCheck:
    def __init__(
        self,
        accepted: Callable[[str], Awaitable[bool]],
        *,
        ttl: float,
        size: int,
        per_minute: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._accepted_upstream = accepted
        self._ttl = ttl
        self._size = size
        self._per_minute = per_minute
        self._clock = clock
        # digest -> when the verdict expires; in order of expiry, since every verdict lives `ttl`.
        self._verdicts: dict[bool, OrderedDict[str, float]] = {True: OrderedDict(), False: OrderedDict()}
        self._checking: dict[str, _Check] = {}
        self._recent: deque[float] = deque()  # when the checks of the last minute went upstream
        self.checks = 0  # sent upstream, ever

    async def accepts(self, key: str) -> bool:
        """Whether the upstream takes `key`; raises `KeyCheckUnavailable` when that cannot be known now."""
        digest = secret_digest(key)
        while True:
            verdict = self._verdict(digest)
            if verdict is not None:
                return verdict
            check = self._checking.get(digest)
            if check is None:
                return await self._check(key, digest)
            await check.finished.wait()
            if check.error is not None:
                raise check.error
            if check.accepted is not None:
                return check.accepted
            # That check was cancelled: go round and make (or wait on) a new one.

    def _verdict(self, digest: str) -> bool | None:
        now = self._clock()
        for verdict, kept in self._verdicts.items():
            while kept and next(iter(kept.values())) <= now:
                kept.popitem(last=False)
            if digest in kept:
                return verdict
        return None

    async def _check(self, key: str, digest: str) -> bool:
        self._spend_one_check()
        check = self._checking[digest] = _Check()
        try:
            check.accepted = await self._accepted_upstream(key)
        except NaiveError as error:
            check.error = KeyCheckUnavailable(
                f"could not check this Naive key with the upstream ({_reason(error)}); nothing was "
                "decided about it: retry shortly",
                retry_after=_retry_after(error),
            )
            raise check.error from None
        finally:
            del self._checking[digest]
            check.finished.set()
        self._keep(digest, check.accepted)
        return check.accepted

    def _spend_one_check(self) -> None:
        now = self._clock()
        while self._recent and self._recent[0] <= now - _WINDOW_SECONDS:
            self._recent.popleft()
        if len(self._recent) >= self._per_minute:
            wait = max(1, math.ceil(self._recent[0] + _WINDOW_SECONDS - now))
            raise KeyCheckUnavailable(
                f"too many new client keys: NAIVE_CLIENT_KEY_CHECKS_PER_MINUTE ({self._per_minute}) were "
                f"checked with the upstream in the last minute; retry in {wait} s (keys already "
                "checked are not affected; the operator can raise the setting)",
                retry_after=wait,
            )
        self._recent.append(now)
        self.checks += 1

    def _keep(self, digest: str, accepted: bool) -> None:
        kept = self._verdicts[accepted]
        while len(kept) >= self._size:
            kept.popitem(last=False)
        kept[digest] = self._clock() + self._ttl


def _reason(error: NaiveError) -> str:
    # Never the upstream's own words: an error body may echo the key it was sent.
    if isinstance(error, UpstreamUnreachable | UpstreamTimeout):
        return error.message
    if isinstance(error, UpstreamError):
        return f"it answered HTTP {error.status}, {error.kind}"
    return error.kind


def _retry_after(error: NaiveError) -> int:
    delay = error.retry_after if isinstance(error, UpstreamError) else None
    return max(1, math.ceil(delay)) if delay is not None else _RETRY_AFTER_UPSTREAM_DOWN
