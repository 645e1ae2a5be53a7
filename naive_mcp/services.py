"""What a tool handler may use: settings, the upstream client, the model catalogue."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import anyio
import httpx2

from naive_mcp.access import AccessControl, Grant
from naive_mcp.budget import Budget
from naive_mcp.caller import Caller
from naive_mcp.catalog import ModelCatalog
from naive_mcp.client import NaiveClient
from naive_mcp.errors import ArgumentError, ConfigurationError
from naive_mcp.redaction import Redactor
from naive_mcp.settings import Settings
from naive_mcp.usage import UsageLedger

# Long enough for the upstream's stats to appear (about a second), with room to spare.
_RECENT_GENERATION_SECONDS = 300.0


class CallsInFlight:
    """Counts the tool calls under way, so that a shutdown can let them finish first."""

    def __init__(self) -> None:
        self._count = 0
        self._idle = anyio.Event()
        self._idle.set()

    @property
    def count(self) -> int:
        return self._count

    @contextmanager
    def track(self) -> Iterator[None]:
        self._count += 1
        self._idle = anyio.Event() if self._count == 1 else self._idle
        try:
            yield
        finally:
            self._count -= 1
            if self._count == 0:
                self._idle.set()

    async def wait_idle(self) -> None:
        await self._idle.wait()


class RecentGenerations:
    """The generation ids this server got back lately: the ones whose stats may lag a moment.

    Ids are kept in the order they came (a dict keeps insertion order, and the clock only moves
    forward), so expiring is popping from the front: O(1) a call, however many are kept. At most
    `limit` are kept; past it the oldest go first (a lookup for one of them just does not wait).
    """

    def __init__(
        self, window: float, clock: Callable[[], float] = time.monotonic, limit: int = 10_000
    ) -> None:
        self._window = window
        self._clock = clock
        self._limit = limit
        self._seen: dict[str, float] = {}

    def add(self, generation_id: str) -> None:
        now = self._clock()
        self._seen.pop(generation_id, None)
        self._seen[generation_id] = now
        cutoff = now - self._window
        while self._seen:
            oldest, when = next(iter(self._seen.items()))
            if when >= cutoff and len(self._seen) <= self._limit:
                break
            del self._seen[oldest]

    def __contains__(self, generation_id: str) -> bool:
        when = self._seen.get(generation_id)
        return when is not None and when >= self._clock() - self._window

    def __len__(self) -> int:
        return len(self._seen)


@dataclass(frozen=True, slots=True)
class Services:
    settings: Settings
    client: NaiveClient
    catalog: ModelCatalog
    redact: Redactor
    access: AccessControl
    calls: CallsInFlight
    recent_generations: RecentGenerations
    budget: Budget
    usage: UsageLedger
    # Over JSON-RPC a client that wants progress sends a token; in process a callback is unseen.
    progress_needs_token: bool = False

    @classmethod
    def create(
        cls,
        settings: Settings,
        http: httpx2.AsyncClient | None = None,
        *,
        usage: UsageLedger | None = None,
        progress_needs_token: bool = False,
    ) -> Services:
        client = NaiveClient(settings, http)
        return cls(
            settings=settings,
            client=client,
            catalog=ModelCatalog(client, settings.models_cache_ttl),
            redact=Redactor(settings.secrets()),
            access=AccessControl(settings.auth_tokens, client_keys=settings.client_keys),
            calls=CallsInFlight(),
            recent_generations=RecentGenerations(window=_RECENT_GENERATION_SECONDS),
            budget=Budget(settings),
            usage=usage if usage is not None else UsageLedger(),
            progress_needs_token=progress_needs_token,
        )

    def caller(self, grant: Grant, user_id: str | None, project_id: str | None) -> Caller:
        """Who a call goes upstream as: the grant's key or the server's, and the grant's pinned
        tenant, else the call's own, else the server's defaults."""
        api_key = grant.api_key or (
            self.settings.api_key.get_secret_value() if self.settings.api_key else None
        )
        if api_key is None:
            raise ConfigurationError("no Naive API key is configured, so no call was sent.")
        return Caller(
            api_key=api_key,
            user_id=_pinned("user_id", grant.user_id, user_id) or self.settings.default_user_id,
            project_id=_pinned("project_id", grant.project_id, project_id)
            or self.settings.default_project_id,
        )


def _pinned(field: str, pinned: str | None, asked: str | None) -> str | None:
    if pinned is not None and asked is not None and asked != pinned:
        raise ArgumentError(
            f"Invalid arguments:\n- {field}: this connection's token is pinned to another Naive "
            f"{field.removesuffix('_id')}; leave {field} out"
        )
    return pinned or asked
