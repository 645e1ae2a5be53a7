"""What the state store costs a chat call, on each engine, in one run.

- Per call: the store work SpendGuard does for every chat call, one `Store.reserve` and one
  `Store.settle`: the 7 cap rows `cap_rows` names, a hold, then the ledger row, the key's balance
  and a rate sample, as an answered call settles. On `memory`, a SQLite file and PostgreSQL (a
  throwaway server, `tests.engines.postgres_server`), one pair on each engine in turn, run by run.
- Per call, with threads on (the default): `Store.keep_turns`, the call's question and answer
  kept in a new thread, on each engine in turn.
- Through MCP: `naive_llm_chat` back to back through an in-memory MCP client, the server on
  `memory`, on a SQLite file and on PostgreSQL, against the sandbox in a process of its own. Each
  round runs a block of calls on every store, in an order that rotates round by round, so that
  the machine's noise (2 noisy cores) hits all alike; what a store adds per call is its block
  minus `memory`'s block of the same round, per call.
"""

from __future__ import annotations

import gc
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack, ExitStack
from datetime import UTC, datetime
from pathlib import Path

from mcp import Client

from bench import clients
from bench.report import Figure
from bench.upstream import sandbox_process
from naive_mcp.caller import Caller
from naive_mcp.guard import cap_rows, new_call
from naive_mcp.store import CallResult, Figures, StoreLocation, ThreadLimits, Turn, owned_by
from naive_mcp.store.store import Store
from naive_mcp.threads import new_thread_id

SQLITE_ADDED_TARGET_MS = 1.0
MODEL = "openai/gpt-5-mini"
PROMPT = "benchmark"
MEMORY, SQLITE, POSTGRES = "memory", "SQLite file", "PostgreSQL"
ENGINES = (MEMORY, SQLITE, POSTGRES)
# What a settled answer carries (the sandbox's figures for a short answer, near enough).
CREDITS, COST_USD, BALANCE = 0.02, 0.0008, 1000.0


class Unavailable(Exception):
    """An engine this machine cannot run; the message says why."""


async def measure(pairs: int, rounds: int, block: int) -> tuple[list[Figure], list[str]]:
    """`pairs` reserve+settle pairs per engine; `rounds` rounds of `block` chat calls per store."""
    with tempfile.TemporaryDirectory(prefix="naive-bench-store-") as tmp, ExitStack() as stack:
        stores: dict[str, str] = {MEMORY: "memory", SQLITE: str(Path(tmp) / "store.sqlite3")}
        missing: str | None = None
        try:
            stores[POSTGRES] = _postgres(stack, Path(tmp))
        except Unavailable as reason:
            missing = str(reason)
        cost, kept = await _store_costs(stores, pairs)
        times = await _chat_blocks(stores, rounds, block)
    figures = [
        _figure(f"store cost per call (reserve + settle), {name}", cost.get(name, []), None, "ms", missing)
        for name in ENGINES
    ]
    figures += [
        _figure(f"store cost per call of keeping its thread, {name}", kept.get(name, []), None, "ms", missing)
        for name in ENGINES
    ]
    figures += [
        _figure(
            f"naive_llm_chat through MCP in memory, store {name}",
            [block / seconds for seconds in times.get(name, [])],
            None,
            "calls/s",
            missing,
        )
        for name in ENGINES
    ]
    for name in (SQLITE, POSTGRES):
        ours = times.get(name)
        paired = list(zip(ours, times[MEMORY], strict=True)) if ours else []
        figures += [
            _figure(
                f"added per call by the {name} store vs memory, round by round",
                [(seconds - memory) / block * 1000 for seconds, memory in paired],
                SQLITE_ADDED_TARGET_MS if name == SQLITE else None,
                "ms",
                missing,
            ),
            _figure(
                f"calls/s, {name} store / memory, round by round",
                [memory / seconds for seconds, memory in paired],
                None,
                "x",
                missing,
            ),
        ]
    notes = [
        f"Cost per call: {pairs} pairs per engine, one on each engine in turn; each pair is one call's "
        "`Store.reserve` (7 cap rows, no cap set as in the bench's settings: nothing is held) and "
        "`Store.settle` (answered: 7 rows raised, a ledger row, the key's balance, a rate sample).",
        f"Through MCP: {rounds} rounds of {block} calls per store, the order rotating each round; calls/s "
        "is per block; the added ms is (store's block - memory's block of the same round) / "
        f"{block}. Besides reserve and settle, a call on the first chunk writes the generation id to "
        "its hold (`Store.note`, in the background): three transactions a call in all.",
        "memory runs each transaction inline; the SQLite file too when its write lock is free at "
        "once, else on a worker thread (WAL, synchronous=NORMAL; one writer at a time); PostgreSQL "
        "on a worker thread: a throwaway local server (fsync off, as tests/engines.py runs it), "
        "over TCP on loopback.",
    ]
    if missing is not None:
        notes.append(f"PostgreSQL not measured: {missing}.")
    return figures, notes


def _figure(name: str, samples: list[float], target: float | None, unit: str, missing: str | None) -> Figure:
    if samples:
        return Figure(name, samples, target, unit=unit)
    return Figure(name, [], target, unit=unit, missing=missing or "no samples")


def _postgres(stack: ExitStack, tmp: Path) -> str:
    """A database on a throwaway PostgreSQL server, stopped when `stack` closes; its URL."""
    try:
        from tests.engines import ServiceMissing, postgres_server
    except ImportError as error:  # an installed bench, without the source tree's tests/
        raise Unavailable(f"tests/engines.py cannot be imported ({error})") from error
    try:
        server = stack.enter_context(postgres_server(tmp))
    except ServiceMissing as error:
        raise Unavailable(str(error)) from error
    return server.create_database("bench")


# --- the store alone ---------------------------------------------------------------------------


async def _store_costs(
    stores: dict[str, str], pairs: int
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Per engine: ms of each reserve + settle pair, and of each thread kept."""
    caller = Caller(f"nv_sk_test_bench_{uuid.uuid4().hex}")
    owner = uuid.uuid4().hex
    opened: dict[str, Store] = {}
    try:
        for name, value in stores.items():
            opened[name] = await Store.open(StoreLocation.parse(value))
            await opened[name].renew_lease(owner, 600)
        for store in opened.values():  # warm: connections, statement caches
            for _ in range(10):
                await _pair_ms(store, caller, owner)
                await _keep_ms(store, caller)
        gc.collect()
        times: dict[str, list[float]] = {name: [] for name in opened}
        kept: dict[str, list[float]] = {name: [] for name in opened}
        names = list(opened)
        for turn in range(pairs):
            for name in _rotated(names, turn):
                times[name].append(await _pair_ms(opened[name], caller, owner))
                kept[name].append(await _keep_ms(opened[name], caller))
        return times, kept
    finally:
        for store in opened.values():
            await store.aclose()


async def _pair_ms(store: Store, caller: Caller, owner: str) -> float:
    """One call's reserve and settle, as SpendGuard makes them with no cap set; in ms."""
    call = new_call(caller, MODEL)
    rows = cap_rows(caller, datetime.fromtimestamp(call.started_at, UTC))
    result = CallResult(
        "answered",
        CREDITS,
        credits_reported=True,
        model=MODEL,
        provider="openai",
        generation_id=f"gen-{uuid.uuid4().hex}",
        prompt_tokens=12,
        completion_tokens=40,
        cost_usd=COST_USD,
    )
    started = time.perf_counter()
    await store.reserve([call], owner, rows, _nothing_held)
    await store.settle(call, result, balance=BALANCE, rate_sample=(CREDITS, COST_USD))
    return (time.perf_counter() - started) * 1000


_TURNS = (
    Turn("user", {"role": "user", "content": PROMPT}),
    Turn("assistant", {"role": "assistant", "content": f"Sandbox reply from {MODEL}: {PROMPT}"}, MODEL),
)
_LIMITS = ThreadLimits(ttl=3600.0, per_owner=500)


async def _keep_ms(store: Store, caller: Caller) -> float:
    """One answered call's thread kept (a new one, as a call without thread_id makes); in ms."""
    owner = owned_by(caller.key_digest, caller.user, caller.project_id)
    started = time.perf_counter()
    await store.keep_turns(owner, None, new_thread_id(), _TURNS, _LIMITS, system=None, title=PROMPT)
    return (time.perf_counter() - started) * 1000


def _nothing_held(index: int, figures: Figures) -> float:
    """SpendGuard's decision when no credit cap is set: hold nothing (the hold row is written)."""
    return 0.0


# --- through MCP -------------------------------------------------------------------------------


async def _chat_blocks(stores: dict[str, str], rounds: int, block: int) -> dict[str, list[float]]:
    """Seconds each block of `block` chat calls took, per store, round by round."""
    # Migrated one at a time first: servers opening new stores at once, each on a worker thread,
    # would run Alembic concurrently in this process, and its module-level proxies collide.
    for value in stores.values():
        await (await Store.open(StoreLocation.parse(value))).aclose()
    with sandbox_process() as url:
        key = f"nv_sk_test_bench_{uuid.uuid4().hex}"
        async with AsyncExitStack() as stack:
            calls: dict[str, Callable[[], Awaitable[None]]] = {}
            for name, value in stores.items():
                client = await stack.enter_async_context(clients.in_memory(url, key, store=value))
                calls[name] = _chat_with(client)
            for call in calls.values():  # warm: imports, the upstream pool, the store's connections
                for _ in range(10):
                    await call()
            gc.collect()
            gc.freeze()  # as `naive-mcp` does once started
            try:
                times: dict[str, list[float]] = {name: [] for name in calls}
                names = list(calls)
                for turn in range(rounds):
                    for name in _rotated(names, turn):
                        started = time.perf_counter()
                        for _ in range(block):
                            await calls[name]()
                        times[name].append(time.perf_counter() - started)
            finally:
                gc.unfreeze()
    return times


def _chat_with(client: Client) -> Callable[[], Awaitable[None]]:
    async def chat() -> None:
        result = await client.call_tool("naive_llm_chat", {"prompt": PROMPT, "model": MODEL})
        if result.is_error:
            raise RuntimeError(f"the benchmark call failed: {result.content}")

    return chat


def _rotated(names: list[str], turn: int) -> list[str]:
    """`names`, starting at the `turn`-th: each goes first, second, … equally often."""
    shift = turn % len(names)
    return names[shift:] + names[:shift]
