"""Threads in the store: the SQL of reading, adding to and forgetting kept conversations.

Functions of one open transaction (`Store` runs them on its connections). A thread is found
only within a scope (`UsageScope`): a caller's own (`owned_by`), or what a reader may see; any
other id, an expired one, or one that never existed are the same: None.

A chat call keeps its turns in one short transaction (`keep`): for a new thread (a call without
`thread_id`), the owner's threads past its limit looked up, the thread and its turns written; for
a continued one, the thread locked and read, its turns written, the thread updated. They are
declared once here and run on the transaction's DBAPI cursor (`statements.Prepared`: SQLAlchemy's
per-execution machinery cost more than running them on SQLite), so that keeping a thread adds
little to a call.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Integer, String, bindparam, delete, insert, literal, select, update

from naive_mcp.store import tables as t
from naive_mcp.store.records import ThreadLimits, ThreadRecord, Turn, UsageScope
from naive_mcp.store.scopes import within
from naive_mcp.store.statements import Counted, Cursor, Prepared

_threads = t.threads.c
_turns = t.turns.c
_FIELDS = tuple(ThreadRecord.__dataclass_fields__)  # the columns of `threads`, in order


def _of_owner(query: Any) -> Any:
    """`query` kept to the rows of one caller, bound as :key, :user and :project (None matches
    an empty column: the key's own subject, no project)."""
    return query.where(
        _threads.key_digest == bindparam("key"),
        _threads.user_id.is_not_distinct_from(bindparam("user", type_=String())),
        _threads.project_id.is_not_distinct_from(bindparam("project", type_=String())),
    )


# The hot statements of a chat call's thread.
_OWNED = Prepared(
    _of_owner(
        select(t.threads).where(_threads.id == bindparam("id"), _threads.expires_at > bindparam("now"))
    ).with_for_update()
)
_BEYOND = Prepared(
    _of_owner(select(_threads.id))
    .order_by(_threads.updated_at.desc(), _threads.id.desc())
    .offset(bindparam("keep", type_=Integer()))
)
_ADD_THREAD = Prepared(insert(t.threads), keys=_FIELDS)
_ADD_TURNS = Prepared(
    insert(t.turns), keys=["thread_id", "number", "role", "message", "model", "chars", "created_at"]
)
_GROW = Prepared(
    update(t.threads).where(_threads.id == bindparam("thread_id")),
    keys=["updated_at", "expires_at", "turns", "chars", "system"],
)


def _ids(count: int) -> Any:
    """The ids bound as :id_0, :id_1 …"""
    return [bindparam(f"id_{index}", type_=String()) for index in range(count)]


# An owner's threads past its limit, forgotten: turns first (the foreign key).
_FORGET_TURNS = Counted(lambda count: delete(t.turns).where(_turns.thread_id.in_(_ids(count))))
_FORGET_THREADS = Counted(lambda count: delete(t.threads).where(_threads.id.in_(_ids(count))))
_ALL_TURNS = (
    select(_turns.number, _turns.role, _turns.message, _turns.model)
    .where(_turns.thread_id == bindparam("id"))
    .order_by(_turns.number)
)


def find(db: Connection, thread_id: str, scope: UsageScope, now: float) -> ThreadRecord | None:
    query = select(t.threads).where(
        _threads.id == thread_id, _threads.expires_at > now, *within(t.threads, scope)
    )
    row = db.execute(query).first()
    return None if row is None else _record(row)


def turns(db: Connection, thread_id: str, numbers: tuple[int, int] | None = None) -> list[Turn]:
    """The thread's turns in order; `numbers`, from and to (inclusive), only those."""
    query = _ALL_TURNS if numbers is None else _ALL_TURNS.where(_turns.number.between(*numbers))
    return [
        Turn(role=row.role, message=json.loads(row.message), model=row.model, number=row.number)
        for row in db.execute(query, {"id": thread_id})
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


def keep(
    db: Connection,
    owner: UsageScope,
    thread_id: str | None,
    new_id: str,
    new: Sequence[Turn],
    limits: ThreadLimits,
    now: float,
    *,
    system: str | None,
    title: str,
    copied_from: str | None = None,
) -> tuple[ThreadRecord, list[Turn]]:
    """Add `new` to `owner`'s thread `thread_id` (locked first), setting its system prompt to
    `system` if given; or, when there is no such thread (none named, or it is gone), to a new
    thread `new_id` of `owner`'s — a copy of the turns of `copied_from`, another of `owner`'s
    threads, if given — forgetting `owner`'s least recently used threads past
    `limits.per_owner`. Returns the thread as it was before, and the turns as stored: none when
    they would take the thread past `limits.max_turns` or `limits.max_chars`."""
    assert owner.key_digest is not None and owner.user is not None and owner.project is not None
    whose = {"key": owner.key_digest, "user": owner.user.value, "project": owner.project.value}
    cursor = Cursor(db)
    found = cursor.first(_OWNED, {**whose, "id": thread_id, "now": now}) if thread_id else None
    if found is not None:
        record = _record(found)
        asked = sum(len(json.dumps(turn.message, ensure_ascii=False)) for turn in new[:-1])
        if record.turns + len(new) > limits.max_turns or record.chars + asked > limits.max_chars:
            return record, []  # filled meanwhile, by calls at once: checked here, with it locked
    else:
        record, source = _new(cursor, whose, new_id, system, title, limits, now, copied_from)
        system = None
    written = [json.dumps(turn.message, ensure_ascii=False) for turn in new]
    stored = [
        Turn(turn.role, turn.message, turn.model, number) for number, turn in enumerate(new, record.turns + 1)
    ]
    chars = record.chars + sum(map(len, written))
    if system is not None:
        chars += len(system) - len(record.system or "")
    grown = {
        "updated_at": now,
        "expires_at": now + limits.ttl,
        "turns": record.turns + len(stored),
        "chars": chars,
        "system": system if system is not None else record.system,
    }
    if found is not None:
        cursor.run(_GROW, {"thread_id": record.id, **grown})
    else:  # written once, as it is with the turns: before them (their foreign key)
        cursor.run(_ADD_THREAD, {**{name: getattr(record, name) for name in _FIELDS}, **grown})
        if source is not None:
            _copy_turns(db, source, record)
    if stored:
        cursor.many(
            _ADD_TURNS,
            [
                {
                    "thread_id": record.id,
                    "number": turn.number,
                    "role": turn.role,
                    "message": message,
                    "model": turn.model,
                    "chars": len(message),
                    "created_at": now,
                }
                for turn, message in zip(stored, written, strict=True)
            ],
        )
    return record, stored


def forget_expired(db: Connection, now: float) -> int:
    expired = select(_threads.id).where(_threads.expires_at <= now)
    db.execute(delete(t.turns).where(_turns.thread_id.in_(expired)))
    return db.execute(delete(t.threads).where(_threads.expires_at <= now)).rowcount


def _new(
    cursor: Cursor,
    whose: dict[str, Any],
    thread_id: str,
    system: str | None,
    title: str,
    limits: ThreadLimits,
    now: float,
    copied_from: str | None,
) -> tuple[ThreadRecord, ThreadRecord | None]:
    """A new thread as it will be before its turns (with the turns of `copied_from`, of the same
    owner, if it is there: returned too), not written yet; the owner's least used past
    `limits.per_owner - 1` forgotten to make room for it."""
    copied, chars = 0, 0
    found = cursor.first(_OWNED, {**whose, "id": copied_from, "now": now}) if copied_from else None
    source = None if found is None else _record(found)
    if source is not None:
        copied, chars = source.turns, source.chars - len(source.system or "")
    beyond = cursor.all(_BEYOND, {**whose, "keep": limits.per_owner - 1})
    if beyond:
        ids = {f"id_{index}": found_id for index, (found_id,) in enumerate(beyond)}
        cursor.run(_FORGET_TURNS(len(ids)), ids)
        cursor.run(_FORGET_THREADS(len(ids)), ids)
    record = ThreadRecord(
        id=thread_id,
        key_digest=whose["key"],
        user_id=whose["user"],
        project_id=whose["project"],
        created_at=now,
        updated_at=now,
        expires_at=now + limits.ttl,
        system=system,
        title=title[:200],
        turns=copied,
        chars=chars + len(system or ""),
    )
    return record, source


def _copy_turns(db: Connection, source: ThreadRecord, record: ThreadRecord) -> None:
    """`source`'s turns, as they were when it was read, copied into the new thread `record`."""
    columns = [_turns.number, _turns.role, _turns.message, _turns.model, _turns.chars, _turns.created_at]
    db.execute(
        insert(t.turns).from_select(
            ["thread_id", "number", "role", "message", "model", "chars", "created_at"],
            select(literal(record.id).label("thread_id"), *columns).where(
                _turns.thread_id == source.id, _turns.number <= source.turns
            ),
        )
    )


def _record(row: Sequence[Any]) -> ThreadRecord:
    """A row of `threads` (all its columns, in order)."""
    return ThreadRecord(**dict(zip(_FIELDS, row, strict=True)))
