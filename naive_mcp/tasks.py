"""MCP tasks (protocol 2025-11-25): a long chat or compare that outlives the client's timeout.

A client that sends `tools/call` with a `task` gets a task at once (`CreateTaskResult`), and the
call runs on as a job (`naive_mcp.jobs`: one mechanism for tasks and for `background: true`).
It then asks `tasks/get` (status, and the progress so far as `statusMessage`), `tasks/result`
(waits for the end, then the very result a plain call gives), `tasks/list` (its own tasks only)
and `tasks/cancel` (stops the upstream call; the reservation is settled for what was generated).

The SDK (mcp 2.3) has the types but no runtime for them: `tasks/*` are not in its per-version
method tables, so they are served as custom methods (`Server.add_request_handler`, through the
public `Extension.methods`), and its 2025-11-25 `tools/call` result surface is `CallToolResult`
only, which a `CreateTaskResult` fails. So one `ServerMiddleware` (public, provisional in 2.x;
tests/test_tasks.py pins what it relies on) answers a task-augmented call before that surface,
adds `capabilities.tasks` to the `initialize` result (the SDK builds capabilities without it),
and `execution.taskSupport` to the tools that have it in `tools/list` (`MCPServer.list_tools`
drops a tool's `execution`).

Only 2025-11-25 connections see any of it. The 2026-07-28 revision moved tasks to the
`io.modelcontextprotocol/tasks` extension (SEP-2663) with another lifecycle — the result inline
in `tasks/get`, `tasks/update`, no `tasks/list` or `tasks/result`, task creation decided by the
server — which this server does not speak yet, so it does not advertise the extension.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.extension import Extension, MethodBinding
from mcp.server.mcpserver.tools import Tool
from mcp.shared.exceptions import MCPError
from mcp_types import (
    INVALID_PARAMS,
    METHOD_NOT_FOUND,
    CancelTaskRequestParams,
    GetTaskPayloadRequestParams,
    GetTaskRequestParams,
    PaginatedRequestParams,
    Task,
)
from mcp_types.methods import serialize_server_result

from naive_mcp.background import FILE_ARGUMENTS, answered, job_answer, roots_now
from naive_mcp.caller import Caller
from naive_mcp.errors import NaiveError
from naive_mcp.jobs import Answered, Jobs, JobView
from naive_mcp.progress import ProgressReporter
from naive_mcp.services import Services
from naive_mcp.tools import RegistryTool, roots_for

logger = logging.getLogger(__name__)

TASKS_VERSION: Final = "2025-11-25"  # the one protocol revision with tasks in its core
RELATED_TASK: Final = "io.modelcontextprotocol/related-task"
# The tools a task may run: the two that spend time upstream. The rest answer at once.
TASK_TOOLS: Final = frozenset({"naive_llm_chat", "naive_llm_compare"})
TASKS_CAPABILITY: Final[dict[str, Any]] = {"list": {}, "cancel": {}, "requests": {"tools": {"call": {}}}}
TASKS_PAGE: Final = 50
RESULT_WAIT: Final = 30.0  # seconds per wait inside one tasks/result
MAX_TASK_ID: Final = 200  # longer is no id this server made


def task_methods(tools: Sequence[Tool]) -> tuple[Extension, TaskMiddleware]:
    """What `create_server` adds: the `tasks/*` methods, and the middleware for the rest."""
    runnable = {
        tool.name: tool for tool in tools if tool.name in TASK_TOOLS and isinstance(tool, RegistryTool)
    }
    return _TaskMethods(), TaskMiddleware(runnable)


def _task(view: JobView) -> Task:
    return Task(
        task_id=view.job_id,
        status=view.status,
        status_message=view.status_message or None,
        created_at=_iso(view.created_at),
        last_updated_at=_iso(view.updated_at),
        ttl=max(round((view.expires_at - view.created_at) * 1000), 0),
        poll_interval=view.poll_interval_ms,
    )


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


def _services(ctx: ServerRequestContext[Any, Any]) -> tuple[Services, Jobs]:
    services: Services = ctx.lifespan_context
    return services, services.jobs


def _owner(services: Services) -> Caller:
    """Whose tasks a request may see: the caller of a call made without tenant arguments."""
    try:
        return services.caller(services.access.grant(get_access_token()), None, None)
    except NaiveError as error:
        raise MCPError(code=INVALID_PARAMS, message=error.describe()) from None


def _task_id(raw: str) -> str:
    if not raw or len(raw) > MAX_TASK_ID or not raw.isprintable():
        raise MCPError(
            code=INVALID_PARAMS,
            message="taskId: not an id this server gave; use a taskId from CreateTaskResult or tasks/list",
        )
    return raw


def _not_found(error: NaiveError) -> MCPError:
    # Unknown and another caller's read the same (`BackgroundCalls`), so nothing leaks.
    return MCPError(code=INVALID_PARAMS, message=error.describe())


class _TaskMethods(Extension):
    """`tasks/get`, `tasks/result`, `tasks/list`, `tasks/cancel`, for 2025-11-25 connections."""

    # The 2025-11-25 core capability is `capabilities.tasks` (added by `TaskMiddleware`), not an
    # extension; this identifier only names the bundle, and `TaskMiddleware` removes its entry
    # from the advertised extensions until the 2026-07-28 extension is spoken.
    identifier = "io.modelcontextprotocol/tasks"

    def methods(self) -> Sequence[MethodBinding]:
        versions = frozenset({TASKS_VERSION})
        return (
            MethodBinding("tasks/get", GetTaskRequestParams, _get, versions),
            MethodBinding("tasks/result", GetTaskPayloadRequestParams, _result, versions),
            MethodBinding("tasks/list", PaginatedRequestParams, _list, versions),
            MethodBinding("tasks/cancel", CancelTaskRequestParams, _cancel, versions),
        )


async def _get(ctx: ServerRequestContext[Any, Any], params: GetTaskRequestParams) -> HandlerResult:
    services, jobs = _services(ctx)
    try:
        view = await jobs.get(_task_id(params.task_id), _owner(services))
    except NaiveError as error:
        raise _not_found(error) from None
    return _wire(view)


async def _result(ctx: ServerRequestContext[Any, Any], params: GetTaskPayloadRequestParams) -> HandlerResult:
    """Waits for the end (the spec: `tasks/result` blocks until the task is terminal)."""
    services, jobs = _services(ctx)
    task_id, owner = _task_id(params.task_id), _owner(services)
    try:
        while not (view := await jobs.wait(task_id, owner, RESULT_WAIT)).done:
            pass  # each wait is bounded, so a cancelled request stops waiting
    except NaiveError as error:
        raise _not_found(error) from None
    result = job_answer(view, links=True)  # a 2025-11-25 client reads resource links
    # Shaped by the 2025-11-25 surface, as the plain call's answer is (no later revision's fields).
    dumped = serialize_server_result(
        "tools/call", TASKS_VERSION, result.model_dump(by_alias=True, mode="json")
    )
    dumped["_meta"] = {**dumped.get("_meta", {}), RELATED_TASK: {"taskId": task_id}}
    return dumped


async def _list(ctx: ServerRequestContext[Any, Any], params: PaginatedRequestParams) -> HandlerResult:
    services, jobs = _services(ctx)
    try:
        views, cursor = await jobs.list(_owner(services), params.cursor, TASKS_PAGE)
    except NaiveError as error:
        raise MCPError(code=INVALID_PARAMS, message=error.describe()) from None
    listing: dict[str, Any] = {"tasks": [_wire(view) for view in views]}
    if cursor is not None:
        listing["nextCursor"] = cursor
    return listing


async def _cancel(ctx: ServerRequestContext[Any, Any], params: CancelTaskRequestParams) -> HandlerResult:
    services, jobs = _services(ctx)
    task_id, owner = _task_id(params.task_id), _owner(services)
    try:
        before = await jobs.get(task_id, owner)
        if before.status != "working":
            raise MCPError(
                code=INVALID_PARAMS,
                message=f"Cannot cancel task {task_id}: it is already {before.status}",
            )
        view = await jobs.cancel(task_id, owner)
    except NaiveError as error:
        raise _not_found(error) from None
    return _wire(view)


def _wire(view: JobView) -> dict[str, Any]:
    task = _task(view)
    # `ttl` is required on the wire (null: unlimited), so it is never left out.
    return task.model_dump(by_alias=True, mode="json", exclude_none=True) | {"ttl": task.ttl}


class TaskMiddleware:
    """The parts of 2025-11-25 tasks the SDK's own pipeline cannot carry (module docstring)."""

    def __init__(self, tools: Mapping[str, RegistryTool]) -> None:
        self._tools = tools

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        method = ctx.method
        if method in ("initialize", "server/discover"):
            answer = await call_next(ctx)
            if isinstance(answer, dict):
                capabilities = answer.setdefault("capabilities", {})
                _unadvertise(capabilities)
                if answer.get("protocolVersion") == TASKS_VERSION:
                    capabilities["tasks"] = TASKS_CAPABILITY
            return answer
        if ctx.protocol_version != TASKS_VERSION:
            return await call_next(ctx)
        if method == "tools/list":
            answer = await call_next(ctx)
            if isinstance(answer, dict):
                for tool in answer.get("tools", []):
                    if tool.get("name") in self._tools:
                        tool["execution"] = {"taskSupport": "optional"}
            return answer
        params = ctx.params
        if method == "tools/call" and isinstance(params, Mapping) and params.get("task") is not None:
            return await self._create(ctx, params)
        return await call_next(ctx)

    async def _create(self, ctx: ServerRequestContext[Any, Any], params: Mapping[str, Any]) -> HandlerResult:
        name, arguments, _ = _task_call(params)
        tool = self._tools.get(name)
        if tool is None:
            raise MCPError(
                code=METHOD_NOT_FOUND,
                message=f"{name}: this tool does not run as a task (tools/list shows execution.taskSupport "
                f"on those that do: {', '.join(sorted(self._tools))}); call it without `task`",
            )
        services, jobs = _services(ctx)
        access = get_access_token()
        owner = _owner(services)
        roots = roots_for(ctx, services)
        if any(arguments.get(name) for name in FILE_ARGUMENTS):
            roots = await roots_now(roots)  # tests/test_tasks.py

        async def run(reporter: ProgressReporter) -> Answered:
            return answered(
                await tool.call_as_job(arguments, services, access=access, reporter=reporter, roots=roots)
            )

        # The asked ttl is taken as a wish (the spec lets the receiver choose): every job keeps the
        # operator's NAIVE_JOB_TTL, which the task's own `ttl` reports.
        try:
            view = await jobs.start(name, owner, run)
        except NaiveError as error:  # too_many_jobs, jobs_off: refused by name, nothing started
            raise MCPError(code=INVALID_PARAMS, message=error.describe()) from None
        logger.info("task %s started for %s", view.job_id, name)
        return {"task": _wire(view)}


def _unadvertise(capabilities: dict[str, Any]) -> None:
    """Drop the bundle's name from `capabilities.extensions` (see `_TaskMethods`)."""
    extensions = capabilities.get("extensions")
    if isinstance(extensions, dict):
        extensions.pop(_TaskMethods.identifier, None)
        if not extensions:
            del capabilities["extensions"]


def _task_call(params: Mapping[str, Any]) -> tuple[str, dict[str, Any], int | None]:
    """The tool, its arguments and the asked ttl (ms) of a task-augmented `tools/call`."""
    name, arguments, task = params.get("name"), params.get("arguments") or {}, params.get("task")
    if not isinstance(name, str) or not isinstance(arguments, dict):
        raise MCPError(
            code=INVALID_PARAMS, message="tools/call needs a tool `name` and `arguments` (an object)"
        )
    if not isinstance(task, dict):
        raise MCPError(code=INVALID_PARAMS, message='task: an object, e.g. {"ttl": 600000}, or leave it out')
    ttl = task.get("ttl")
    if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int) or ttl < 0):
        raise MCPError(
            code=INVALID_PARAMS,
            message="task.ttl: milliseconds to keep the task, a whole number >= 0; or leave it out for the "
            "server's NAIVE_JOB_TTL (the task's own ttl says what it got)",
        )
    return name, arguments, ttl
