"""Jobs: calls that run on after the request that started them, kept in the store.

    view = await jobs.start("naive_llm_chat", owner, run)    # at once: the job, working
    view = await jobs.wait(view.job_id, owner, 30)           # as soon as it ends, or after 30 s
    view = await jobs.cancel(view.job_id, owner)             # stops the upstream call

One mechanism for `background: true` (`naive_mcp.background`) and MCP tasks (`naive_mcp.tasks`):
the face hands over `run`, which makes the call exactly as a plain one would and returns its tool
result as JSON; this runs it in the server's own task group, writes its progress message and the
answer so far to the store (at most about once a second), and its result when it ends.

A job belongs to exactly one caller (API key and tenant): to anyone else, and once it has expired
(NAIVE_JOB_TTL after it ended), it does not exist, in the same words. A caller has at most
NAIVE_JOBS_PER_CALLER at once, and a process runs at most NAIVE_MAX_JOBS. Every process on the
store reads any job; one that runs elsewhere is read from the store and stopped through it (the
process running it polls for cancels while it runs jobs). A job whose process stopped is marked
failed by the next sweep (`Store.claim_orphans`) with the text that had arrived, and its spend is
settled as any dead process's call is.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import TaskGroup

from naive_mcp.caller import Caller
from naive_mcp.errors import ArgumentError
from naive_mcp.progress import ProgressReporter
from naive_mcp.settings import Settings
from naive_mcp.store import JobLimits, JobRecord, JobStatus, UsageScope, owned_by

if TYPE_CHECKING:
    from naive_mcp.store.store import Store

logger = logging.getLogger(__name__)

JOB_ID_PATTERN = r"^job_[A-Za-z0-9_-]{16,40}$"
# What a client polling a job is told to wait between two looks (MCP tasks' pollInterval).
POLL_INTERVAL_MS = 1_000
# A running job's progress goes to the store at most this often (seconds); this process reads its
# own jobs as they are, so only other processes see it this late.
_FLUSH_SECONDS = 1.0
# How often a process running jobs looks for cancels asked through another, and how often a
# process waiting on another's job reads it (seconds).
_CANCEL_POLL_SECONDS = 0.25
_REMOTE_POLL_SECONDS = 0.5
# How long a cancel waits for the job to stop (seconds); then it answers with the job as it is.
_CANCEL_WAIT_SECONDS = 10.0
SERVER_STOPPED = "The server stopped before this job ended (its partial answer is kept)."


@dataclass(frozen=True, slots=True)
class JobView:
    """A job as a reader sees it. `result`: the tool result (JSON), once it ended; None while
    it works, and for a job whose process stopped before it ended."""

    job_id: str
    tool: str
    status: JobStatus
    status_message: str | None
    partial_text: str
    created_at: float
    updated_at: float
    expires_at: float
    poll_interval_ms: int = POLL_INTERVAL_MS
    result: dict[str, Any] | None = None

    @property
    def done(self) -> bool:
        return self.status != "working"


@dataclass(frozen=True, slots=True)
class Answered:
    """What a job's `run` returns: its tool result as JSON, and whether that result is an error."""

    result: dict[str, Any]
    is_error: bool


Run = Callable[[ProgressReporter], Awaitable[Answered]]


@dataclass
class _Running:
    """A job this process runs."""

    view: JobView
    owner: UsageScope
    reporter: ProgressReporter | None = None
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    done: anyio.Event = field(default_factory=anyio.Event)
    changed: bool = False
    cancel_asked: bool = False
    end_unwritten: bool = False  # it ended, and the store was away: kept here until it is written


class Jobs:
    def __init__(self, settings: Settings, store: Callable[[], Awaitable[Store]], runner: str) -> None:
        """`runner`: this process's lease in the store (its jobs fail when the lease lapses)."""
        self._settings = settings
        self._store = store
        self._runner = runner
        self._limits = JobLimits(ttl=settings.job_ttl, per_owner=settings.jobs_per_caller)
        self._running: dict[str, _Running] = {}
        # Jobs being written to the store, not running yet: counted against NAIVE_MAX_JOBS, so that
        # starts arriving together cannot all find room while each waits for its write.
        self._starting = 0
        self._any_running = anyio.Event()
        self._tasks: TaskGroup | None = None

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """While the server serves: jobs run here, and cancels asked elsewhere reach them. On the
        way out, jobs still working stop, kept as failed with their partial answer."""
        async with anyio.create_task_group() as tasks:
            self._tasks = tasks
            tasks.start_soon(self._watch_cancels)
            try:
                yield
            finally:
                self._tasks = None
                tasks.cancel_scope.cancel()

    # --- starting and running -------------------------------------------------------------------

    async def start(self, tool: str, caller: Caller, run: Run) -> JobView:
        """Start `run` as a job of `caller`'s; refused (nothing run) when `caller` has
        NAIVE_JOBS_PER_CALLER working already, or this process NAIVE_MAX_JOBS."""
        if self._tasks is None:
            raise ArgumentError(
                "background: this server is not running jobs (it is stopping); call again without it.",
                kind="jobs_off",
            )
        if len(self._running) + self._starting >= self._settings.max_jobs:
            raise ArgumentError(
                f"background: this server runs {self._settings.max_jobs} jobs now, the most it runs at once "
                "(NAIVE_MAX_JOBS). Try again when one has ended, or call without background.",
                kind="too_many_jobs",
            )
        now = time.time()
        record = JobRecord(
            id=f"job_{secrets.token_urlsafe(18)}",
            key_digest=caller.key_digest,
            user_id=caller.user,
            project_id=caller.project_id,
            tool=tool,
            status="working",
            status_message=None,
            partial_text=None,
            result=None,
            created_at=now,
            updated_at=now,
            expires_at=now + self._limits.ttl,
            runner=self._runner,
            cancel_asked_at=None,
        )
        self._starting += 1
        try:
            store = await self._store()
            working = await store.add_job(record, self._limits)
        finally:
            self._starting -= 1
        if working is not None:
            raise ArgumentError(
                f"background: you have {working} jobs working, the most one caller runs at once here "
                "(NAIVE_JOBS_PER_CALLER). Wait for one with naive_llm_result(job_id, wait_seconds), or "
                "stop one with cancel=true, then start this one.",
                kind="too_many_jobs",
            )
        job = _Running(_view(record), _scope_of(caller))
        self._running[record.id] = job
        self._any_running.set()
        self._tasks.start_soon(self._run, job, run, store)
        logger.info("job %s started (%s)", record.id, tool)
        return job.view

    async def _run(self, job: _Running, run: Run, store: Store) -> None:
        settings = self._settings

        async def sink(progress: float, message: str) -> None:
            job.view = _replace(job.view, status_message=message)
            job.changed = True

        reporter = ProgressReporter(
            sink, interval=settings.progress_interval, heartbeat=settings.heartbeat_interval
        )
        job.reporter = reporter
        status: JobStatus = "failed"
        message: str | None = None
        result: dict[str, Any] | None = None
        try:
            async with anyio.create_task_group() as flushing:
                flushing.start_soon(self._flush, job, store)
                with job.scope:
                    answered = await run(reporter)
                    result = answered.result
                    status = "failed" if answered.is_error else "completed"
                flushing.cancel_scope.cancel()
            if result is None:  # its scope was cancelled: asked for, or the server stopping
                status = "cancelled" if job.cancel_asked else "failed"
                message = "Cancelled." if job.cancel_asked else SERVER_STOPPED
        except anyio.get_cancelled_exc_class():
            message = SERVER_STOPPED
            raise
        except Exception:
            logger.exception("job %s failed unexpectedly", job.view.job_id)
            message = "The job failed on an unexpected error in the server (its log says more)."
        finally:
            partial = self._partial(reporter)
            job.view = _replace(
                job.view,
                status=status,
                status_message=message if message is not None else job.view.status_message,
                partial_text=partial,
                result=result,
            )
            with anyio.CancelScope(shield=True):
                await self._write_end(job, store)
            job.done.set()
            logger.info("job %s %s", job.view.job_id, status)

    async def _write_end(self, job: _Running, store: Store) -> None:
        """The job's end to the store, and the job no longer this process's to answer. If the store
        is away, the job stays here (read as it ended) and the write is tried again with the
        cancels' polling: in the store it would read as working for ever, this process's lease
        being alive, and count against its caller's NAIVE_JOBS_PER_CALLER."""
        view = job.view
        try:
            await store.finish_job(
                view.job_id,
                view.status,
                view.status_message,
                view.partial_text,
                None if view.result is None else json.dumps(view.result, ensure_ascii=False),
                self._limits.ttl,
            )
        except Exception as exc:
            if not job.end_unwritten:
                logger.warning("could not write job %s's end: %s", view.job_id, type(exc).__name__)
            job.end_unwritten = True
            return
        job.end_unwritten = False
        del self._running[view.job_id]
        if not self._running:
            self._any_running = anyio.Event()

    def _partial(self, reporter: ProgressReporter) -> str:
        """The answer so far, its beginning up to NAIVE_MAX_RESULT_CHARS."""
        return reporter.answer_so_far()[: self._settings.max_result_chars]

    async def _flush(self, job: _Running, store: Store) -> None:
        """The job's progress to the store, for other processes to read, at most every second."""
        while True:
            await anyio.sleep(_FLUSH_SECONDS)
            if not job.changed or job.reporter is None:
                continue
            job.changed = False
            partial = self._partial(job.reporter)
            job.view = _replace(job.view, partial_text=partial)
            try:
                await store.job_progress(job.view.job_id, job.view.status_message, partial)
            except Exception as exc:  # the store is away: the job runs on, its end is written
                logger.warning("could not write job %s's progress: %s", job.view.job_id, type(exc).__name__)

    async def _watch_cancels(self) -> None:
        """Cancels asked through another process, for the jobs running here."""
        while True:
            await self._any_running.wait()
            await anyio.sleep(_CANCEL_POLL_SECONDS)
            ids = list(self._running)
            if not ids:
                continue
            try:
                store = await self._store()
                for ended in [job for job in self._running.values() if job.end_unwritten]:
                    await self._write_end(ended, store)
                asked = await store.job_cancels(ids)
            except Exception as exc:
                logger.warning("could not read the jobs' cancels: %s", type(exc).__name__)
                continue
            for job_id in asked:
                job = self._running.get(job_id)
                if job is not None and not job.cancel_asked:
                    logger.info("job %s: cancel asked through another process", job_id)
                    job.cancel_asked = True
                    job.scope.cancel()

    # --- reading and stopping -------------------------------------------------------------------

    async def get(self, job_id: str, caller: Caller) -> JobView:
        """`caller`'s job `job_id` as it is now (`job_not_found` for anyone else's)."""
        scope = _scope_of(caller)
        local = self._running.get(job_id)
        if local is not None and local.owner == scope:
            return self._live(local)
        found = await (await self._store()).job(job_id, scope)
        if found is None:
            raise self._not_found(job_id)
        return _view(found)

    async def wait(self, job_id: str, caller: Caller, seconds: float) -> JobView:
        """The job once it has ended, or as it is after `seconds`, whichever is first."""
        view = await self.get(job_id, caller)
        if view.done or seconds <= 0:
            return view
        local = self._running.get(job_id)
        with anyio.move_on_after(seconds):
            if local is not None:
                await local.done.wait()
                return local.view
            while not view.done:  # it runs in another process: read it there, now and then
                await anyio.sleep(_REMOTE_POLL_SECONDS)
                view = await self.get(job_id, caller)
            return view
        return await self.get(job_id, caller)

    async def cancel(self, job_id: str, caller: Caller) -> JobView:
        """Stop the job (the upstream call closes, its spend is settled for what was generated),
        and answer with it once it has stopped (or as it is after 10 s). A job that ended already
        is answered as it is."""
        scope = _scope_of(caller)
        local = self._running.get(job_id)
        if local is not None and local.owner == scope:
            local.cancel_asked = True
            local.scope.cancel()
            with anyio.move_on_after(_CANCEL_WAIT_SECONDS):
                await local.done.wait()
            return self._live(local)
        found = await (await self._store()).ask_job_cancel(job_id, scope)
        if found is None:
            raise self._not_found(job_id)
        return await self.wait(job_id, caller, _CANCEL_WAIT_SECONDS)

    async def list(self, caller: Caller, cursor: str | None, limit: int) -> tuple[list[JobView], str | None]:
        """`caller`'s jobs, the newest first, a page of `limit`; the cursor of the next page."""
        after = _after(cursor) if cursor is not None else None
        found = await (await self._store()).jobs(_scope_of(caller), limit + 1, after)
        views = [self._live(self._running[r.id]) if r.id in self._running else _view(r) for r in found]
        if len(views) <= limit:
            return views, None
        last = found[limit - 1]
        return views[:limit], f"{last.created_at!r}:{last.id}"

    def _live(self, job: _Running) -> JobView:
        """A job running here as it is this moment (its partial answer read now)."""
        if job.reporter is None or job.view.done:
            return job.view
        return _replace(job.view, partial_text=self._partial(job.reporter))

    def _not_found(self, job_id: str) -> ArgumentError:
        return ArgumentError(
            f"job_id: there is no job {job_id} of yours. A job belongs to the API key and tenant "
            f"(user_id, project_id) that started it, and is deleted {_duration(self._limits.ttl)} after "
            "it ended.",
            kind="job_not_found",
        )


def _scope_of(caller: Caller) -> UsageScope:
    return owned_by(caller.key_digest, caller.user, caller.project_id)


def _view(record: JobRecord) -> JobView:
    return JobView(
        job_id=record.id,
        tool=record.tool,
        status=record.status,
        status_message=record.status_message,
        partial_text=record.partial_text or "",
        created_at=record.created_at,
        updated_at=record.updated_at,
        expires_at=record.expires_at,
        result=None if record.result is None else json.loads(record.result),
    )


def _replace(view: JobView, **changes: Any) -> JobView:
    return replace(view, updated_at=time.time(), **changes)


def _after(cursor: str) -> tuple[float, str]:
    created, _, job_id = cursor.partition(":")
    try:
        return float(created), job_id
    except ValueError:
        raise ArgumentError(
            "cursor: not one this server gave; use nextCursor from the last page, or leave it out.",
            kind="invalid_arguments",
        ) from None


def _duration(seconds: float) -> str:
    units = (("day", 86_400), ("hour", 3_600), ("minute", 60))
    unit, size = next(((unit, size) for unit, size in units if seconds >= size), ("second", 1))
    count = seconds / size
    return f"{count:g} {unit}{'' if count == 1 else 's'} (NAIVE_JOB_TTL)"
