"""The spend guard: nothing that spends reaches the upstream without a reservation that fits
every cap, and every call that did ends in exactly one ledger row.

    async with guard.spending(caller, body) as spend:
        completion = await client.generate("chat", body, caller, on_chunk=spend.saw)
        spend.answered(completion)

1. Allowed models (NAIVE_ALLOWED_MODELS); then, under any credit cap, the call's worst case: all
   it sends as input (counted generously, fees included: estimate.py) and `max_tokens` of output
   at the dearest model of its fallback chain, at the credits-per-USD rate answered calls have
   shown (the costly end of the documented range, NAIVE_CREDITS_PER_USD, until one has). A model
   the list prices at 0 or not at all is admitted only if NAIVE_FREE_MODELS names it, one call at
   a time until one has answered at 0 credits, and not again once it has billed. No call holds
   more output than its model's context. A call without `max_tokens` is sent with NAIVE_CAPPED_MAX_TOKENS
   (less if the model's longest output, or a quarter of what a shared cap has left, is less: one
   such call cannot hold a whole cap), and is told so. While it streams, a call whose output
   passes what was reserved for it is stopped there.
2. Reserve that worst case in the store, atomically, on every cap row of the call (total,
   tenant, key; all time, UTC day, UTC month). A call that fits only once calls in flight settle
   waits for them, up to NAIVE_CAP_WAIT seconds; a refusal names the cap, the numbers, what
   calls in flight hold and when the cap's period resets.
Amounts are counted in the backend's unit (`Backend.unit`): Naive credits on Naive's typed routes,
whose answers report them (a cap set in USD is converted at the learned rate); USD where nothing
reports credits (Naive's proxy, OpenRouter), at a rate of 1, with the balance read from the key's
remaining limit (`NaiveClient.balance`). Below, "credits" is that unit.

3. Settle on every way out: answered (the upstream's credits), failed before any token (nothing),
   cut off or cancelled (from the generation's stats once the upstream has them, when its id
   is known; the worst case when not). The hold is in the store from before the call, with the
   generation id as soon as the first chunk names it, under this process's lease: if the process
   dies, another settles it the same way when the lease runs out.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

import anyio
from anyio.abc import TaskGroup

from naive_mcp.backend import Unit
from naive_mcp.caller import Caller
from naive_mcp.catalog import ModelCatalog
from naive_mcp.client import NaiveClient
from naive_mcp.errors import (
    ConfigurationError,
    NaiveError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from naive_mcp.estimate import (
    Prices,
    SpendingRefused,
    amount,
    chain_prices,
    check_allowed,
    input_usd,
    model_chain,
    output_budget,
    output_tokens_at_least,
)
from naive_mcp.settings import Settings
from naive_mcp.store import (
    CallRecord,
    CallResult,
    CapRow,
    Figures,
    OpenHold,
    Outcome,
    StoreLocation,
    UsageScope,
)
from naive_mcp.usage import usage_summary
from naive_mcp.wire import ChatCompletion

if TYPE_CHECKING:
    from naive_mcp.store.store import Store
    from naive_mcp.streaming import ChatStream

logger = logging.getLogger(__name__)

Period = Literal["all", "day", "month"]
# Failures that come before the upstream generated anything: nothing was spent.
NOTHING_GENERATED = (UpstreamError, UpstreamUnreachable, UpstreamTimeout, UpstreamProtocolError)
# A call waiting for room under a cap looks again this often (sooner when a call here settles).
_WAIT_POLL_SECONDS = 0.1
# A server nobody calls opens its store (and settles what dead processes left) this long after
# start.
_OPEN_AFTER_SECONDS = 2.0
# A generation's stats appear about a second after it ends (naive-api.md): asking sooner only
# earns 404s, each a request competing with the calls being served.
_STATS_APPEAR_SECONDS = 0.5
# Where answers carry no balance (OpenRouter), it is asked for again when the last is this old.
_BALANCE_FRESH_SECONDS = 60.0
# Whether a generation id was handed out lately enough that its stats may still be on the way.
RECENT_GENERATION_SECONDS = 300.0
# A call without max_tokens may hold at most this share of what a shared cap (total, tenant,
# balance floor) has left, so that others still fit beside it; give max_tokens to take more.
UNASKED_SHARE = 0.25
# More output tokens than any call may ask for (chat's max_tokens is at most 2,000,000).
_MOST_TOKENS = 10**9


@dataclass(frozen=True, slots=True)
class Limit:
    """An amount an operator set, in the unit its setting names."""

    amount: float
    unit: Unit
    setting: str

    def shown(self, *, word: bool = False) -> str:
        return shown_amount(self.amount, self.unit, word=word)


@dataclass(frozen=True, slots=True)
class Cap(Limit):
    scope: Literal["total", "tenant"] = "total"
    period: Period = "all"


def shown_amount(amount: float, unit: Unit, digits: str = "g", *, word: bool = False) -> str:
    """`$0.5` in USD; `0.5`, or with `word` `0.5 credits`, in credits."""
    if unit == "USD":
        return f"${amount:{digits}}"
    return f"{amount:{digits}} credits" if word else f"{amount:{digits}}"


@dataclass(frozen=True, slots=True)
class SpendingPolicy:
    """What the operator set for spending (the spending group of the settings)."""

    allowed_models: tuple[str, ...] = ()
    free_models: tuple[str, ...] = ()
    capped_max_tokens: int = 4096
    unit: Unit = "credits"  # what the store counts in: the backend's
    max_call: tuple[Limit, ...] = ()
    caps: tuple[Cap, ...] = ()
    min_remaining: tuple[Limit, ...] = ()
    assumed_rate: float = 25.0
    cap_wait: float = 10.0
    lease_seconds: float = 30.0
    settle_wait: float = 5.0

    @classmethod
    def from_settings(cls, settings: Settings) -> SpendingPolicy:
        periods: tuple[tuple[Period, str], ...] = (("all", ""), ("day", "_PER_DAY"), ("month", "_PER_MONTH"))
        scopes: tuple[Literal["total", "tenant"], ...] = ("total", "tenant")
        units: tuple[tuple[Unit, str], ...] = (("credits", "CREDITS"), ("USD", "USD"))

        def limit(name: str, unit: Unit) -> Limit | None:
            value = getattr(settings, name.lower())
            return None if value is None else Limit(value, unit, f"NAIVE_{name}")

        caps = [
            Cap(value, unit, f"NAIVE_MAX_{scope.upper()}_{word}{suffix}", scope=scope, period=period)
            for unit, word in units
            for scope in scopes
            for period, suffix in periods
            if (value := getattr(settings, f"max_{scope}_{word}{suffix}".lower())) is not None
        ]
        return cls(
            allowed_models=tuple(settings.allowed_models),
            free_models=tuple(settings.free_models),
            capped_max_tokens=settings.capped_max_tokens,
            unit=settings.backend.unit,
            max_call=tuple(c for unit, word in units if (c := limit(f"MAX_CALL_{word}", unit))),
            caps=tuple(caps),
            min_remaining=tuple(f for unit, word in units if (f := limit(f"MIN_{word}_REMAINING", unit))),
            assumed_rate=settings.credits_per_usd,
            cap_wait=settings.cap_wait,
            lease_seconds=settings.store_lease,
            settle_wait=settings.generation_wait,
        )

    @property
    def needs_prices(self) -> bool:
        """Whether admitting a call needs the models' prices (any credit cap is set)."""
        return bool(self.caps or self.max_call or self.min_remaining)

    def in_unit(self, limit: Limit, rate: float) -> float:
        """`limit` in the store's unit: a USD limit on a store counting credits, at `rate`
        credits per USD (a credit limit where nothing reports credits is refused by the settings)."""
        return limit.amount * rate if limit.unit != self.unit else limit.amount

    def shown(self, amount: float, *, word: bool = False) -> str:
        """An amount the store counts, for a message."""
        return shown_amount(amount, self.unit, ".6g", word=word)


@dataclass
class Spend:
    """One admitted call, as its method sees it."""

    _guard: SpendGuard = field(repr=False)
    call: CallRecord
    credits: float  # held
    notes: list[str] = field(default_factory=list)
    # Output tokens (max_tokens and reasoning) the hold covers; None: no credit cap, no limit.
    output_tokens: int | None = None
    prices: Prices | None = None
    generation_id: str | None = None
    completion: ChatCompletion | None = None
    # Models admitted as free that this call tries first (SpendGuard._take_free_turn).
    free_trial: tuple[str, ...] = ()
    settled: bool = False

    def saw(self, stream: ChatStream) -> None:
        """A chunk arrived. Write the generation's id to the hold, once, in the background; stop
        the call (an IncompleteAnswer that keeps what arrived, which closes the upstream
        connection) once its output passes what was reserved for it."""
        if stream.generation_id is not None and self.generation_id is None:
            self.generation_id = stream.generation_id
            self._guard.in_background(self._guard.note, self.call.call_id, self.generation_id, None)
        if self.output_tokens is None:
            return
        seen = output_tokens_at_least(stream.output_pieces, stream.output_bytes)
        if seen > self.output_tokens:
            logger.warning(
                "call %s: the upstream answered past the %d output tokens reserved (at least %d): stopped",
                self.call.call_id,
                self.output_tokens,
                seen,
            )
            raise stream.broken(
                "spending_cap",
                f"the upstream kept answering past the {self.output_tokens} output tokens reserved for "
                f"this call (max_tokens and any reasoning budget), so it was stopped after at least {seen}; "
                "it is settled at what the upstream bills. The model does not honour max_tokens: give a "
                "larger max_tokens if the answer needs more, or choose another model",
            )

    def answered(self, completion: ChatCompletion) -> None:
        self.completion = completion


class _Refusal(Exception):
    def __init__(self, error: SpendingRefused, *, waitable: bool, needed: float = 0.0) -> None:
        self.error = error
        self.waitable = waitable
        self.needed = needed  # what the call (or set) could cost


class SpendGuard:
    def __init__(
        self,
        policy: SpendingPolicy,
        location: StoreLocation,
        client: NaiveClient,
        catalog: ModelCatalog,
        server_key: str | None,
    ) -> None:
        self._policy = policy
        self._location = location
        self._client = client
        self._catalog = catalog
        self._server_key = server_key
        self.owner = uuid.uuid4().hex  # this process's lease
        self._store: Store | None = None
        self._store_error: NaiveError | None = None
        self._ready = anyio.Event()
        self._wanted = anyio.Event()  # a call needs the store: open it now
        self._tasks: TaskGroup | None = None
        self._settled = anyio.Event()  # set (and replaced) whenever a call here settles
        self._rate: float | None = None
        # Models admitted as free that billed all the same, with what they billed: refused from then on.
        self._billed_free: dict[str, float] = {}
        # Models admitted as free: with a call on trial now, and seen to answer at 0 credits.
        self._trying_free: set[str] = set()
        self._proven_free: set[str] = set()
        # Settles the store refused, to try again: (call, result, balance, rate sample).
        self._unsettled: list[tuple[CallRecord, CallResult, float | None, tuple[float, float] | None]] = []

    # --- running: the store, the lease, the sweep --------------------------------------------

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Open the store (in the background: tools can be listed meanwhile), hold this process's
        lease, settle the holds of processes that died, and, on the way out, finish the settling
        under way, log the usage ledger in a line (what was settled at the stop counted), and give
        the lease back."""
        try:
            async with anyio.create_task_group() as tasks:
                self._tasks = tasks
                keeper = anyio.CancelScope()

                async def keep() -> None:
                    with keeper:
                        await self._keep()

                tasks.start_soon(keep)
                try:
                    yield
                finally:
                    keeper.cancel()
        finally:
            self._tasks = None
            if self._store is not None:
                with anyio.CancelScope(shield=True):
                    await self._log_usage(self._store)
                    await self._store.drop_lease(self.owner)
                    await self._store.aclose()

    @staticmethod
    async def _log_usage(store: Store) -> None:
        try:
            logger.info("usage: %s", await usage_summary(store))
        except Exception as exc:  # the store is away: stopping matters more than the line
            logger.warning("usage: not available (%s)", type(exc).__name__)

    @property
    def store_is_open(self) -> bool:
        """Whether the store is open now (without asking for it, as `store()` does)."""
        return self._store is not None

    def open_store(self) -> None:
        """Open the store now (the warm-up is over), not when a call first needs it."""
        self._wanted.set()

    async def _keep(self) -> None:
        # Opened when the warm-up is over (`open_store`), when a call first needs it, or shortly
        # after start: not before the server's first answers (loading SQLAlchemy costs start-up
        # time), but soon enough to settle what a dead process left.
        with anyio.move_on_after(_OPEN_AFTER_SECONDS):
            await self._wanted.wait()
        try:
            from naive_mcp.store.store import Store  # SQLAlchemy loads here, not at start-up

            store = await Store.open(self._location)
            try:
                await store.renew_lease(self.owner, self._policy.lease_seconds)
                self._rate = await store.rate()
            except Exception as exc:  # opened, but not usable (e.g. a role that may only read)
                await store.aclose()
                raise ConfigurationError(
                    f"cannot use the store at {self._location.shown}: {type(exc).__name__}", kind="bad_store"
                ) from exc
        except NaiveError as error:
            self._store_error = error
            logger.error("%s", error.message)
            return
        finally:
            self._ready.set()
        self._store = store
        logger.info("store: %s (%s)", self._location.shown, self._location.kind)
        # The lease is renewed on its own: a long sweep (stats that are slow to come) must not
        # let it lapse, or another process would take this one's live calls for dead.
        async with anyio.create_task_group() as keeping:
            keeping.start_soon(self._renew_lease, store)
            every = self._policy.lease_seconds / 3
            while True:
                await self._sweep(store)
                await self._retry_settles(store)
                await anyio.sleep(every)

    async def _renew_lease(self, store: Store) -> None:
        every = self._policy.lease_seconds / 3
        while True:
            await anyio.sleep(every)
            try:
                await store.renew_lease(self.owner, self._policy.lease_seconds)
            except Exception as exc:  # the database is away: keep serving, try again next round
                logger.warning("could not renew this process's lease in the store: %s", type(exc).__name__)

    async def _retry_settles(self, store: Store) -> None:
        """Settles that failed (the store was away) are tried again, until they are written."""
        failed, self._unsettled = self._unsettled, []
        for call, result, balance, rate_sample in failed:
            await self._settle(store, call, result, balance=balance, rate_sample=rate_sample)

    async def store(self) -> Store:
        self._wanted.set()
        await self._ready.wait()
        if self._store is None:
            raise self._store_error or ConfigurationError("the store is not open", kind="bad_store")
        return self._store

    def store_now(self) -> Store:
        assert self._store is not None, "used before the store was open"
        return self._store

    def in_background(self, fn: Any, *args: Any, **kwargs: Any) -> None:
        assert self._tasks is not None, "SpendGuard.running() is not entered"
        self._tasks.start_soon(lambda: fn(*args, **kwargs))

    async def note(self, call_id: str, generation_id: str | None, ending: Outcome | None) -> None:
        """Write to a call's hold what its settler needs. The store being away costs only that:
        never the call (it runs in the background, or while the call's own error is raised)."""
        try:
            await self.store_now().note(call_id, generation_id=generation_id, ending=ending)
        except Exception as exc:
            logger.warning("could not note call %s in the store: %s", call_id, type(exc).__name__)

    async def made_lately(self, generation_id: str) -> bool:
        return await (await self.store()).made_lately(generation_id, RECENT_GENERATION_SECONDS)

    async def made_within(self, generation_id: str, scope: UsageScope) -> bool:
        """Whether a call of those `scope` may see got `generation_id` back through this store."""
        return await (await self.store()).made_within(generation_id, scope)

    # --- admitting calls: one, or a set that is admitted whole ---------------------------------

    @asynccontextmanager
    async def spending(self, caller: Caller, body: dict[str, Any]) -> AsyncIterator[Spend]:
        """Admit the call (or raise SpendingRefused), yield it, settle it however it ends.
        May set body["max_tokens"]."""
        spend = await self.admit(caller, body)
        async with self.settling(spend, caller):
            yield spend

    @asynccontextmanager
    async def settling(self, spend: Spend, caller: Caller) -> AsyncIterator[Spend]:
        """Settle an admitted call however the block ends: with its error, if it raises one."""
        try:
            yield spend
        except BaseException as exc:
            with anyio.CancelScope(shield=True):
                await self.settle(spend, caller, exc)
            raise
        with anyio.CancelScope(shield=True):
            await self.settle(spend, caller)

    @asynccontextmanager
    async def spending_all(
        self, caller: Caller, bodies: Sequence[dict[str, Any]]
    ) -> AsyncIterator[list[Spend]]:
        """Admit a set of calls whole (`admit_all`) and yield them, each to be settled on its own
        (`settling`) as it ends; one the block never settled (cancelled before it began) is
        settled as the block ends."""
        spends = await self.admit_all(caller, bodies)
        try:
            yield spends
        except BaseException as exc:
            with anyio.CancelScope(shield=True):
                for spend in spends:
                    await self.settle(spend, caller, exc)
            raise
        with anyio.CancelScope(shield=True):
            for spend in spends:
                await self.settle(spend, caller)

    async def admit(self, caller: Caller, body: dict[str, Any]) -> Spend:
        """Reserve the call's worst case in the store, or raise SpendingRefused (after waiting up to
        NAIVE_CAP_WAIT for calls in flight, when only they stand in the way)."""
        (spend,) = await self.admit_all(caller, [body])
        return spend

    async def admit_all(self, caller: Caller, bodies: Sequence[dict[str, Any]]) -> list[Spend]:
        """Admit several calls of one caller together (`llm.compare`'s set): all of them, in one
        reservation, or none (SpendingRefused, naming what the set could cost, the limit, what is
        left and which of its models would fit). Each call's worst case is decided on the figures
        as the calls before it raised them. One body is one call: `admit`. May set each
        body's max_tokens; each call is then settled on its own (`settle`, `settling`)."""
        policy = self._policy
        for body in bodies:
            check_allowed(body, policy.allowed_models)
        store = await self.store()
        if policy.unit == "USD" and policy.min_remaining:
            await self._refresh_balance(store, caller, policy.min_remaining[0])
        prices: list[Prices | None] = [None] * len(bodies)
        if policy.needs_prices:
            listed = await self._catalog.models(caller)
            for index, body in enumerate(bodies):
                self._check_not_billed_free(model_chain(body))
                prices[index] = chain_prices(body, listed, policy.free_models)
        started = time.time()
        calls = [new_call(caller, str(body["model"]), started) for body in bodies]
        trials = [self._untried_free(price) for price in prices]
        taken: list[tuple[str, ...]] = []
        try:
            # In one order (a set's models are distinct): two sets never wait on each other's turn.
            for trial in sorted(trial for trial in trials if trial):
                await self._take_free_turn(store, calls, trial)
                taken.append(trial)
            spends = await self._admit(store, calls, caller, bodies, prices)
        except BaseException:
            for trial in taken:
                self._trying_free.difference_update(trial)
            raise
        for spend, trial in zip(spends, trials, strict=True):
            spend.free_trial = trial
        return spends

    async def _refresh_balance(self, store: Store, caller: Caller, floor: Limit) -> None:
        """Where answers carry no balance, ask the upstream for the key's (`NaiveClient.balance`)
        when the store's is older than _BALANCE_FRESH_SECONDS; in between, each settled call
        takes what it cost off the last one."""
        seen = await store.balance(caller.key_digest)
        if seen is not None and time.time() - seen[1] < _BALANCE_FRESH_SECONDS:
            return
        balance = await self._client.balance(caller)
        if balance is None:
            raise SpendingRefused(
                f"{floor.setting} is set, but {self._client.backend.name} gives no balance for this key "
                "(its GET /key has no limit, and GET /credits is not readable with it). Give the key a "
                f"credit limit upstream, or ask the operator to unset {floor.setting} and cap spending "
                "with NAIVE_MAX_TOTAL_USD instead."
            )
        await store.set_balance(caller.key_digest, balance)

    def _untried_free(self, prices: Prices | None) -> tuple[str, ...]:
        """The models of a call priced at 0 in all that have not yet answered at 0 credits here."""
        if prices is None or not prices.free:
            return ()
        return tuple(model for model in prices.free_models if model not in self._proven_free)

    async def _take_free_turn(
        self, store: Store, calls: Sequence[CallRecord], trial: tuple[str, ...]
    ) -> None:
        """A model admitted as free (NAIVE_FREE_MODELS) runs one call at a time until one has
        answered at 0 credits: a price of 0 may be a gap in the list, and calls reserved at 0 in
        parallel would each bill past every cap before the first had settled. Waits up to
        NAIVE_CAP_WAIT for the call on trial, else refuses (with a ledger row for each of `calls`,
        the set this call is of)."""
        deadline = anyio.current_time() + self._policy.cap_wait
        while busy := [model for model in trial if model in self._trying_free]:
            left = deadline - anyio.current_time()
            if left <= 0:
                await self._record_refused(store, calls)
                raise SpendingRefused(
                    f"{busy[0]!r} is admitted as free (NAIVE_FREE_MODELS) but has not yet answered at 0 "
                    "credits on this server, so under its spending caps one call to it runs at a time "
                    "until one has, and one is in flight. Try again when it has finished, or choose a "
                    "priced model (naive_llm_models sort=price)."
                )
            with anyio.move_on_after(min(left, _WAIT_POLL_SECONDS)):
                await self._settled.wait()
            try:
                self._check_not_billed_free(trial)  # the call on trial billed
            except SpendingRefused:
                await self._record_refused(store, calls)
                raise
        self._trying_free.update(trial)

    def _end_free_trial(self, spend: Spend, credits: float | None) -> None:
        """The call on trial is over: answered at 0 credits (`credits`), its models are free."""
        if not spend.free_trial:
            return
        self._trying_free.difference_update(spend.free_trial)
        if credits is not None and credits <= _NOTHING:
            self._proven_free.update(spend.free_trial)
        spend.free_trial = ()

    def _check_not_billed_free(self, models: Sequence[str]) -> None:
        for model in models:
            if model in self._billed_free:
                raise SpendingRefused(
                    f"{model!r} is listed free but billed {self._billed_free[model]:.6g} credits on an "
                    "earlier call, so this server no longer admits it under its spending caps (until it "
                    "restarts). "
                    "Choose a priced model (naive_llm_models sort=price); the operator may remove it from "
                    "NAIVE_FREE_MODELS."
                )

    async def settle(self, spend: Spend, caller: Caller, error: BaseException | None = None) -> None:
        """The call is over: `error` is how it failed, if it did. Once: a call settled already
        is left as it is."""
        if spend.settled:
            return
        spend.settled = True
        store = self.store_now()
        if error is None and spend.completion is not None:
            await self._settle_answered(store, spend, spend.completion)
            return
        self._end_free_trial(spend, None)
        if isinstance(error, NOTHING_GENERATED):
            await self._settle(store, spend.call, CallResult("failed", 0.0, credits_reported=False))
        else:
            cancelled = isinstance(error, anyio.get_cancelled_exc_class())
            await self._settle_unfinished(store, spend, caller, "cancelled" if cancelled else "cut_off")

    async def _admit(
        self,
        store: Store,
        calls: Sequence[CallRecord],
        caller: Caller,
        bodies: Sequence[dict[str, Any]],
        prices: Sequence[Prices | None],
    ) -> list[Spend]:
        rows = cap_rows(caller, datetime.fromtimestamp(calls[0].started_at, UTC), self._policy.unit)
        chosen: list[dict[str, Any]] = [{} for _ in calls]
        before: list[Figures] = []  # the figures before the set: what a refusal is explained by
        held: list[float] = []  # by the calls of the set decided so far

        def decide(index: int, figures: Figures) -> float:
            chosen[index].clear()
            if index == 0:
                before[:], held[:] = [figures], []
                self._rate = figures.rate or self._rate
            price = prices[index]
            if price is None:  # no credit cap: nothing to hold, but the hold row is written
                held.append(0.0)
                return 0.0
            try:
                credits = self._worst_case(
                    figures, caller, bodies[index], price, rows, chosen[index], own=sum(held)
                )
            except _Refusal as refusal:
                if len(calls) == 1:
                    raise
                raise self._set_refusal(before[0], caller, bodies, prices, rows, refusal, index) from None
            held.append(credits)
            return credits

        deadline = anyio.current_time() + self._policy.cap_wait
        while True:
            try:
                with anyio.CancelScope(shield=True):  # once written, the holds are settled by the caller
                    credits = await store.reserve(calls, self.owner, rows, decide)
                break
            except _Refusal as refusal:
                left = deadline - anyio.current_time()
                if not refusal.waitable or left <= 0:
                    await self._record_refused(store, calls)
                    raise refusal.error from None
                with anyio.move_on_after(min(left, _WAIT_POLL_SECONDS)):
                    await self._settled.wait()
        spends: list[Spend] = []
        for call, amount_held, body, price, choice in zip(
            calls, credits, bodies, prices, chosen, strict=True
        ):
            spend = Spend(self, call, amount_held, prices=price, output_tokens=choice.get("output_tokens"))
            if "max_tokens" in choice:
                body["max_tokens"] = choice["max_tokens"]
                spend.notes.append(choice["note"])
            spends.append(spend)
        return spends

    async def _record_refused(self, store: Store, calls: Sequence[CallRecord]) -> None:
        """A ledger row for each call refused (a set's every call: none of them was sent)."""
        for call in calls:
            await store.record(call, self._counted(CallResult("refused", 0.0, credits_reported=False)))

    def _worst_case(
        self,
        figures: Figures,
        caller: Caller,
        body: dict[str, Any],
        prices: Prices,
        rows: Sequence[CapRow],
        chosen: dict[str, Any],
        *,
        own: float = 0.0,
        check: bool = True,
    ) -> float:
        """The call's worst case in credits, if it fits every cap now; else a _Refusal that says
        whether it would fit once the calls in flight settle. `own`: what the calls of its set
        decided before it hold (they are in `figures` already). Not `check`: the worst case,
        whether it fits or not."""
        rate = self._rate_of(figures)
        input_credits = input_usd(body, prices) * rate
        per_token = prices.completion * rate
        rooms = self._rooms(figures, caller, rows, own=own)
        room = min(rooms, key=lambda r: r.left)
        max_tokens, thinking = output_budget(body)
        if max_tokens is None:
            max_tokens = self._unasked_max_tokens(rooms, input_credits, per_token, thinking, prices, chosen)
        # No model writes past its context: a max_tokens beyond it holds no more than the context.
        output = max_tokens + thinking
        if prices.context_length is not None:
            output = min(output, prices.context_length)
        worst = input_credits + per_token * output
        if check and worst > room.left:
            raise self._refusal(rooms, room, worst)
        chosen["output_tokens"] = output
        return worst

    def _set_refusal(
        self,
        figures: Figures,
        caller: Caller,
        bodies: Sequence[dict[str, Any]],
        prices: Sequence[Prices | None],
        rows: Sequence[CapRow],
        refusal: _Refusal,
        index: int,
    ) -> _Refusal:
        """The refusal of a set of calls that do not all fit (`refusal`: its call `index`'s), told
        from `figures` as they were before the set: what the calls could cost together, the limit
        that stops them, what is left under it, and which of the set's models would fit."""
        models = [str(body["model"]) for body in bodies]
        needs: list[float] = []
        for body, price in zip(bodies, prices, strict=True):
            if price is None:
                needs.append(0.0)
                continue
            try:
                needs.append(self._worst_case(figures, caller, body, price, rows, {}, check=False))
            except _Refusal as alone:  # without max_tokens, not one token fits a share of a cap
                needs.append(alone.needed)
        rooms = self._rooms(figures, caller, rows)
        shown = self._policy.shown
        for model, need in zip(models, needs, strict=True):
            for room in rooms:  # a limit per call holds each call of the set alone
                if not room.shared and need > room.left:
                    return self._refusal(rooms, room, need, what=f"of this set, the call to {model!r}")
        shared = [room for room in rooms if room.shared]
        total = sum(needs)
        tightest = min(shared, key=lambda r: r.left) if shared else None
        if tightest is None or total <= tightest.left:
            # Not the sum but one call's own rule (no max_tokens: a share of a cap): say that one.
            message = f"of this set, the call to {models[index]!r}: {refusal.error.message}"
            return _Refusal(SpendingRefused(message), waitable=refusal.waitable)
        fitting: list[str] = []
        used = 0.0
        for model, need in zip(models, needs, strict=True):
            if used + need <= tightest.left:
                fitting.append(model)
                used += need
        each = ", ".join(f"{model} {shown(need)}" for model, need in zip(models, needs, strict=True))
        if len(fitting) >= 2:
            fits = f"These {len(fitting)} fit together now: {', '.join(fitting)} (up to {shown(used)})."
        elif fitting:
            fits = f"Only {fitting[0]} fits now (up to {shown(used)}), and a comparison needs two."
        else:
            fits = "Not one of them fits now."
        setting = tightest.label.split(" ", 1)[0]
        change = "lower" if setting.startswith("NAIVE_MIN_") else "raise"
        if tightest.blocked:
            limit = f"{tightest.label}; try again when the call in flight on this key has finished."
        else:
            limit = f"more than {tightest.label} allows."
        message = (
            f"these {len(bodies)} calls could cost up to {shown(total, word=True)} together ({each}), "
            f"{limit} A set is admitted whole or not at all. {fits} Compare fewer or cheaper models "
            f"(naive_llm_models sort=price), lower max_tokens or shorten the prompt; or ask the operator "
            f"to {change} {setting}."
        )
        lendable = [(r.left + r.held) >= total or (r.blocked and r.held > 0) for r in rooms]
        waitable = all(lendable) and any(r.held > 0 for r in rooms)
        return _Refusal(SpendingRefused(message), waitable=waitable, needed=total)

    def _unasked_max_tokens(
        self,
        rooms: list[_Room],
        input_credits: float,
        per_token: float,
        thinking: int,
        prices: Prices,
        chosen: dict[str, Any],
    ) -> int:
        """The max_tokens a call that gave none is sent with: NAIVE_CAPPED_MAX_TOKENS, or the model's
        longest output, or what fits in the call's own cap and a share of what each shared cap has
        left, whichever is least. Noted in `chosen`, or a _Refusal if not one token fits."""
        policy = self._policy
        longest, why = policy.capped_max_tokens, "NAIVE_CAPPED_MAX_TOKENS"
        if prices.max_output is not None and prices.max_output < longest:
            longest, why = prices.max_output, "the longest output the model list gives"
        room = min(rooms, key=lambda r: r.lendable)
        fits = _tokens_within(room.lendable - input_credits, per_token, longest + thinking) - thinking
        if fits < 1:
            least = input_credits + per_token * (1 + thinking)
            whole = min(rooms, key=lambda r: r.left)
            if whole.left < least:
                raise self._refusal(rooms, whole, least)
            asked = _tokens_within(whole.left - input_credits, per_token, _MOST_TOKENS) - thinking
            raise self._refusal(
                rooms,
                room,
                least,
                unasked=f"this call gives no max_tokens, and a call without one may hold at most a quarter "
                f"of what is left under {room.label}: not one token of output. Give max_tokens (up to "
                f"{asked} fit now), shorten the prompt or choose a cheaper model (naive_llm_models "
                "sort=price); or ask the operator to raise it.",
            )
        if fits < longest:
            share = "a quarter of what is left under " if room.shared else ""
            chosen.update(max_tokens=fits, note=f"max_tokens set to {fits} to fit {share}{room.label}")
            return fits
        note = (
            f"max_tokens set to {longest} ({why}): under a spending cap every call is bounded; "
            "give max_tokens to choose"
        )
        chosen.update(max_tokens=longest, note=note)
        return longest

    def _rooms(
        self, figures: Figures, caller: Caller, rows: Sequence[CapRow], *, own: float = 0.0
    ) -> list[_Room]:
        """What is left under each limit. `own`: what the calls of this call's set decided before
        it hold: while the balance is not known, a set counts as one call."""
        policy = self._policy
        rate = self._rate_of(figures)
        rooms = [_Room(math.inf, "", 0.0, shared=False)]
        for limit in policy.max_call:
            rooms.append(
                _Room(
                    policy.in_unit(limit, rate),
                    f"{limit.setting} ({limit.shown(word=True)} per call)",
                    0.0,
                    shared=False,
                )
            )
        for cap in policy.caps:
            row = rows[_ROW_INDEX[cap.scope, cap.period]]
            spent, held = _figure(figures.rows.get(row))
            left = policy.in_unit(cap, rate) - spent - held
            whose = f" for {caller.tenant}" if cap.scope == "tenant" else ""
            rooms.append(
                _Room(
                    left,
                    f"{cap.setting} ({cap.shown()}{whose}{_PER[cap.period]}; {policy.shown(max(left, 0))} "
                    f"left, {policy.shown(held)} held by calls in flight{_resets(cap.period, row[1])})",
                    held,
                )
            )
        for floor in policy.min_remaining:
            held = _figure(figures.rows.get(rows[_ROW_INDEX["key", "all"]]))[1]
            if figures.balance is None:
                if held - own > _NOTHING:
                    # The balance comes with the first answer on a key: until then, one call at a time.
                    rooms.append(
                        _Room(
                            -math.inf,
                            f"{floor.setting} (the balance is not known yet: the first answer "
                            "on this key reports it)",
                            held,
                            blocked=True,
                        )
                    )
            else:
                left = figures.balance - held - policy.in_unit(floor, rate)
                rooms.append(
                    _Room(
                        left,
                        f"{floor.setting} ({floor.shown()}; balance {policy.shown(figures.balance)}, "
                        f"{policy.shown(held)} held by calls in flight)",
                        held,
                    )
                )
        return rooms

    def _counted(self, result: CallResult) -> CallResult:
        """`result`, saying the unit its amount is in (the ledger keeps credits only as credits)."""
        return replace(result, counted_in=self._policy.unit)

    def _rate_of(self, figures: Figures) -> float:
        """Credits per USD for this reservation: 1 where the store counts USD."""
        if self._policy.unit == "USD":
            return 1.0
        return figures.rate or self._policy.assumed_rate

    def _refusal(
        self,
        rooms: list[_Room],
        room: _Room,
        needed: float,
        *,
        unasked: str | None = None,
        what: str = "this call",
    ) -> _Refusal:
        """The refusal of a call (`what`) that needs `needed` credits where `room` is the tightest
        limit; `unasked`, for a call without max_tokens that a share of a shared cap cannot hold,
        says what to do instead."""

        def fits_once_settled(r: _Room) -> bool:
            lendable = (r.left + r.held) * (UNASKED_SHARE if unasked and r.shared else 1.0)
            return lendable >= needed or (r.blocked and r.held > 0)

        # Waiting helps if, with every reservation of the calls in flight given back, it would fit.
        waitable = all(fits_once_settled(r) for r in rooms) and any(r.held > 0 for r in rooms)
        setting = room.label.split(" ", 1)[0]
        if unasked:
            message = unasked
        elif room.blocked:
            message = f"{room.label}; try again when the call in flight on this key has finished."
        elif needed <= _NOTHING:  # a call the list prices at 0, under a cap that is spent
            change = "lower" if setting.startswith("NAIVE_MIN_") else "raise"
            message = (
                f"nothing is left under {room.label}, so no call is admitted, not even one the model "
                f"list prices at 0. Wait for calls in flight to settle or the period to reset; or ask the "
                f"operator to {change} {setting}."
            )
        else:
            # A floor is lowered to allow more; a cap is raised.
            change = "lower" if setting.startswith("NAIVE_MIN_") else "raise"
            message = (
                f"{what} could cost up to {self._policy.shown(needed, word=True)}, more than "
                f"{room.label} allows. Lower max_tokens, shorten the prompt or choose a cheaper model "
                f"(naive_llm_models sort=price); or ask the operator to {change} {setting}."
            )
        return _Refusal(SpendingRefused(message), waitable=waitable, needed=needed)

    # --- settling ------------------------------------------------------------------------------

    async def _settle(
        self,
        store: Store,
        call: CallRecord,
        result: CallResult,
        *,
        balance: float | None = None,
        rate_sample: tuple[float, float] | None = None,
    ) -> None:
        result = self._counted(result)
        try:
            await store.settle(call, result, balance=balance, rate_sample=rate_sample)
        except Exception as exc:  # the store is away: the hold stays, and is settled again later
            logger.error("could not settle call %s in the store: %s", call.call_id, type(exc).__name__)
            self._unsettled.append((call, result, balance, rate_sample))
        self._settled.set()
        self._settled = anyio.Event()

    async def _settle_answered(self, store: Store, spend: Spend, completion: ChatCompletion) -> None:
        usage = completion.usage
        cost = amount(usage.cost if usage is not None else None)
        used = amount(completion.credits_used)
        rate_sample = (used, cost) if used and cost else None
        if rate_sample is not None and self._rate is None:
            self._rate = rate_sample[0] / rate_sample[1]  # the first seen; reserves read the store's sum
        credits = used if used is not None else (cost * self.rate if cost is not None else spend.credits)
        result = CallResult(
            "answered",
            credits,
            credits_reported=used is not None,
            model=completion.model,
            provider=completion.provider,
            generation_id=completion.id,
            prompt_tokens=usage.prompt_tokens if usage is not None else None,
            completion_tokens=usage.completion_tokens if usage is not None else None,
            cost_usd=cost,
        )
        balance = amount(completion.credits_remaining)
        _log_overshoot(spend.call, credits, spend.credits)
        self._learn_billed_free(spend, completion.model, credits)
        self._end_free_trial(spend, credits)
        await self._settle(store, spend.call, result, balance=balance, rate_sample=rate_sample)

    def _learn_billed_free(self, spend: Spend, model: str | None, credits: float) -> None:
        """A model admitted as free that billed is refused from now on (in this process)."""
        free = spend.prices.free_models if spend.prices is not None else ()
        if not free or credits <= _NOTHING:
            return
        if model in free:
            billed = [model]
        elif spend.prices is not None and spend.prices.free:  # every model of the chain was free
            billed = list(free)
        else:
            return
        for name in billed:
            logger.error(
                "call %s: %s is listed free (NAIVE_FREE_MODELS) but billed %.6g credits: refused from now on",
                spend.call.call_id,
                name,
                credits,
            )
            self._billed_free[name] = credits

    async def _settle_unfinished(self, store: Store, spend: Spend, caller: Caller, outcome: Outcome) -> None:
        if spend.generation_id is None:
            await self._settle(store, spend.call, CallResult(outcome, spend.credits, credits_reported=False))
            return
        await self.note(spend.call.call_id, spend.generation_id, outcome)
        hold = OpenHold(spend.call, spend.credits, spend.generation_id, outcome)
        self.in_background(self._settle_from_stats, store, hold, caller, _STATS_APPEAR_SECONDS)

    async def _settle_from_stats(
        self, store: Store, hold: OpenHold, caller: Caller | None, after: float = 0.0
    ) -> None:
        """Settle a call that ended without its cost: from the generation's stats when the upstream
        has them (it may take a moment: they are not asked for until `after` seconds have
        passed), else at its worst case."""
        await anyio.sleep(after)
        outcome = hold.ending or "cut_off"
        result = CallResult(outcome, hold.credits, credits_reported=False, generation_id=hold.generation_id)
        if caller is not None and hold.generation_id is not None:
            try:
                stats = await self._client.generation(hold.generation_id, caller, just_made=True)
            except NaiveError as error:
                logger.info("no stats for %s (%s): settled at its worst case", hold.generation_id, error.kind)
            else:
                cost = amount(stats.total_cost)
                if cost is not None:
                    result = CallResult(
                        outcome,
                        cost * self.rate,
                        credits_reported=False,
                        model=stats.model,
                        provider=stats.provider_name,
                        generation_id=hold.generation_id,
                        prompt_tokens=stats.tokens_prompt,
                        completion_tokens=stats.tokens_completion,
                        cost_usd=cost,
                    )
                    _log_overshoot(hold.call, cost * self.rate, hold.credits)
        with anyio.CancelScope(shield=True):
            await self._settle(store, hold.call, result)

    async def _sweep(self, store: Store) -> None:
        """Settle the holds of processes whose lease ran out."""
        try:
            orphans = await store.claim_orphans(self.owner)
        except Exception as exc:
            logger.warning("could not sweep the store: %s", type(exc).__name__)
            return
        for hold in orphans:
            logger.info("settling call %s of a process that stopped", hold.call.call_id)
            await self._settle_from_stats(store, hold, self._caller_for(hold))

    def _caller_for(self, hold: OpenHold) -> Caller | None:
        """Who can look up a dead process's call: this server's key, if the call was made with it."""
        key = self._server_key
        if key is None or Caller(key).key_digest != hold.call.key_digest:
            return None
        return Caller(key, user_id=hold.call.user_id, project_id=hold.call.project_id)

    @property
    def rate(self) -> float:
        """Credits per USD, for a cost the upstream gave in USD only: 1 where the store counts USD."""
        if self._policy.unit == "USD":
            return 1.0
        return self._rate or self._policy.assumed_rate


@dataclass(frozen=True, slots=True)
class _Room:
    left: float  # credits left under this limit
    label: str
    held: float  # of what is used there, held by calls in flight
    blocked: bool = False
    shared: bool = True  # other calls count on it too (not the per-call cap)

    @property
    def lendable(self) -> float:
        """What a call without max_tokens may hold of it."""
        return self.left * UNASKED_SHARE if self.shared and self.left > 0 else self.left


_PER = {"all": "", "day": " per UTC day", "month": " per UTC month"}
# Where each scope and period sits in cap_rows().
_ROW_INDEX = {("total", "all"): 0, ("total", "day"): 1, ("total", "month"): 2}
_ROW_INDEX |= {("tenant", "all"): 3, ("tenant", "day"): 4, ("tenant", "month"): 5, ("key", "all"): 6}


# Sums of floats drift by ~1e-16 as calls come and go: below this, nothing is held or spent.
_NOTHING = 1e-9


def _figure(row: tuple[float, float] | None) -> tuple[float, float]:
    """A cap row's (spent, reserved), with float residue read as the zero it stands for."""
    spent, held = row or (0.0, 0.0)
    return (spent if spent > _NOTHING else 0.0), (held if held > _NOTHING else 0.0)


def _log_overshoot(call: CallRecord, credits: float, held: float) -> None:
    """A call that cost more than its hold: the upstream answered past max_tokens, or billed more
    than the model list says. Settled at the real figure all the same."""
    if held > _NOTHING and credits > held + _NOTHING:
        logger.warning(
            "call %s (%s) cost %.6g credits, %.2f times the %.6g reserved: the upstream answered past "
            "max_tokens or billed above its listed prices",
            call.call_id,
            call.model_asked,
            credits,
            credits / held,
            held,
        )


def _tokens_within(credits: float, per_token: float, most: int) -> int:
    """How many output tokens `credits` pay for, at most `most` (and at most `most` when free)."""
    if per_token <= 0 or credits == math.inf:
        return most
    if credits <= 0:
        return 0
    return min(math.floor(credits / per_token), most)


def new_call(caller: Caller, model: str, started_at: float | None = None) -> CallRecord:
    """The store's record of a call starting now (or at `started_at`: the calls of a set start
    together): a new id, who makes it, the model it asks for."""
    return CallRecord(
        call_id=uuid.uuid4().hex,
        started_at=time.time() if started_at is None else started_at,
        key_digest=caller.key_digest,
        user_id=caller.user,
        project_id=caller.project_id,
        model_asked=model,
    )


def cap_rows(caller: Caller, now: datetime, unit: Unit = "credits") -> list[CapRow]:
    """The store rows a call counts on: total, its tenant, its key; all time, this day, this month.
    Rows counted in USD are rows of their own (`usd:…`): a store shared with a server on another
    backend never adds USD to credits."""
    periods = ["all", now.strftime("day:%Y-%m-%d"), now.strftime("month:%Y-%m")]
    prefix = "usd:" if unit == "USD" else ""
    tenant = f"{prefix}tenant:{caller.key_digest}:{caller.user or ''}"
    return [
        *((f"{prefix}total", p) for p in periods),
        *((tenant, p) for p in periods),
        (f"{prefix}key:{caller.key_digest}", "all"),
    ]


def _resets(period: Period, key: str) -> str:
    if period == "all":
        return ""
    start = datetime.strptime(key.split(":", 1)[1], "%Y-%m-%d" if period == "day" else "%Y-%m").replace(
        tzinfo=UTC
    )
    end = start + timedelta(days=1) if period == "day" else (start + timedelta(days=32)).replace(day=1)
    return f"; resets {end:%Y-%m-%d %H:%M} UTC"
