"""The model catalogue: the upstream's model list, reused for a short while."""

from __future__ import annotations

import time
from collections.abc import Callable

import anyio

from naive_mcp.caller import Caller
from naive_mcp.client import NaiveClient
from naive_mcp.wire import ModelEntry


class ModelCatalog:
    """Serves model listings from a per-caller cache (key, user, project) that lives `ttl` seconds.

    Listings are free upstream but slow and large; an agent choosing a model asks for several
    pages and filters in a row. Concurrent misses for one tenant share one upstream request.
    """

    def __init__(self, client: NaiveClient, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._client = client
        self._ttl = ttl
        self._clock = clock
        self._cached: dict[Caller, tuple[float, list[ModelEntry]]] = {}
        self._locks: dict[Caller, anyio.Lock] = {}

    async def models(self, caller: Caller) -> list[ModelEntry]:
        fresh = self._fresh(caller)
        if fresh is not None:
            return fresh
        lock = self._locks.setdefault(caller, anyio.Lock())
        async with lock:
            fresh = self._fresh(caller)
            if fresh is not None:
                return fresh
            models = await self._client.models(caller)
            if self._ttl > 0:
                self._cached[caller] = (self._clock() + self._ttl, models)
            return models

    def _fresh(self, caller: Caller) -> list[ModelEntry] | None:
        entry = self._cached.get(caller)
        if entry is None or entry[0] <= self._clock():
            return None
        return entry[1]
