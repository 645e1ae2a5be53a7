"""Threads in the store: the SQL of reading, adding to and forgetting kept conversations.

Functions of one open transaction (`Store` runs them on its connections). A thread is found
only within a scope (`UsageScope`): a caller's own (`owned_by`), or what a reader may see; any
other id, an expired one, or one that never existed are the same: None.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Row, delete, insert, literal, select, update

from naive_mcp.store import tables as t
from naive_mcp.store.records import ThreadLimits, ThreadRecord, Turn, UsageScope
from naive_mcp.store.scopes import within

_threads = t.threads.c
_turns = t.turns.c


def find(
    db: Connection, thread_id: str, scope: UsageScope, now: float, *, lock: bool = False
) -> ThreadRecord | None:
    query = select(t.threads).where(
        _threads.id == thread_id, _threads.expires_at > now, *within(t.threads, scope)
    )
    row = db.execute(query.with_for_update() if lock else query).first()
    return None if row is None else _record(row)


def turns(db: Connection, thread_id: str, numbers: tuple[int, int] | None = None) -> list[Turn]:
    """The thread's turns in order; `numbers`, from and to (inclusive), only those."""
    query = select(_turns.number, _turns.role, _turns.message, _turns.model).where(
        _turns.thread_id == thread_id
    )
    if numbers is not None:
        query = query.where(_turns.number.between(*numbers))
    return [
        Turn(role=row.role, message=json.loads(row.message), model=row.model, number=row.number)
        for row in db.execute(query.order_by(_turns.number))
    ]


def listed(db: Connection, scope: UsageScope, now: float, limit: int) -> list[ThreadRecord]:
    """A scope's threads, the most recently used first."""
    query = (
        select(t.threads)
        .where(_threads.expires_at > now, *within(t.threads, scope))
        .order_by(_threads.updated_at.desc(), _threads.id)
        .limit(limit)
    )
    return [_record(row) for row in db.execute(query)]


def create(
    db: Connection,
    thread_id: str,
    owner: UsageScope,
    system: str | None,
    title: str,
    limits: ThreadLimits,
    now: float,
    copied_from: str | None = None,
) -> ThreadRecord:
    """A new, empty thread of `owner` (exactly one caller, `owned_by`), or a copy of the turns of
    `copied_from` (of the same owner); the owner's least recently used threads past
    `limits.per_owner` are forgotten."""
    assert owner.key_digest is not None and owner.user is not None and owner.project is not None
    turns_, size = 0, 0
    if copied_from is not None:
        source = db.execute(
            select(_threads.turns, _threads.chars, _threads.system).where(_threads.id == copied_from)
        ).first()
        if source is not None:
            turns_, size = source.turns, source.chars - len(source.system or "")
    db.execute(
        insert(t.threads).values(
            id=thread_id,
            key_digest=owner.key_digest,
            user_id=owner.user.value,
            project_id=owner.project.value,
            created_at=now,
            updated_at=now,
            expires_at=now + limits.ttl,
            system=system,
            title=title[:200],
            turns=turns_,
            chars=size + len(system or ""),
        )
    )
    if copied_from is not None and turns_:
        columns = [_turns.number, _turns.role, _turns.message, _turns.model, _turns.chars, _turns.created_at]
        db.execute(
            insert(t.turns).from_select(
                ["thread_id", "number", "role", "message", "model", "chars", "created_at"],
                select(literal(thread_id).label("thread_id"), *columns).where(
                    _turns.thread_id == copied_from, _turns.number <= turns_
                ),
            )
        )
    _forget_least_used(db, owner, limits.per_owner)
    record = find(db, thread_id, owner, now)
    assert record is not None
    return record


def add(
    db: Connection,
    record: ThreadRecord,
    new: Sequence[Turn],
    limits: ThreadLimits,
    now: float,
    *,
    system: str | None,
) -> list[Turn]:
    """Append `new` to a thread (found and locked in this transaction), setting its system
    prompt to `system` if given; the thread's expiry moves on. Returns the turns as stored."""
    first = record.turns + 1
    stored = [Turn(turn.role, turn.message, turn.model, number) for number, turn in enumerate(new, first)]
    rows = [
        {
            "thread_id": record.id,
            "number": turn.number,
            "role": turn.role,
            "message": json.dumps(turn.message, ensure_ascii=False),
            "model": turn.model,
            "chars": size_of(turn),
            "created_at": now,
        }
        for turn in stored
    ]
    if rows:
        db.execute(insert(t.turns), rows)
    added = sum(size_of(turn) for turn in stored)
    values: dict[str, object] = {
        "updated_at": now,
        "expires_at": now + limits.ttl,
        "turns": record.turns + len(rows),
        "chars": record.chars + added,
    }
    if system is not None:
        values["system"] = system
        values["chars"] = record.chars + added + len(system) - len(record.system or "")
    db.execute(update(t.threads).where(_threads.id == record.id).values(**values))
    return stored


def forget_expired(db: Connection, now: float) -> int:
    expired = select(_threads.id).where(_threads.expires_at <= now)
    db.execute(delete(t.turns).where(_turns.thread_id.in_(expired)))
    return db.execute(delete(t.threads).where(_threads.expires_at <= now)).rowcount


def size_of(turn: Turn) -> int:
    """What a turn counts toward its thread's size: the characters of its message as JSON."""
    return len(json.dumps(turn.message, ensure_ascii=False))


def _forget_least_used(db: Connection, owner: UsageScope, keep: int) -> None:
    conditions = within(t.threads, owner)
    beyond = (
        select(_threads.id)
        .where(*conditions)
        .order_by(_threads.updated_at.desc(), _threads.id.desc())
        .offset(keep)
    )
    ids = [row.id for row in db.execute(beyond)]
    if ids:
        db.execute(delete(t.turns).where(_turns.thread_id.in_(ids)))
        db.execute(delete(t.threads).where(_threads.id.in_(ids)))


def _record(row: Row[Any]) -> ThreadRecord:
    mapping = row._mapping  # SQLAlchemy's public name for a row's columns by name
    return ThreadRecord(**{name: mapping[name] for name in ThreadRecord.__dataclass_fields__})
