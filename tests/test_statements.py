"""The store's hot path on the DBAPI cursor (`naive_mcp/store/statements.py`): what it relies on
from SQLAlchemy, pinned so that a change there fails here; every hot statement sending, on each
engine, exactly the SQL and values `Connection.execute` sends, and reading back the same values of
the same Python types; the transaction it runs in being the one `engine.begin()` opened."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import Connection, Engine, Float, String, bindparam, event, select
from sqlalchemy.dialects.postgresql import psycopg as pg_psycopg
from sqlalchemy.dialects.sqlite import pysqlite

from naive_mcp.store import (
    CallRecord,
    CallResult,
    Figures,
    StoreLocation,
    ThreadLimits,
    ThreadRecord,
    Turn,
    owned_by,
)
from naive_mcp.store import tables as t
from naive_mcp.store import threads as th
from naive_mcp.store.statements import RATE, Cursor, Prepared, Statements, row_values
from naive_mcp.store.store import Store

pytestmark = pytest.mark.anyio

ENGINES = ["memory", "sqlite", pytest.param("postgresql", marks=pytest.mark.slow)]
KEY = "d" * 64
ROWS = sorted(
    [("total", "all"), ("total", "day:2026-12-02"), (f"key:{KEY}", "all"), (f"tenant:{KEY}:", "all")]
)
OWNER = owned_by(KEY, None, None)
TURNS = [
    Turn("user", {"role": "user", "content": "hi"}),
    Turn("assistant", {"role": "assistant", "content": "yo"}, "m/one"),
]


def _dialects() -> list[Any]:
    return [pysqlite.dialect(), pg_psycopg.dialect()]


# --- what is relied on from SQLAlchemy and the drivers ------------------------------------------


def test_each_dialect_compiles_to_the_paramstyle_its_driver_takes() -> None:
    sqlite_dialect, pg_dialect = _dialects()
    assert (sqlite_dialect.paramstyle, sqlite_dialect.positional, sqlite3.paramstyle) == (
        "qmark",
        True,
        "qmark",
    )
    assert (pg_dialect.paramstyle, pg_dialect.positional, psycopg.paramstyle) == (
        "pyformat",
        False,
        "pyformat",
    )


def test_compile_gives_the_sql_the_order_of_its_values_and_its_constants() -> None:
    statement = select(t.rates.c.usd).where(t.rates.c.name == RATE, t.rates.c.credits > bindparam("least"))
    sqlite_dialect, pg_dialect = _dialects()

    on_sqlite = statement.compile(dialect=sqlite_dialect)
    assert on_sqlite.string == "SELECT rates.usd \nFROM rates \nWHERE rates.name = ? AND rates.credits > ?"
    assert on_sqlite.positiontup == ["name_1", "least"]
    assert on_sqlite.construct_params({"least": None}) == {"name_1": RATE, "least": None}
    assert not on_sqlite.escaped_bind_names

    on_pg = statement.compile(dialect=pg_dialect)
    assert on_pg.string == (
        "SELECT rates.usd \nFROM rates \nWHERE rates.name = %(name_1)s::VARCHAR AND rates.credits > %(least)s"
    )
    assert on_pg.positiontup is None
    assert on_pg.construct_params({"least": None}) == {"name_1": RATE, "least": None}

    form = Prepared(statement).form(sqlite_dialect)
    assert (form.sql, form.bind({"least": 2})) == (on_sqlite.string, [RATE, 2.0])
    assert Prepared(statement).form(pg_dialect).bind({"least": 2}) == {"name_1": RATE, "least": 2}


def test_sqlite_binds_a_float_column_through_float_and_so_does_a_prepared_statement() -> None:
    sqlite_dialect, pg_dialect = _dialects()
    to_float = Float().dialect_impl(sqlite_dialect).bind_processor(sqlite_dialect)
    assert to_float is not None and type(to_float(1)) is float and to_float(None) is None
    assert Float().dialect_impl(pg_dialect).bind_processor(pg_dialect) is None
    bound = Prepared(
        Statements("sqlite").set_balance.statement, keys=["key_digest", "credits_remaining", "seen_at"]
    )
    values = bound.form(sqlite_dialect).bind({"key_digest": KEY, "credits_remaining": 1000, "seen_at": 5})
    assert values == [KEY, 1000.0, 5.0] and [type(value) for value in values] == [str, float, float]


def test_a_statement_whose_sql_is_final_only_when_run_is_refused() -> None:
    expanding = select(t.caps.c.spent).where(t.caps.c.scope.in_(bindparam("scopes", expanding=True)))
    for dialect in _dialects():
        assert "(__[POSTCOMPILE_scopes])" in expanding.compile(dialect=dialect).string
        with pytest.raises(ValueError, match="cannot run this statement on the cursor as compiled"):
            Prepared(expanding).form(dialect)


def test_a_thread_record_is_the_threads_row_column_by_column() -> None:
    assert tuple(ThreadRecord.__dataclass_fields__) == tuple(t.threads.columns.keys())


# --- on each engine -------------------------------------------------------------------------------


@pytest.fixture(params=ENGINES)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    where = {"memory": "memory", "sqlite": str(tmp_path / "store.sqlite3")}.get(request.param)
    opened = await Store.open(StoreLocation.parse(where or request.getfixturevalue("postgres_url")))
    try:
        yield opened
    finally:
        await opened.aclose()


def _call(call_id: str) -> CallRecord:
    return CallRecord(call_id, 1_000.0, KEY, None, None, "m/one")


async def _seed(store: Store) -> None:
    """A held call, a settled one (ints where the columns are floats), a thread."""
    await store.set_balance(KEY, 1000)  # type: ignore[arg-type]  # an int: it must come back a float
    for call_id in ("settled", "held"):
        await store.reserve([_call(call_id)], "me", ROWS, lambda _index, _figures: 3)  # type: ignore[arg-type, return-value]
    await store.note("held", generation_id="gen-1")
    await store.settle(
        _call("settled"),
        CallResult("answered", 2, credits_reported=True, prompt_tokens=5, completion_tokens=7, cost_usd=1),  # type: ignore[arg-type]
        balance=998,  # type: ignore[arg-type]
        rate_sample=(2, 1),  # type: ignore[arg-type]
    )
    await store.keep_turns(
        OWNER,
        None,
        "thr_" + "a" * 22,
        TURNS,
        ThreadLimits(ttl=3600, per_owner=2),
        system="be brief",
        title="hi",
    )


def _cases(dialect_name: str) -> list[tuple[str, Prepared, dict[str, Any]]]:
    """Every hot statement, with values as the store binds them."""
    q = Statements(dialect_name)
    these = row_values(ROWS)
    n = len(ROWS)
    hold = {
        "id": "new",
        "owner": "me",
        "started_at": 1.0,
        "credits": 0,
        "rows": "[]",
        "key_digest": KEY,
        "user_id": None,
        "project_id": None,
        "model_asked": "m/one",
        "generation_id": None,
        "ending": None,
    }
    ledger = {
        "call_id": "c",
        "started_at": 1,
        "ended_at": 2.0,
        "key_digest": KEY,
        "user_id": "u",
        "project_id": None,
        "model_asked": "m",
        "model": None,
        "provider": None,
        "generation_id": None,
        "prompt_tokens": 3,
        "completion_tokens": None,
        "cost_usd": 0.5,
        "credits": 1,
        "credits_reported": 1,
        "outcome": "answered",
    }
    whose = {"key": KEY, "user": None, "project": None}
    thread = {
        "id": "thr_" + "b" * 22,
        "key_digest": KEY,
        "user_id": None,
        "project_id": None,
        "created_at": 1.0,
        "updated_at": 1.0,
        "expires_at": 9e9,
        "system": None,
        "title": "t",
        "turns": 0,
        "chars": 0,
    }
    turn = {
        "thread_id": "thr_" + "a" * 22,
        "number": 9,
        "role": "user",
        "message": "{}",
        "model": None,
        "chars": 2,
        "created_at": 1,
    }
    return [
        ("add_rows", q.add_rows(n), these),
        ("lock_rows", q.lock_rows(n), these),
        ("raise_rows", q.raise_rows(n), {**these, "add_reserved": 1, "add_spent": 0.25}),
        ("figures", q.figures, {"key": KEY}),
        ("figures of an unknown key", q.figures, {"key": "x"}),
        ("rate", q.rate, {}),
        ("add_hold", q.add_hold, hold),
        ("note", q.note, {"hold_id": "held", "note_generation_id": None, "note_ending": "answered"}),
        ("take_hold", q.take_hold, {"hold_id": "held"}),
        ("add_ledger_row", q.add_ledger_row, ledger),
        ("set_balance", q.set_balance, {"key_digest": KEY, "credits_remaining": 7, "seen_at": 2.0}),
        ("spend_balance", q.spend_balance, {"key": KEY, "spent": 1, "seen_at": 3}),
        ("add_rate_sample", q.add_rate_sample, {"name": RATE, "credits": 2, "usd": 1}),
        ("thread owned", th._OWNED, {**whose, "id": "thr_" + "a" * 22, "now": 0}),
        ("threads beyond", th._BEYOND, {**whose, "keep": 0}),
        ("add thread", th._ADD_THREAD, thread),
        ("add turn", th._ADD_TURNS, turn),
        (
            "grow thread",
            th._GROW,
            {
                "thread_id": "thr_" + "a" * 22,
                "updated_at": 5,
                "expires_at": 9e9,
                "turns": 3,
                "chars": 4,
                "system": None,
            },
        ),
        ("forget turns", th._FORGET_TURNS(2), {"id_0": "thr_" + "a" * 22, "id_1": "x"}),
        ("forget threads", th._FORGET_THREADS(1), {"id_0": "thr_" + "c" * 22}),
    ]


@contextmanager
def _sent(engine: Engine) -> Iterator[list[tuple[str, Any]]]:
    """The SQL and values that reach the driver through SQLAlchemy's execution."""
    seen: list[tuple[str, Any]] = []

    def before(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool) -> None:
        seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", before)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", before)


def _typed(params: Any) -> Any:
    """Values with their types: 1 and 1.0 are equal, but not the same to a driver."""
    if isinstance(params, dict):
        return {name: (value, type(value)) for name, value in params.items()}
    return [(value, type(value)) for value in params]


def _in_rolled_back(engine: Engine, work: Any) -> Any:
    with engine.connect() as db, db.begin() as transaction:
        done = work(db)
        transaction.rollback()
    return done


@pytest.mark.parametrize("case", range(len(_cases("sqlite"))), ids=[name for name, _, _ in _cases("sqlite")])
async def test_each_hot_statement_sends_and_reads_what_connection_execute_does(
    store: Store, case: int
) -> None:
    await _seed(store)
    engine = store._engine
    _name, prepared, values = _cases(engine.dialect.name)[case]
    returns_rows = bool(prepared.statement.exported_columns)

    def through_sqlalchemy(db: Connection) -> list[tuple[Any, ...]] | None:
        result = db.execute(prepared.statement, values)
        return [tuple(row) for row in result] if returns_rows else None

    def on_the_cursor(db: Connection) -> list[tuple[Any, ...]] | None:
        if returns_rows:
            return Cursor(db).all(prepared, values)
        Cursor(db).run(prepared, values)
        return None

    with _sent(engine) as seen:
        expected = _in_rolled_back(engine, through_sqlalchemy)
    sql, params = seen[-1]
    form = prepared.form(engine.dialect)
    assert form.sql == sql
    assert _typed(form.bind(values)) == _typed(params)

    got = _in_rolled_back(engine, on_the_cursor)
    assert got == expected
    if got is not None:
        assert [[type(value) for value in row] for row in got] == [
            [type(value) for value in row] for row in expected
        ]
        assert all(type(row) is tuple for row in got)


async def test_values_come_back_with_the_types_of_their_columns(store: Store) -> None:
    await _seed(store)
    seen: list[Figures] = []

    def decide(_index: int, figures: Figures) -> float:
        seen.append(figures)
        return 0.0

    await store.reserve([_call("again")], "me", ROWS, decide)
    (figures,) = seen
    assert set(figures.rows) == set(ROWS)
    # 3 held by "held" and 3 by "settled" that settled at 2: spent 2, reserved 3, on each row.
    assert set(figures.rows.values()) == {(2.0, 3.0)}
    assert all(type(value) is float for pair in figures.rows.values() for value in pair)
    assert (figures.balance, type(figures.balance)) == (998.0, float)
    assert (figures.rate, type(figures.rate)) == (2.0, float)
    assert await store.rate() == 2.0

    kept = await store.thread("thr_" + "a" * 22, OWNER)
    assert kept is not None
    record, turns = kept
    assert (record.turns, record.chars, record.system, record.title) == (
        2,
        8
        + sum(
            len(turn_json)
            for turn_json in ('{"role": "user", "content": "hi"}', '{"role": "assistant", "content": "yo"}')
        ),
        "be brief",
        "hi",
    )
    assert type(record.turns) is int and type(record.chars) is int and type(record.created_at) is float
    assert [(turn.number, turn.role, turn.model) for turn in turns] == [
        (1, "user", None),
        (2, "assistant", "m/one"),
    ]
    (row,) = await store.usage(OWNER)
    assert (row.tally.prompt_tokens, row.tally.completion_tokens, row.tally.credits) == (5, 7, 2.0)


async def test_a_thread_continued_copied_and_past_the_owners_limit(store: Store) -> None:
    """The hot path of threads on each engine: continued (locked, grown), a new one copied from
    it (its row written before the copied turns: the foreign key), the least used forgotten."""
    await _seed(store)
    limits = ThreadLimits(ttl=3600, per_owner=2)
    first = "thr_" + "a" * 22
    before, stored = await store.keep_turns(
        OWNER, first, "thr_" + "z" * 22, TURNS, limits, system=None, title="x"
    )
    assert (before.id, before.turns, [turn.number for turn in stored]) == (first, 2, [3, 4])
    copy = "thr_" + "b" * 22
    before, stored = await store.keep_turns(
        OWNER, None, copy, TURNS[:1], limits, system=None, title="y", copied_from=first
    )
    assert (before.id, before.turns, [turn.number for turn in stored]) == (copy, 4, [5])
    kept = await store.thread(copy, OWNER)
    assert kept is not None and kept[0].turns == 5 and [turn.number for turn in kept[1]] == [1, 2, 3, 4, 5]
    await store.keep_turns(OWNER, None, "thr_" + "c" * 22, TURNS, limits, system=None, title="z")
    assert [record.id for record in await store.threads(OWNER, limit=10)] == ["thr_" + "c" * 22, copy]
    assert await store.thread(first, OWNER) is None and await store.turn(first, OWNER, 1) is None


async def test_the_cursor_runs_in_the_transaction_engine_begin_opened(store: Store) -> None:
    for engine in {store._engine, store._quick or store._engine}:
        with engine.connect() as db, db.begin() as transaction:
            driver = db.connection.dbapi_connection
            assert driver is db.connection.driver_connection  # sync drivers: one and the same
            if engine.dialect.name == "sqlite":
                assert driver.in_transaction  # BEGIN IMMEDIATE ran: the write lock is taken
            write = Statements(engine.dialect.name).set_balance
            Cursor(db).run(write, {"key_digest": "k", "credits_remaining": 1.0, "seen_at": 1.0})
            if engine.dialect.name == "postgresql":
                assert driver.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
            # SQLAlchemy's own execution sees the write: the same connection, the same transaction.
            found = db.execute(select(t.balances.c.credits_remaining).where(t.balances.c.key_digest == "k"))
            assert found.scalar() == 1.0
            transaction.rollback()
        assert await store.balance("k") is None


async def test_sqlite_finds_a_calls_cap_rows_by_their_primary_key(tmp_path: Path) -> None:
    """The rows bound as `(scope = ? AND period = ?) OR …`: an IN of tuples made SQLite scan every
    cap row of every caller, twice a reserve and twice a settle."""
    store = await Store.open(StoreLocation.parse(str(tmp_path / "store.sqlite3")))
    try:
        with store._engine.connect() as db:
            for prepared in (Statements.lock_rows(len(ROWS)), Statements.raise_rows(len(ROWS))):
                plan = db.exec_driver_sql(
                    f"EXPLAIN QUERY PLAN {prepared.form(db.dialect).sql}",
                    tuple(
                        prepared.form(db.dialect).bind(
                            {**row_values(ROWS), "add_reserved": 0, "add_spent": 0}
                        )
                    ),
                ).all()
                details = [row[-1] for row in plan]
                assert any(detail.startswith("SEARCH caps USING") for detail in details), details
                assert not any(detail.startswith("SCAN caps") for detail in details), details
    finally:
        await store.aclose()


def test_a_string_bind_is_sent_as_given() -> None:
    """No processor on String binds on either driver: text goes to the driver untouched."""
    for dialect in _dialects():
        assert String().dialect_impl(dialect).bind_processor(dialect) is None
