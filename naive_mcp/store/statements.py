"""The store's hot statements: compiled once per dialect by SQLAlchemy, run on the DBAPI cursor.

A chat call runs about fifteen statements on the store (`Store.reserve`, `note`, `settle`,
`keep_turns`). Through `Connection.execute` each cost ~11 µs of SQLAlchemy's per-execution
machinery (binding through the compiled form, expanding IN lists, events, result set-up) against
~1 µs for the DBAPI cursor itself: on a SQLite file that machinery was ~60% of a call's store time
(bench/history.md). So these statements are declared here as SQLAlchemy Core, as every other
statement of the store is, compiled once per dialect by SQLAlchemy itself (`Prepared`: the SQL is
its own, never written per dialect), and run on the cursor of the transaction's own connection
(`Cursor`), inside the transaction `engine.begin()` opened (SQLite's BEGIN IMMEDIATE included).
The cold statements (sweeps, usage, listings) stay on `Connection.execute`.

What `Prepared` keeps of SQLAlchemy's execution, so that values go in and come out as they did:
the statement's constants (`rates.name = 'credits_per_usd'`, SQLite's `LIMIT -1`), each bind's
processor (pysqlite's Float: `float()`), the order of a positional paramstyle (pysqlite: qmark;
psycopg takes pyformat by name), and each result column's processor, if its type has one for the
type the driver reports (none here today: SQLite's REAL and PostgreSQL's double precision come
back as floats). A list of rows (`(scope, period) …`) is compiled once per length (`Counted`); a
call's cap rows are 7 (`guard.cap_rows`), so there is one form, or two with USD caps.

tests/test_statements.py pins what this relies on from SQLAlchemy and checks that every statement
binds and reads on each engine exactly as `Connection.execute` does.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from operator import itemgetter
from typing import Any

from sqlalchemy import Connection, String, and_, bindparam, delete, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine.interfaces import DBAPICursor, Dialect
from sqlalchemy.sql.selectable import ExecutableReturnsRows

from naive_mcp.store import tables as t

RATE = "credits_per_usd"

_DialectKey = tuple[str, str, str]
_Row = tuple[Any, ...]
_NOTHING: Mapping[str, Any] = {}


def dialect_key(dialect: Dialect) -> _DialectKey:
    """What a compiled form depends on: the SQL dialect, its driver and the driver's paramstyle."""
    return (dialect.name, dialect.driver, dialect.paramstyle)


class _Form:
    """One statement compiled for one dialect: its SQL, and how values are bound and rows read."""

    __slots__ = ("_binders", "_constants", "_dialect", "_order", "_readers", "_types", "sql")

    def __init__(
        self, statement: ExecutableReturnsRows, dialect: Dialect, keys: Sequence[str] | None
    ) -> None:
        compiled: Any = statement.compile(dialect=dialect, column_keys=None if keys is None else list(keys))
        sql: str = compiled.string
        # An expanding IN list or a literal rendered at execution: the SQL is not final until run.
        if "__[POSTCOMPILE_" in sql or compiled.escaped_bind_names:
            raise ValueError(f"cannot run this statement on the cursor as compiled: {sql!r}")
        binds = compiled.binds
        required = {bind.key for bind in binds.values() if bind.required}
        # Every bind under the name it has in the SQL; the constants with their values.
        every: dict[str, Any] = compiled.construct_params(dict.fromkeys(required))
        self.sql = sql
        self._constants = {name: value for name, value in every.items() if name not in required}
        processors = {
            name: processor
            for name in every
            if (processor := binds[name].type.dialect_impl(dialect).bind_processor(dialect)) is not None
        }
        if dialect.positional:
            order: list[str] = list(compiled.positiontup)
            self._order: Callable[[Mapping[str, Any]], _Row] | None = _getter(order)
            self._binders: tuple[tuple[Any, Callable[[Any], Any]], ...] = tuple(
                (index, processors[name]) for index, name in enumerate(order) if name in processors
            )
        else:
            self._order = None
            self._binders = tuple(processors.items())
        self._types = [column.type for column in statement.exported_columns]
        self._dialect = dialect
        self._readers: list[Callable[[Any], Any] | None] | None = None  # known at the first rows

    def bind(self, values: Mapping[str, Any]) -> Any:
        """`values` (by bind name) as the driver takes them, as SQLAlchemy would pass them."""
        if self._constants:
            values = {**self._constants, **values}
        if self._order is None:
            if not self._binders:
                return values
            named = dict(values)
            for name, process in self._binders:
                named[name] = process(named[name])
            return named
        params = self._order(values)
        if not self._binders:
            return params
        listed = list(params)
        for index, process in self._binders:
            listed[index] = process(listed[index])
        return listed

    def read(self, cursor: DBAPICursor) -> list[_Row]:
        rows: list[_Row] = list(cursor.fetchall())
        readers = self._readers
        if readers is None:
            readers = self._readers = self._result_readers(cursor)
        if readers:
            return [
                tuple(v if read is None else read(v) for read, v in zip(readers, row, strict=True))
                for row in rows
            ]
        return rows

    def _result_readers(self, cursor: DBAPICursor) -> list[Callable[[Any], Any] | None]:
        """Each column's result processor for the type the driver reports (SQLAlchemy picks them
        the same way); an empty list when there are none at all."""
        description = cursor.description or ()
        if len(description) != len(self._types):
            raise ValueError(f"{len(description)} columns came back for {len(self._types)}: {self.sql!r}")
        readers = [
            kind.dialect_impl(self._dialect).result_processor(self._dialect, column[1])
            for kind, column in zip(self._types, description, strict=True)
        ]
        return readers if any(reader is not None for reader in readers) else []


def _getter(names: list[str]) -> Callable[[Mapping[str, Any]], _Row]:
    if not names:
        return lambda _values: ()
    if len(names) == 1:
        name = names[0]
        return lambda values: (values[name],)
    return itemgetter(*names)


class Prepared:
    """A SQLAlchemy statement, compiled for a dialect when first run on it; `keys`: the columns an
    INSERT names (as `Connection.execute` derives them from its values)."""

    __slots__ = ("_forms", "_keys", "statement")

    def __init__(self, statement: ExecutableReturnsRows, *, keys: Sequence[str] | None = None) -> None:
        self.statement = statement
        self._keys = keys
        self._forms: dict[_DialectKey, _Form] = {}

    def form(self, dialect: Dialect, key: _DialectKey | None = None) -> _Form:
        key = key or dialect_key(dialect)
        found = self._forms.get(key)
        if found is None:  # two threads may both compile it: the same form, one kept
            found = self._forms[key] = _Form(self.statement, dialect, self._keys)
        return found


class Counted:
    """A statement with `n` of something in it (cap rows, thread ids), built and compiled once per
    `n` (a handful of lengths in practice)."""

    __slots__ = ("_build", "_by_count")

    def __init__(self, build: Callable[[int], ExecutableReturnsRows]) -> None:
        self._build = build
        self._by_count: dict[int, Prepared] = {}

    def __call__(self, count: int) -> Prepared:
        found = self._by_count.get(count)
        if found is None:
            found = self._by_count[count] = Prepared(self._build(count))
        return found


class Cursor:
    """The DBAPI cursor of `db`'s connection, in the transaction `db` has open, running `Prepared`
    statements. (A DBAPI error comes out as the driver's, not wrapped in SQLAlchemy's.)"""

    __slots__ = ("_cursor", "_dialect", "_key")

    def __init__(self, db: Connection) -> None:
        dbapi = db.connection.dbapi_connection
        assert dbapi is not None, "a connection in a transaction has its DBAPI connection"
        self._cursor = dbapi.cursor()
        self._dialect = db.dialect
        self._key = dialect_key(db.dialect)

    def run(self, statement: Prepared, values: Mapping[str, Any] = _NOTHING) -> None:
        form = statement.form(self._dialect, self._key)
        self._cursor.execute(form.sql, form.bind(values))

    def many(self, statement: Prepared, rows: Sequence[Mapping[str, Any]]) -> None:
        """One statement for each of `rows` (the driver's executemany)."""
        form = statement.form(self._dialect, self._key)
        if len(rows) == 1:
            self._cursor.execute(form.sql, form.bind(rows[0]))
        elif rows:
            self._cursor.executemany(form.sql, [form.bind(values) for values in rows])

    def all(self, statement: Prepared, values: Mapping[str, Any] = _NOTHING) -> list[_Row]:
        form = statement.form(self._dialect, self._key)
        self._cursor.execute(form.sql, form.bind(values))
        return form.read(self._cursor)

    def first(self, statement: Prepared, values: Mapping[str, Any] = _NOTHING) -> _Row | None:
        rows = self.all(statement, values)
        return rows[0] if rows else None


# --- the statements of a chat call ------------------------------------------------------------

_caps = t.caps.c
_holds = t.holds.c
_balances = t.balances.c
_rates = t.rates.c


def row_values(rows: Sequence[tuple[str, str]]) -> dict[str, str]:
    """The values of `these_rows(len(rows))`: cap rows as (scope, period) pairs."""
    values: dict[str, str] = {}
    for index, (scope, period) in enumerate(rows):
        values[f"scope_{index}"] = scope
        values[f"period_{index}"] = period
    return values


def _these_rows(count: int) -> Any:
    """The cap rows bound by `row_values`, as `(scope = ? AND period = ?) OR …`: SQLite searches
    the primary key for each pair this way, and scans the whole table for `(scope, period) IN
    (VALUES …)` (what an expanding tuple IN compiles to); PostgreSQL searches its primary key
    for either (EXPLAIN: a BitmapOr)."""
    return or_(
        *(
            and_(
                _caps.scope == bindparam(f"scope_{index}", type_=String()),
                _caps.period == bindparam(f"period_{index}", type_=String()),
            )
            for index in range(count)
        )
    )


def _insert(dialect_name: str) -> Any:
    return postgresql.insert if dialect_name == "postgresql" else sqlite.insert


# Each dialect's own INSERT … ON CONFLICT; the two are built alike.
def _add_rows(insert: Any) -> Counted:
    """New cap rows at zero (row_values); the existing ones left as they are."""
    return Counted(
        lambda count: (
            insert(t.caps)
            .values(
                [
                    {
                        "scope": bindparam(f"scope_{index}", type_=String()),
                        "period": bindparam(f"period_{index}", type_=String()),
                        "spent": 0.0,
                        "reserved": 0.0,
                    }
                    for index in range(count)
                ]
            )
            .on_conflict_do_nothing()
        )
    )


def _set_balance(insert: Any) -> Prepared:
    """key_digest, credits_remaining, seen_at."""
    balance = insert(t.balances)
    return Prepared(
        balance.on_conflict_do_update(
            index_elements=[_balances.key_digest],
            set_={
                "credits_remaining": balance.excluded.credits_remaining,
                "seen_at": balance.excluded.seen_at,
            },
        ),
        keys=["key_digest", "credits_remaining", "seen_at"],
    )


def _add_rate_sample(insert: Any) -> Prepared:
    """name, credits, usd: added to the sums."""
    rate = insert(t.rates)
    return Prepared(
        rate.on_conflict_do_update(
            index_elements=[_rates.name],
            set_={"credits": _rates.credits + rate.excluded.credits, "usd": _rates.usd + rate.excluded.usd},
        ),
        keys=["name", "credits", "usd"],
    )


class Statements:
    """The hot statements, those whose SQL differs by dialect in how SQLAlchemy builds them
    (INSERT … ON CONFLICT) made for `dialect_name`; one instance per dialect."""

    def __init__(self, dialect_name: str) -> None:
        insert = _insert(dialect_name)
        # SQLite's BEGIN IMMEDIATE locks the whole database: no row needs locking (FOR UPDATE is
        # not even rendered there), so a statement run only to lock rows is left out.
        self.locks_rows = dialect_name == "postgresql"
        self.add_rows = _add_rows(insert)
        self.set_balance = _set_balance(insert)
        self.add_rate_sample = _add_rate_sample(insert)

    lock_rows = Counted(  # row_values: [(scope, period, spent, reserved)], locked in this order
        lambda count: (
            select(_caps.scope, _caps.period, _caps.spent, _caps.reserved)
            .where(_these_rows(count))
            .order_by(_caps.scope, _caps.period)
            .with_for_update()
        )
    )
    raise_rows = Counted(  # row_values, add_reserved, add_spent
        lambda count: (
            update(t.caps)
            .where(_these_rows(count))
            .values(
                reserved=_caps.reserved + bindparam("add_reserved"),
                spent=_caps.spent + bindparam("add_spent"),
            )
        )
    )
    # key: (the key's balance, the credits and the USD of the rate's sums); one row, None if none.
    figures = Prepared(
        select(
            select(_balances.credits_remaining)
            .where(_balances.key_digest == bindparam("key"))
            .scalar_subquery(),
            select(_rates.credits).where(_rates.name == RATE).scalar_subquery(),
            select(_rates.usd).where(_rates.name == RATE).scalar_subquery(),
        )
    )
    rate = Prepared(select(_rates.credits, _rates.usd).where(_rates.name == RATE))
    add_hold = Prepared(t.holds.insert(), keys=[column.key for column in t.holds.columns])
    note = Prepared(  # hold_id, note_generation_id or None, note_ending or None (None keeps it)
        update(t.holds)
        .where(_holds.id == bindparam("hold_id"))
        .values(
            generation_id=func.coalesce(
                bindparam("note_generation_id", type_=String()), _holds.generation_id
            ),
            ending=func.coalesce(bindparam("note_ending", type_=String()), _holds.ending),
        )
    )
    take_hold = Prepared(  # hold_id: [(credits, rows)]
        delete(t.holds).where(_holds.id == bindparam("hold_id")).returning(_holds.credits, _holds.rows)
    )
    add_ledger_row = Prepared(
        t.ledger.insert(), keys=[column.key for column in t.ledger.columns if column.key != "id"]
    )
    spend_balance = Prepared(  # key, spent, seen_at
        update(t.balances)
        .where(_balances.key_digest == bindparam("key"))
        .values(
            credits_remaining=_balances.credits_remaining - bindparam("spent"),
            seen_at=bindparam("seen_at"),
        )
    )
