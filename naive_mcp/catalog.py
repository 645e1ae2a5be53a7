"""The model catalogue: the upstream's model list, reused for a short while."""

from __future__ import annotations

import time
from collections.abc import Callable

import anyio

from naive_mcp.caller import Caller
from naive_mcp.client import NaiveClient
from naive_mcp.wire import ModelEntry

# Callers (key, user, project) whose listing is kept at once; the oldest go first.
MAX_CACHED_CALLERS = 256


class _Fetch:
    """One upstream listing under way, which concurrent callers wait on instead of repeating."""

    def __init__(self) -> None:
        self.finished = anyio.Event()
        self.models: list[ModelEntry] | None = None
        self.error: Exception | None = None


class ModelCatalog:
    """Serves model listings from a per-caller cache (key, user, project) that lives `ttl` seconds.

    Listings are free upstream but slow and large; an agent choosing a model asks for several
    pages and filters in a row. Concurrent misses for one caller share one upstream request,
    its failure included; if that request is cancelled, a waiter makes its own.
    """

    def __init__(self, client: NaiveClient, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._client = client
        self._ttl = ttl
        self._clock = clock
        self._cached: dict[Caller, tuple[float, list[ModelEntry]]] = {}
        self._fetching: dict[Caller, _Fetch] = {}

    async def models(self, caller: Caller) -> list[ModelEntry]:
        while True:
            entry = self._cached.get(caller)
            if entry is not None and entry[0] > self._clock():
                return entry[1]
            fetch = self._fetching.get(caller)
            if fetch is None:
                return await self._fetch(caller)
            await fetch.finished.wait()
            if fetch.error is not None:
                raise fetch.error
            if fetch.models is not None:
                return fetch.models
            # The fetch was cancelled: go round and make (or wait on) a new one.

    async def _fetch(self, caller: Caller) -> list[ModelEntry]:
        fetch = self._fetching[caller] = _Fetch()
        try:
            fetch.models = await self._client.models(caller)
        except Exception as error:  # shared with the waiters, then raised here as well
            fetch.error = error
            raise
        finally:
            del self._fetching[caller]
            fetch.finished.set()
        if self._ttl > 0:
            self._store(caller, fetch.models)
        return fetch.models

    def _store(self, caller: Caller, models: list[ModelEntry]) -> None:
        now = self._clock()
        for stale in [key for key, (expires, _) in self._cached.items() if expires <= now]:
            del self._cached[stale]
        while len(self._cached) >= MAX_CACHED_CALLERS:
            del self._cached[next(iter(self._cached))]
        self._cached[caller] = (now + self._ttl, models)
