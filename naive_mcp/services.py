"""What a tool handler may use: settings, the upstream client, the model catalogue, the spend guard,
the threads, the jobs."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field

import anyio
import httpx2

from naive_mcp.access import AccessControl, Grant
from naive_mcp.backend import ApiStyle
from naive_mcp.caller import Caller, secret_digest
from naive_mcp.catalog import ModelCatalog
from naive_mcp.client import NaiveClient
from naive_mcp.errors import ArgumentError, ConfigurationError
from naive_mcp.guard import SpendGuard, SpendingPolicy
from naive_mcp.jobs import Jobs
from naive_mcp.keycheck import KeyCheck
from naive_mcp.redaction import Redactor
from naive_mcp.settings import Settings
from naive_mcp.store import EVERYTHING, StoreLocation, UsageScope
from naive_mcp.threads import Threads
from naive_mcp.wire import build_wire_models

logger = logging.getLogger(__name__)


class WarmUp:
    """Work the first call would otherwise pay, done on a worker thread as serving begins, and
    the wait for it: a call that ran beside it would share the CPU with it and take longer than
    waiting (bench/history.md). Never fatal: whatever failed, the first call pays."""

    def __init__(self) -> None:
        self._done: anyio.Event | None = None  # None: none started (services run by hand)

    async def wait(self) -> None:
        """Until the warm-up is over, if one is under way."""
        if self._done is not None:
            await self._done.wait()

    async def run(self, work: Callable[[], None], then: Callable[[], None]) -> None:
        self._done = done = anyio.Event()
        try:
            await anyio.to_thread.run_sync(work)
        except Exception as exc:
            logger.debug("warm-up: %s (the first call does it instead)", type(exc).__name__)
        finally:
            then()
            done.set()


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


@dataclass(frozen=True, slots=True)
class Services:
    settings: Settings
    client: NaiveClient
    catalog: ModelCatalog
    redact: Redactor
    access: AccessControl
    calls: CallsInFlight
    guard: SpendGuard
    threads: Threads
    jobs: Jobs
    # Over JSON-RPC a client that wants progress sends a token; in process a callback is unseen.
    progress_needs_token: bool = False
    # Calls wait for the warm-up `running` starts, rather than run beside it.
    warm_up: WarmUp = field(default_factory=WarmUp)

    @classmethod
    def create(
        cls,
        settings: Settings,
        http: httpx2.AsyncClient | None = None,
        *,
        progress_needs_token: bool = False,
    ) -> Services:
        client = NaiveClient(settings, http)
        catalog = ModelCatalog(client, settings.models_cache_ttl)
        server_key = settings.api_key.get_secret_value() if settings.api_key else None
        redact = Redactor(settings.secrets())
        guard = SpendGuard(
            SpendingPolicy.from_settings(settings),
            StoreLocation.parse(settings.store),
            client,
            catalog,
            server_key,
        )
        return cls(
            settings=settings,
            client=client,
            catalog=catalog,
            redact=redact,
            access=AccessControl(
                settings.auth_tokens,
                client_keys=_key_check(settings, client),
                naive_keys=settings.backend.style is not ApiStyle.OPENROUTER,
            ),
            calls=CallsInFlight(),
            guard=guard,
            threads=Threads(settings, guard.store, redact),
            jobs=Jobs(settings, guard.store, guard.owner),
            progress_needs_token=progress_needs_token,
        )

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """While the server serves: warmed up at once, the store open, this process's lease held,
        jobs run; afterwards the upstream client closed."""
        try:
            async with self.guard.running(), self.jobs.running(), anyio.create_task_group() as tasks:
                tasks.start_soon(self.warm_up.run, self._warm_in_thread, self.guard.open_store)
                yield
        finally:
            await self.client.aclose()

    def _warm_in_thread(self) -> None:
        """What the first call would otherwise pay (~200 ms: SQLAlchemy and the HTTP stack
        imported, the CA bundle loaded, the wire models built); the store opens right after."""
        import naive_mcp.store.store  # noqa: F401  (SQLAlchemy: the store opens right after)

        build_wire_models()
        self.client.warm()

    def caller(self, grant: Grant, user_id: str | None, project_id: str | None) -> Caller:
        """Who a call goes upstream as: the grant's key or the server's, and for each tenant field
        the grant's pin, else the call's own (if the grant lets it name one), else the server's
        default. A call naming what its grant does not allow is refused (`Grant.tenant`)."""
        settings = self.settings
        api_key = self._api_key(grant)
        if api_key is None:
            raise ConfigurationError("no Naive API key is configured, so no call was sent.")
        backend = self.client.backend
        if not backend.typed:
            # Settings refuse tenant defaults and pins here: only a call's own ids can name one.
            for name, value in (("user_id", user_id), ("project_id", project_id)):
                if value is not None:
                    raise ArgumentError(
                        f"{name}: Naive users and projects exist on Naive's typed routes only, and this "
                        f"server's upstream ({settings.shown_base_url}) is {backend.name}. Leave out "
                        f"{name}, or have the operator point NAIVE_BASE_URL at https://api.usenaive.ai."
                    )
        return Caller(
            api_key=api_key,
            user_id=grant.tenant("user_id", user_id, settings.default_user_id),
            project_id=grant.tenant("project_id", project_id, settings.default_project_id),
        )

    def usage_scope(self, grant: Grant) -> UsageScope:
        """What a grant may read of the ledger (naive://usage, generation stats): the calls it
        could have made itself. Over stdio or HTTP without auth, everything; with a configured
        token, the server key's calls with the token's pinned ids and the server's defaults for
        the ids it may not name; with a client's own key, that key's calls."""
        if grant.local:
            return EVERYTHING
        settings = self.settings
        key = self._api_key(grant)
        return UsageScope(
            key_digest=secret_digest(key) if key is not None else "(no key: no call was made)",
            user=grant.sees("user_id", settings.default_user_id),
            project=grant.sees("project_id", settings.default_project_id),
        )

    def _api_key(self, grant: Grant) -> str | None:
        """The key a grant's calls go upstream with: the client's own, else the server's."""
        server_key = self.settings.api_key
        return grant.api_key or (server_key.get_secret_value() if server_key is not None else None)


def _key_check(settings: Settings, client: NaiveClient) -> KeyCheck | None:
    if not settings.client_keys:
        return None
    return KeyCheck(
        client.key_accepted,
        ttl=settings.client_key_cache_ttl,
        size=settings.client_key_cache_size,
        per_minute=settings.client_key_checks_per_minute,
    )
