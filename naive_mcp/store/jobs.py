"""Jobs in the store: the SQL of calls run in the background (`naive_mcp.jobs`).

Functions of one open transaction (`Store` runs them on its connections). A job is found only
within a scope (`UsageScope`): its owner's (`owned_by`); any other id, one that expired, or one
that never existed are the same: None. A job is written when it starts, as its progress comes
(at most about once a second), and when it ends; any process reads it, and asks the process
running it to stop it (`cancel_asked_at`, which that process polls while it runs jobs).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Select, delete, func, insert, or_, select, tuple_, update

from naive_mcp.store import tables as t
from naive_mcp.store.records import JobLimits, JobRecord, JobStatus, UsageScope, owned_by
from naive_mcp.store.scopes import within

_jobs = t.jobs.c
_FIELDS = tuple(JobRecord.__dataclass_fields__)  # the columns of `jobs`, in order
# What a job of a process that stopped says, once another process finds its lease gone.
STOPPED_MESSAGE = (
    "The server process running this job stopped (a restart or a crash) before it ended; what the "
    "call had spent is settled from the upstream's own figures."
)


def add(db: Connection, record: JobRecord, limits: JobLimits) -> int | None:
    """Write `record`, a new job, forgetting its owner's oldest ended jobs past
    `limits.per_owner - 1`. Writes nothing and returns how many of the owner's jobs are working
    when that is `limits.per_owner` already."""
    if db.dialect.name == "postgresql":
        # Two jobs of one owner starting at once must not both find room: one waits for the other.
        digest = hashlib.blake2b(record.key_digest.encode(), digest_size=8).digest()
        db.execute(select(func.pg_advisory_xact_lock(int.from_bytes(digest, "big", signed=True))))
    mine = within(t.jobs, owned_by(record.key_digest, record.user_id, record.project_id))
    working = db.execute(select(func.count()).select_from(t.jobs).where(*mine, _jobs.status == "working"))
    count = int(working.scalar_one())
    if count >= limits.per_owner:
        return count
    beyond = db.execute(
        select(_jobs.id)
        .where(*mine, _jobs.status != "working")
        .order_by(_jobs.created_at.desc(), _jobs.id.desc())
        .offset(max(limits.per_owner - 1 - count, 0))
    ).all()
    if beyond:
        db.execute(delete(t.jobs).where(_jobs.id.in_([row.id for row in beyond])))
    db.execute(insert(t.jobs).values({name: getattr(record, name) for name in _FIELDS}))
    return None


def find(db: Connection, job_id: str, scope: UsageScope, now: float) -> JobRecord | None:
    row = db.execute(select(t.jobs).where(_jobs.id == job_id, _alive(now), *within(t.jobs, scope))).first()
    return None if row is None else _record(row)


def listed(
    db: Connection, scope: UsageScope, now: float, limit: int, after: tuple[float, str] | None
) -> list[JobRecord]:
    """A scope's jobs, the newest first; `after`, a (created_at, id) of an earlier page's last."""
    query: Select[Any] = select(t.jobs).where(_alive(now), *within(t.jobs, scope))
    if after is not None:
        query = query.where(tuple_(_jobs.created_at, _jobs.id) < tuple_(*after))
    query = query.order_by(_jobs.created_at.desc(), _jobs.id.desc()).limit(limit)
    return [_record(row) for row in db.execute(query)]


def progress(db: Connection, job_id: str, message: str | None, partial: str | None, now: float) -> None:
    db.execute(
        update(t.jobs)
        .where(_jobs.id == job_id, _jobs.status == "working")
        .values(status_message=message, partial_text=partial, updated_at=now)
    )


def finish(
    db: Connection,
    job_id: str,
    status: JobStatus,
    message: str | None,
    partial: str | None,
    result: str | None,
    now: float,
    ttl: float,
) -> None:
    """The job's end, kept `ttl` seconds from now. (Also over a `failed` that another process
    wrote when it took this one's lease for gone: the job's own end is the truer one.)"""
    db.execute(
        update(t.jobs)
        .where(_jobs.id == job_id)
        .values(
            status=status,
            status_message=message,
            partial_text=partial,
            result=result,
            updated_at=now,
            expires_at=now + ttl,
        )
    )


def ask_cancel(db: Connection, job_id: str, scope: UsageScope, now: float) -> JobRecord | None:
    """Ask the process running the job to stop it; the job as it is (None: no such job)."""
    db.execute(
        update(t.jobs)
        .where(_jobs.id == job_id, _jobs.status == "working", *within(t.jobs, scope))
        .values(cancel_asked_at=now)
    )
    return find(db, job_id, scope, now)


def cancels_asked(db: Connection, job_ids: Sequence[str]) -> list[str]:
    found = db.execute(select(_jobs.id).where(_jobs.id.in_(job_ids), _jobs.cancel_asked_at.is_not(None)))
    return [row.id for row in found]


def fail_stopped(db: Connection, live: Any, now: float) -> int:
    """Jobs still working whose process's lease is gone (`live`: a SELECT of the live leases):
    failed, with the text that had arrived; kept their TTL from now."""
    return db.execute(
        update(t.jobs)
        .where(_jobs.status == "working", _jobs.runner.not_in(live))
        .values(
            status="failed",
            status_message=STOPPED_MESSAGE,
            updated_at=now,
            expires_at=now + (_jobs.expires_at - _jobs.created_at),
        )
    ).rowcount


def forget_expired(db: Connection, now: float) -> int:
    return db.execute(delete(t.jobs).where(_jobs.expires_at <= now, _jobs.status != "working")).rowcount


def _alive(now: float) -> Any:
    return or_(_jobs.expires_at > now, _jobs.status == "working")


def _record(row: Sequence[Any]) -> JobRecord:
    """A row of `jobs` (all its columns, in order)."""
    return JobRecord(**dict(zip(_FIELDS, row, strict=True)))
