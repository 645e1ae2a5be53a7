"""The store's hot statements, built once per dialect with bind parameters.

Building a SQLAlchemy statement (and its cache key) costs more than running it on SQLite: a
chat call's two transactions spent most of their time there (bench/history.md). Built once
here, each call only binds values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import String, bindparam, delete, func, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.types import TupleType

from naive_mcp.store import tables as t

RATE = "credits_per_usd"

_caps = t.caps.c
# A call's cap rows, as (scope, period) pairs, bound at run time.
_ROWS = bindparam("rows", expanding=True, type_=TupleType(String(), String()))
_THESE_ROWS = tuple_(_caps.scope, _caps.period).in_(_ROWS)


def _maybe(name: str) -> Any:
    """A text value that may be None (then the column keeps what it had)."""
    return bindparam(name, type_=String())


@dataclass(frozen=True)
class Statements:
    add_rows: Any  # executemany: [{scope, period, spent, reserved}]
    lock_rows: Any  # rows=…
    raise_rows: Any  # rows=…, add_reserved=…, add_spent=…
    balance: Any  # key=…
    rate: Any
    add_hold: Any  # the hold's columns
    note: Any  # hold_id=…, generation_id=… or None, ending=… or None
    take_hold: Any  # hold_id=…
    add_ledger_row: Any  # the ledger's columns
    set_balance: Any  # key_digest, credits_remaining, seen_at
    spend_balance: Any  # key=…, spent=…, seen_at=…
    add_rate_sample: Any  # name, credits, usd

    @classmethod
    def for_dialect(cls, name: str) -> Statements:
        insert = postgresql.insert if name == "postgresql" else sqlite.insert
        balance = insert(t.balances)
        rate = insert(t.rates)
        holds = t.holds.c
        return cls(
            add_rows=insert(t.caps).on_conflict_do_nothing(),
            lock_rows=select(_caps.scope, _caps.period, _caps.spent, _caps.reserved)
            .where(_THESE_ROWS)
            .order_by(_caps.scope, _caps.period)
            .with_for_update(),
            raise_rows=update(t.caps)
            .where(_THESE_ROWS)
            .values(
                reserved=_caps.reserved + bindparam("add_reserved"),
                spent=_caps.spent + bindparam("add_spent"),
            ),
            balance=select(t.balances.c.credits_remaining).where(t.balances.c.key_digest == bindparam("key")),
            rate=select(t.rates.c.credits, t.rates.c.usd).where(t.rates.c.name == RATE),
            add_hold=t.holds.insert(),
            note=update(t.holds)
            .where(holds.id == bindparam("hold_id"))
            .values(
                generation_id=func.coalesce(
                    bindparam("note_generation_id", type_=String()), holds.generation_id
                ),
                ending=func.coalesce(bindparam("note_ending", type_=String()), holds.ending),
            ),
            take_hold=delete(t.holds)
            .where(holds.id == bindparam("hold_id"))
            .returning(holds.credits, holds.rows),
            add_ledger_row=t.ledger.insert(),
            set_balance=balance.on_conflict_do_update(
                index_elements=[t.balances.c.key_digest],
                set_={
                    "credits_remaining": balance.excluded.credits_remaining,
                    "seen_at": balance.excluded.seen_at,
                },
            ),
            spend_balance=update(t.balances)
            .where(t.balances.c.key_digest == bindparam("key"))
            .values(
                credits_remaining=t.balances.c.credits_remaining - bindparam("spent"),
                seen_at=bindparam("seen_at"),
            ),
            add_rate_sample=rate.on_conflict_do_update(
                index_elements=[t.rates.c.name],
                set_={
                    "credits": t.rates.c.credits + rate.excluded.credits,
                    "usd": t.rates.c.usd + rate.excluded.usd,
                },
            ),
        )
