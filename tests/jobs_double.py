"""A stand-in for `naive_mcp.background.BackgroundCalls` (branch `jobs`), in memory, for the tasks
tests until that branch merges; then these tests run on the real one and this file goes.

It follows the interface in /work/notes/helper-common.md ("The jobs interface"), no more: a job
runs in a task group the test holds, its progress messages are its status message, a result
with isError marks it failed, cancel cancels its scope.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import anyio
from anyio.abc import TaskGroup
from mcp_types import CallToolResult

from naive_mcp.caller import Caller
from naive_mcp.errors import ArgumentError
from naive_mcp.services import Services
from naive_mcp.tasks import ProgressSink, TaskStatus


@dataclass(frozen=True)
class View:
    job_id: str
    tool: str
    status: TaskStatus
    status_message: str | None
    partial_text: str
    created_at: float
    updated_at: float
    expires_at: float | None
    poll_interval_ms: int | None = 200


@dataclass
class _Job:
    view: View
    owner: Caller
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    done: anyio.Event = field(default_factory=anyio.Event)
    result: CallToolResult | None = None


class JobsDouble:
    def __init__(self, tasks: TaskGroup, ttl: float = 600.0) -> None:
        self._tasks = tasks
        self._ttl = ttl
        self._jobs: dict[str, _Job] = {}

    async def start(
        self,
        tool: str,
        arguments: dict[str, Any],
        caller: Caller,
        run: Callable[[ProgressSink], Awaitable[CallToolResult]],
    ) -> View:
        now = time.time()
        view = View(f"job_{secrets.token_urlsafe(12)}", tool, "working", None, "", now, now, now + self._ttl)
        job = _Job(view, caller)
        self._jobs[view.job_id] = job

        async def sink(progress: float, message: str) -> None:
            job.view = replace(job.view, status_message=message, updated_at=time.time())

        async def body() -> None:
            status: TaskStatus = "cancelled"
            with job.scope:
                job.result = await run(sink)
                status = "failed" if job.result.is_error else "completed"
            job.view = replace(job.view, status=status, updated_at=time.time())
            job.done.set()

        self._tasks.start_soon(body)
        return view

    def _find(self, job_id: str, caller: Caller) -> _Job:
        job = self._jobs.get(job_id)
        if job is None or job.owner != caller:
            raise ArgumentError(f"no job {job_id} of yours (it may have expired)", kind="job_not_found")
        return job

    async def get(self, job_id: str, caller: Caller) -> View:
        return self._find(job_id, caller).view

    async def wait(self, job_id: str, caller: Caller, seconds: float) -> View:
        job = self._find(job_id, caller)
        with anyio.move_on_after(seconds):
            await job.done.wait()
        return job.view

    async def result(self, job_id: str, caller: Caller) -> CallToolResult:
        job = self._find(job_id, caller)
        await job.done.wait()
        if job.result is None:
            raise ArgumentError(f"job {job_id} was cancelled: it has no result", kind="job_cancelled")
        return job.result

    async def cancel(self, job_id: str, caller: Caller) -> View:
        job = self._find(job_id, caller)
        job.scope.cancel()
        await job.done.wait()
        return job.view

    async def list(self, caller: Caller, cursor: str | None, limit: int) -> tuple[list[View], str | None]:
        return [job.view for job in self._jobs.values() if job.owner == caller][:limit], None


class ServicesWithJobs(Services):
    """`Services` as the jobs branch will have it: with a `background`."""

    background: JobsDouble


@asynccontextmanager
async def services_with_jobs(services: Services) -> AsyncIterator[ServicesWithJobs]:
    assert isinstance(services, ServicesWithJobs)
    async with services.running(), anyio.create_task_group() as tasks:
        object.__setattr__(services, "background", JobsDouble(tasks))
        yield services
        tasks.cancel_scope.cancel()
