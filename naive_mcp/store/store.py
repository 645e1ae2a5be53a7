"""The state store: caps, holds, leases, the ledger, balances, the learned rate, cancels, threads,
jobs.

One set of SQLAlchemy Core queries serves SQLite and PostgreSQL. Each operation is one
transaction, run on a worker thread (one thread hop per transaction, not per statement: the
store's cost per call is two short transactions). `memory` runs them inline: it is a SQLite
database inside this process, microseconds a transaction, so a hop would cost more than the work.

Reserving is one atomic step, for one call or a set of them (`llm.compare`'s): the cap rows
are created if new, then locked in (scope, period) order (`SELECT … ORDER BY … FOR UPDATE` on
PostgreSQL; SQLite's BEGIN IMMEDIATE locks the database), the caller's rule decides each call
in turn from the locked figures as the calls before it raised them, and the rows are raised with
a hold row written per call, all before the transaction ends. Settling deletes the hold (once: a
hold already settled elsewhere is left alone) and moves its credits from reserved to spent.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Collection, Sequence
from typing import Any, TypeVar

import anyio
from anyio import CapacityLimiter
from sqlalchemy import Connection, Engine, and_, delete, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import OperationalError

from naive_mcp.store import jobs as jb
from naive_mcp.store import tables as t
from naive_mcp.store import threads as th
from naive_mcp.store.engine import create_store_engine, migrate
from naive_mcp.store.location import StoreLocation
from naive_mcp.store.records import (
    CallRecord,
    CallResult,
    CapRow,
    Figures,
    JobLimits,
    JobRecord,
    JobStatus,
    OpenHold,
    Outcome,
    Tally,
    ThreadLimits,
    ThreadRecord,
    Turn,
    UsageRow,
    UsageScope,
)
from naive_mcp.store.scopes import within
from naive_mcp.store.statements import RATE, Cursor, Statements, row_values

_T = TypeVar("_T")
# Cancels announced for a call on another replica are kept this long (seconds).
CANCEL_KEEP_SECONDS = 600.0


class Store:
    def __init__(self, location: StoreLocation, engine: Engine, quick: Engine | None = None) -> None:
        self.location = location
        self._engine = engine
        self._quick = quick  # SQLite file: the same database, on connections that never wait for its lock
        self._inline = location.kind == "memory"
        # SQLite has one writer at a time: this process queues its own transactions here instead
        # of in SQLite's busy handler, which sleeps in steps. PostgreSQL gets the pool's worth.
        self._limiter = CapacityLimiter(1 if location.kind != "postgresql" else engine.pool.size())  # type: ignore[attr-defined]
        self._insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
        self._q = Statements(engine.dialect.name)

    @classmethod
    async def open(cls, location: StoreLocation) -> Store:
        """Connect and migrate (on a worker thread: SQLAlchemy's import and the first connect
        would otherwise hold up the server's first answers)."""

        def opened() -> Store:
            engine = create_store_engine(location)
            migrate(engine, location)
            quick = create_store_engine(location, busy_seconds=0) if location.kind == "sqlite" else None
            return cls(location, engine, quick)

        if location.kind == "memory":
            return opened()
        return await anyio.to_thread.run_sync(opened)

    async def aclose(self) -> None:
        await self._run(self._engine.dispose)
        if self._quick is not None:
            self._quick.dispose()

    async def _run(self, fn: Callable[..., _T], *args: Any) -> _T:
        if self._inline:
            return fn(*args)
        return await anyio.to_thread.run_sync(fn, *args, limiter=self._limiter)

    async def _run_quick(self, fn: Callable[..., _T], *args: Any) -> _T:
        """A call's own transactions (reserve, note, settle). On a SQLite file, one takes a
        fraction of a millisecond, less than the hop to a worker thread: it runs right here, in
        this process's turn (`_limiter`: waited for on the loop when another of its transactions
        holds it), on a connection that never waits for SQLite's lock. Only when another process
        holds that lock does it wait for it, on a worker thread.

        Waiting for the turn on the loop, not on the thread, matters under load: a transaction
        sent to the thread because the turn was taken made the next one find it taken too, and
        from the first contention on every transaction paid the hop (0.3 ms of CPU a call,
        stateless HTTP at 10 connections; bench/history.md)."""
        if self._inline:
            return fn(self._engine, *args)
        if self._quick is None:
            return await anyio.to_thread.run_sync(fn, self._engine, *args, limiter=self._limiter)
        try:
            self._limiter.acquire_nowait()  # no await at all when the turn is free
        except anyio.WouldBlock:
            await self._limiter.acquire()
        try:
            try:
                return fn(self._quick, *args)
            except (OperationalError, sqlite3.OperationalError) as exc:
                # sqlite3's own from BEGIN IMMEDIATE and the statements run on the cursor
                # (statements.Cursor), SQLAlchemy's wrapping it from anything else.
                reason = str(getattr(exc, "orig", exc))
                if "locked" not in reason and "busy" not in reason:
                    raise
                # Another process holds the lock: nothing was done; wait for it off the loop,
                # keeping this process's turn.
            return await anyio.to_thread.run_sync(fn, self._engine, *args)
        finally:
            self._limiter.release()

    # --- reserving and settling ---------------------------------------------------------------

    async def reserve(
        self,
        calls: Sequence[CallRecord],
        owner: str,
        rows: Sequence[CapRow],
        decide: Callable[[int, Figures], float],
    ) -> list[float]:
        """Hold, for each of `calls` in turn, what `decide(index, figures)` says (credits) on every
        row of `rows`, all in one transaction: each call's figures are the locked rows as raised by
        the calls before it. `decide` may raise to refuse, and then nothing is written, for any of
        them. Returns the credits held, call by call."""
        assert calls, "a reservation is for at least one call"
        return await self._run_quick(self._reserve, list(calls), owner, sorted(set(rows)), decide)

    def _reserve(
        self,
        engine: Engine,
        calls: list[CallRecord],
        owner: str,
        rows: list[CapRow],
        decide: Callable[[int, Figures], float],
    ) -> list[float]:
        q = self._q
        with engine.begin() as db:
            cursor = Cursor(db)
            these = row_values(rows)
            locked = []
            if rows:
                cursor.run(q.add_rows(len(rows)), these)
                locked = cursor.all(q.lock_rows(len(rows)), these)
            read = cursor.first(q.figures, {"key": calls[0].key_digest})  # one caller: one key
            assert read is not None, "a SELECT of scalar subqueries has one row"
            balance, rate_credits, rate_usd = read
            figures = Figures(
                rows={(scope, period): (spent, reserved) for scope, period, spent, reserved in locked},
                balance=balance,
                rate=_rate_of(rate_credits, rate_usd),
            )
            held: list[float] = []
            for index in range(len(calls)):
                credits = decide(index, figures)
                held.append(credits)
                figures = figures.raised(credits)
            total = sum(held)
            if total and rows:  # the rows are locked already, above
                cursor.run(q.raise_rows(len(rows)), {**these, "add_reserved": total, "add_spent": 0.0})
            cursor.many(
                q.add_hold,
                [
                    {
                        "id": call.call_id,
                        "owner": owner,
                        "started_at": call.started_at,
                        "credits": credits,
                        "rows": json.dumps(rows),
                        "key_digest": call.key_digest,
                        "user_id": call.user_id,
                        "project_id": call.project_id,
                        "model_asked": call.model_asked,
                        "generation_id": None,
                        "ending": None,
                    }
                    for call, credits in zip(calls, held, strict=True)
                ],
            )
            return held

    async def note(
        self, call_id: str, *, generation_id: str | None = None, ending: Outcome | None = None
    ) -> None:
        """Write down what a hold's settler will need: the generation id, how the call ended."""
        if generation_id is not None or ending is not None:
            await self._run_quick(self._note, call_id, generation_id, ending)

    def _note(self, engine: Engine, call_id: str, generation_id: str | None, ending: Outcome | None) -> None:
        with engine.begin() as db:
            Cursor(db).run(
                self._q.note, {"hold_id": call_id, "note_generation_id": generation_id, "note_ending": ending}
            )

    async def settle(
        self,
        call: CallRecord,
        result: CallResult,
        *,
        balance: float | None = None,
        rate_sample: tuple[float, float] | None = None,
    ) -> bool:
        """End a call's hold: count `result.credits` as spent on its rows, write its ledger row,
        the key's balance and a (credits, USD) rate sample. False if it was settled already."""
        return await self._run_quick(self._settle, call, result, balance, rate_sample)

    def _settle(
        self,
        engine: Engine,
        call: CallRecord,
        result: CallResult,
        balance: float | None,
        rate_sample: tuple[float, float] | None,
    ) -> bool:
        now = time.time()
        q = self._q
        with engine.begin() as db:
            cursor = Cursor(db)
            hold = cursor.first(q.take_hold, {"hold_id": call.call_id})
            if hold is None:
                return False
            held, held_rows = hold
            rows = [(scope, period) for scope, period in json.loads(held_rows)]
            spent = result.credits or 0.0
            if rows and (spent or held):
                these = row_values(rows)
                if q.locks_rows:
                    # Locked in (scope, period) order first: one multi-row UPDATE alone would lock
                    # them in whatever order it meets them, and deadlock against a reserve.
                    cursor.all(q.lock_rows(len(rows)), these)
                cursor.run(q.raise_rows(len(rows)), {**these, "add_reserved": -held, "add_spent": spent})
            cursor.run(q.add_ledger_row, _ledger_values(call, result, now))
            if balance is not None:
                cursor.run(
                    q.set_balance,
                    {"key_digest": call.key_digest, "credits_remaining": balance, "seen_at": now},
                )
            elif spent:  # no balance came with it (cut off, cancelled): the last one less what it cost
                cursor.run(q.spend_balance, {"key": call.key_digest, "spent": spent, "seen_at": now})
            if rate_sample is not None:
                credits, usd = rate_sample
                cursor.run(q.add_rate_sample, {"name": RATE, "credits": credits, "usd": usd})
            return True

    async def record(self, call: CallRecord, result: CallResult) -> None:
        """A ledger row for a call that held nothing (refused by a cap)."""
        await self._run(self._record, call, result)

    def _record(self, call: CallRecord, result: CallResult) -> None:
        with self._engine.begin() as db:
            Cursor(db).run(self._q.add_ledger_row, _ledger_values(call, result, time.time()))

    async def rate(self) -> float | None:
        return await self._run(self._read_rate)

    def _read_rate(self) -> float | None:
        with self._engine.connect() as db:
            found = Cursor(db).first(self._q.rate)
        return None if found is None else _rate_of(*found)

    async def balance(self, key_digest: str) -> tuple[float, float] | None:
        """The credits a key had when last reported, and when (epoch seconds); None before any."""
        return await self._run(self._read_balance, key_digest)

    async def set_balance(self, key_digest: str, remaining: float) -> None:
        """What a key has left, as the upstream reported it just now (a backend whose answers
        carry no balance is asked for it: `NaiveClient.balance`)."""
        await self._run_quick(self._write_balance, key_digest, remaining)

    def _write_balance(self, engine: Engine, key_digest: str, remaining: float) -> None:
        with engine.begin() as db:
            Cursor(db).run(
                self._q.set_balance,
                {"key_digest": key_digest, "credits_remaining": remaining, "seen_at": time.time()},
            )

    def _read_balance(self, key_digest: str) -> tuple[float, float] | None:
        columns = t.balances.c
        with self._engine.connect() as db:
            row = db.execute(
                select(columns.credits_remaining, columns.seen_at).where(columns.key_digest == key_digest)
            ).first()
        return None if row is None else (float(row[0]), float(row[1]))

    # --- leases and the holds of processes that died -------------------------------------------

    async def renew_lease(self, owner: str, seconds: float) -> None:
        await self._run(self._renew_lease, owner, time.time() + seconds)

    def _renew_lease(self, owner: str, expires_at: float) -> None:
        with self._engine.begin() as db:
            db.execute(
                self._insert(t.leases)
                .values(owner=owner, expires_at=expires_at)
                .on_conflict_do_update(index_elements=[t.leases.c.owner], set_={"expires_at": expires_at})
            )

    async def drop_lease(self, owner: str) -> None:
        await self._run(self._drop_lease, owner)

    def _drop_lease(self, owner: str) -> None:
        with self._engine.begin() as db:
            db.execute(delete(t.leases).where(t.leases.c.owner == owner))

    async def claim_orphans(self, owner: str) -> list[OpenHold]:
        """Take over the holds of processes whose lease expired (or that never had one), so that
        exactly one live process settles each; drop those leases, and mark those processes' jobs
        failed. Also forgets old, empty day and
        month rows, old cancels, expired threads and jobs, so the store does not grow without bound."""
        return await self._run(self._claim_orphans, owner, time.time())

    def _claim_orphans(self, owner: str, now: float) -> list[OpenHold]:
        with self._engine.begin() as db:
            live = select(t.leases.c.owner).where(t.leases.c.expires_at >= now)
            orphans = db.execute(
                select(t.holds)
                .where(t.holds.c.owner != owner, t.holds.c.owner.not_in(live))
                .order_by(t.holds.c.id)
                .with_for_update(skip_locked=True)
            ).all()
            if orphans:
                db.execute(
                    update(t.holds).where(t.holds.c.id.in_([row.id for row in orphans])).values(owner=owner)
                )
            db.execute(delete(t.leases).where(t.leases.c.expires_at < now))
            jb.fail_stopped(db, select(t.leases.c.owner).where(t.leases.c.expires_at >= now), now)
            _forget_old(db, now)
        return [
            OpenHold(
                call=CallRecord(
                    call_id=row.id,
                    started_at=row.started_at,
                    key_digest=row.key_digest,
                    user_id=row.user_id,
                    project_id=row.project_id,
                    model_asked=row.model_asked,
                ),
                credits=row.credits,
                generation_id=row.generation_id,
                ending=row.ending,
            )
            for row in orphans
        ]

    # --- reading -------------------------------------------------------------------------------

    async def usage(self, scope: UsageScope, since: float | None = None) -> list[UsageRow]:
        """The ledger, grouped by key, user, model (answered or asked) and outcome."""
        return await self._run(self._usage, scope, since)

    def _usage(self, scope: UsageScope, since: float | None) -> list[UsageRow]:
        ledger = t.ledger.c
        model = func.coalesce(ledger.model, ledger.model_asked)
        query = select(
            ledger.key_digest,
            ledger.user_id,
            model.label("model"),
            ledger.outcome,
            func.count().label("calls"),
            func.coalesce(func.sum(ledger.prompt_tokens), 0).label("prompt_tokens"),
            func.coalesce(func.sum(ledger.completion_tokens), 0).label("completion_tokens"),
            func.coalesce(func.sum(ledger.cost_usd), 0.0).label("cost_usd"),
            func.coalesce(func.sum(ledger.credits), 0.0).label("credits"),
            func.sum(1 - ledger.credits_reported).label("credits_unknown"),
        ).group_by(ledger.key_digest, ledger.user_id, model, ledger.outcome)
        query = query.where(*within(t.ledger, scope))
        if since is not None:
            query = query.where(ledger.ended_at >= since)
        with self._engine.connect() as db:
            return [
                UsageRow(
                    key_digest=row.key_digest,
                    user_id=row.user_id,
                    model=row.model,
                    outcome=row.outcome,
                    tally=Tally(
                        calls=row.calls,
                        prompt_tokens=int(row.prompt_tokens),
                        completion_tokens=int(row.completion_tokens),
                        cost_usd=float(row.cost_usd),
                        credits=float(row.credits),
                        credits_unknown=int(row.credits_unknown or 0),
                    ),
                )
                for row in db.execute(query)
            ]

    async def made_within(self, generation_id: str, scope: UsageScope) -> bool:
        """Whether a call through this store, of those `scope` may see, got `generation_id` back."""
        return await self._run(self._made_within, generation_id, scope)

    def _made_within(self, generation_id: str, scope: UsageScope) -> bool:
        with self._engine.connect() as db:
            for table in (t.ledger, t.holds):
                found = select(table.c.id).where(
                    table.c.generation_id == generation_id, *within(table, scope)
                )
                if db.execute(found.limit(1)).first() is not None:
                    return True
        return False

    async def made_lately(self, generation_id: str, seconds: float) -> bool:
        """Whether a call through this store got `generation_id` back within the last `seconds`."""
        return await self._run(self._made_lately, generation_id, time.time() - seconds)

    def _made_lately(self, generation_id: str, since: float) -> bool:
        with self._engine.connect() as db:
            in_ledger = db.execute(
                select(t.ledger.c.id)
                .where(t.ledger.c.generation_id == generation_id, t.ledger.c.ended_at >= since)
                .limit(1)
            ).first()
            if in_ledger is not None:
                return True
            in_flight = db.execute(
                select(t.holds.c.id).where(t.holds.c.generation_id == generation_id).limit(1)
            ).first()
            return in_flight is not None

    # --- threads ------------------------------------------------------------------------------

    async def thread(self, thread_id: str, scope: UsageScope) -> tuple[ThreadRecord, list[Turn]] | None:
        """A thread `scope` may see, with its turns; None if there is none (or it expired)."""
        return await self._run(self._read_thread, thread_id, scope, time.time())

    def _read_thread(
        self, thread_id: str, scope: UsageScope, now: float
    ) -> tuple[ThreadRecord, list[Turn]] | None:
        with self._engine.connect() as db:
            record = th.find(db, thread_id, scope, now)
            return None if record is None else (record, th.turns(db, thread_id))

    async def turn(self, thread_id: str, scope: UsageScope, number: int) -> Turn | None:
        """One turn of a thread `scope` may see."""
        return await self._run(self._read_turn, thread_id, scope, number, time.time())

    def _read_turn(self, thread_id: str, scope: UsageScope, number: int, now: float) -> Turn | None:
        with self._engine.connect() as db:
            if th.find(db, thread_id, scope, now) is None:
                return None
            found = th.turns(db, thread_id, (number, number))
            return found[0] if found else None

    async def threads(self, scope: UsageScope, limit: int) -> list[ThreadRecord]:
        """The threads `scope` may see, the most recently used first."""
        return await self._run(self._list_threads, scope, limit, time.time())

    def _list_threads(self, scope: UsageScope, limit: int, now: float) -> list[ThreadRecord]:
        with self._engine.connect() as db:
            return th.listed(db, scope, now, limit)

    async def keep_turns(
        self,
        owner: UsageScope,
        thread_id: str | None,
        new_id: str,
        turns: Sequence[Turn],
        limits: ThreadLimits,
        *,
        system: str | None,
        title: str,
        copied_from: str | None = None,
    ) -> tuple[ThreadRecord, list[Turn]]:
        """Add `turns` to `owner`'s thread `thread_id`, or to a new thread `new_id` (a copy of
        `copied_from`'s turns, if given) when there is none, or it is gone; `system` replaces the
        thread's system prompt when given. Returns the thread before the turns were added, and
        the turns as stored. (A call's own transaction, as reserve and settle are.)"""
        return await self._run_quick(
            self._keep_turns,
            owner,
            thread_id,
            new_id,
            list(turns),
            limits,
            system,
            title,
            copied_from,
            time.time(),
        )

    def _keep_turns(
        self,
        engine: Engine,
        owner: UsageScope,
        thread_id: str | None,
        new_id: str,
        turns: list[Turn],
        limits: ThreadLimits,
        system: str | None,
        title: str,
        copied_from: str | None,
        now: float,
    ) -> tuple[ThreadRecord, list[Turn]]:
        with engine.begin() as db:
            return th.keep(
                db,
                owner,
                thread_id,
                new_id,
                turns,
                limits,
                now,
                system=system,
                title=title,
                copied_from=copied_from,
            )

    # --- jobs -----------------------------------------------------------------------------------

    async def add_job(self, record: JobRecord, limits: JobLimits) -> int | None:
        """Write a new job (see `jobs.add`): None, or how many of its owner's are working when
        that is its limit already, and nothing was written."""
        return await self._run(self._in_transaction, jb.add, record, limits)

    async def job(self, job_id: str, scope: UsageScope) -> JobRecord | None:
        return await self._run(self._read, jb.find, job_id, scope, time.time())

    async def jobs(
        self, scope: UsageScope, limit: int, after: tuple[float, str] | None = None
    ) -> list[JobRecord]:
        """The jobs `scope` may see, the newest first, from after `after` (created_at, id)."""
        return await self._run(self._read, jb.listed, scope, time.time(), limit, after)

    async def job_progress(self, job_id: str, message: str | None, partial: str | None) -> None:
        await self._run(self._in_transaction, jb.progress, job_id, message, partial, time.time())

    async def finish_job(
        self,
        job_id: str,
        status: JobStatus,
        message: str | None,
        partial: str | None,
        result: str | None,
        ttl: float,
    ) -> None:
        await self._run(
            self._in_transaction, jb.finish, job_id, status, message, partial, result, time.time(), ttl
        )

    async def ask_job_cancel(self, job_id: str, scope: UsageScope) -> JobRecord | None:
        return await self._run(self._in_transaction, jb.ask_cancel, job_id, scope, time.time())

    async def job_cancels(self, job_ids: Sequence[str]) -> list[str]:
        """Which of `job_ids` some process asked to stop."""
        if not job_ids:
            return []
        return await self._run(self._read, jb.cancels_asked, list(job_ids))

    def _in_transaction(self, fn: Callable[..., _T], *args: Any) -> _T:
        with self._engine.begin() as db:
            return fn(db, *args)

    def _read(self, fn: Callable[..., _T], *args: Any) -> _T:
        with self._engine.connect() as db:
            return fn(db, *args)

    # --- cancels across replicas ---------------------------------------------------------------

    async def publish_cancel(self, key: str, at: float) -> None:
        """A cancel for the call `key` arrived at `at` (wall clock) on a replica where it was not."""
        await self._run(self._publish_cancel, key, at)

    def _publish_cancel(self, key: str, at: float) -> None:
        with self._engine.begin() as db:
            db.execute(
                self._insert(t.cancels)
                .values(key=key, created_at=at)
                .on_conflict_do_update(
                    index_elements=[t.cancels.c.key],
                    set_={"created_at": func.max(t.cancels.c.created_at, at)}
                    if self._engine.dialect.name == "sqlite"
                    else {"created_at": func.greatest(t.cancels.c.created_at, at)},
                )
            )

    async def cancelled(self, keys: Collection[str]) -> dict[str, float]:
        """Which of `keys` were published lately, each with its latest time."""
        if not keys:
            return {}
        return await self._run(self._cancelled, list(keys), time.time() - CANCEL_KEEP_SECONDS)

    def _cancelled(self, keys: list[str], since: float) -> dict[str, float]:
        with self._engine.connect() as db:
            found = db.execute(
                select(t.cancels.c.key, t.cancels.c.created_at).where(
                    t.cancels.c.key.in_(keys), t.cancels.c.created_at >= since
                )
            )
            return {row.key: row.created_at for row in found}


def _rate_of(credits: float | None, usd: float | None) -> float | None:
    """Credits per USD from the rate's sums; None before the first sample."""
    return credits / usd if credits is not None and usd is not None and usd > 0 and credits > 0 else None


def _ledger_values(call: CallRecord, result: CallResult, now: float) -> dict[str, Any]:
    return {
        "call_id": call.call_id,
        "started_at": call.started_at,
        "ended_at": now,
        "key_digest": call.key_digest,
        "user_id": call.user_id,
        "project_id": call.project_id,
        "model_asked": call.model_asked,
        "model": result.model,
        "provider": result.provider,
        "generation_id": result.generation_id,
        "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.completion_tokens,
        # Where the caps count USD, the ledger has the cost and no credits (none were reported).
        "cost_usd": result.cost_usd
        if result.counted_in == "credits"
        else (result.cost_usd or result.credits),
        "credits": result.credits if result.counted_in == "credits" else None,
        "credits_reported": int(result.credits_reported),
        "outcome": result.outcome,
    }


def _forget_old(db: Connection, now: float) -> None:
    day = time.strftime("day:%Y-%m-%d", time.gmtime(now - 3 * 86_400))
    month = time.strftime("month:%Y-%m", time.gmtime(now - 62 * 86_400))
    caps = t.caps.c
    db.execute(
        delete(t.caps).where(
            caps.reserved <= 1e-12,
            or_(
                and_(caps.period.like("day:%"), caps.period < day),
                and_(caps.period.like("month:%"), caps.period < month),
            ),
        )
    )
    db.execute(delete(t.cancels).where(t.cancels.c.created_at < now - CANCEL_KEEP_SECONDS))
    th.forget_expired(db, now)
    jb.forget_expired(db, now)
