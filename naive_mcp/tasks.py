"""MCP tasks (protocol 2025-11-25, and the 2026-07-28 tasks extension): a long chat or compare that
outlives the client's timeout.

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

The 2026-07-28 revision moved tasks to the `io.modelcontextprotocol/tasks` extension (SEP-2663),
with another lifecycle, which is spoken too, through the SDK's extension API (`Extension.settings`
advertises it in `server/discover`; the SDK passes a claimed `resultType` through its result
sieve): the client declares the extension in each request's `_meta` capabilities, and the server
decides. A chat or compare from such a client that has not ended within NAIVE_TASK_ANSWER_WAIT is
answered with `resultType: "task"`; `tasks/get` then gives its status, and at the end the result
inline (`completed`, a tool error included; `failed` only for a job that ended without a result,
its process or the server having stopped); `tasks/cancel` stops it; `tasks/update` is
acknowledged (these tools never ask the client for input). There is no `tasks/list` or
`tasks/result` in that revision.
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
    INTERNAL_ERROR,
    INVALID_PARAMS,
    METHOD_NOT_FOUND,
    MISSING_REQUIRED_CLIENT_CAPABILITY,
    CancelTaskRequestParams,
    GetTaskPayloadRequestParams,
    GetTaskRequestParams,
    PaginatedRequestParams,
    RequestParams,
    Task,
    TextContent,
)
from mcp_types.methods import serialize_server_result
from pydantic import Field

from naive_mcp.background import FILE_ARGUMENTS, answered, job_answer, roots_now
from naive_mcp.caller import Caller
from naive_mcp.errors import NaiveError
from naive_mcp.jobs import Answered, Jobs, JobView
from naive_mcp.progress import ProgressReporter
from naive_mcp.services import Services
from naive_mcp.tools import RegistryTool, roots_for

logger = logging.getLogger(__name__)

TASKS_VERSION: Final = "2025-11-25"  # the one protocol revision with tasks in its core
EXTENSION_VERSION: Final = "2026-07-28"  # tasks as the extension `TASKS_EXTENSION`
TASKS_EXTENSION: Final = "io.modelcontextprotocol/tasks"
NO_ROOM_FOR_A_JOB: Final = frozenset({"too_many_jobs", "jobs_off"})
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


def _not_found(error: NaiveError, task_id: str) -> MCPError:
    # Unknown and another caller's read the same (`Jobs.get`), so nothing leaks.
    if error.kind != "job_not_found":
        return MCPError(code=INVALID_PARAMS, message=error.describe())
    return MCPError(
        code=INVALID_PARAMS,
        message=f"taskId: there is no task {task_id} of yours. A task belongs to the API key and tenant "
        "that started it, and is deleted NAIVE_JOB_TTL after it ended; use a taskId this server gave you.",
    )


class _TaskMethods(Extension):
    """`tasks/get` and `tasks/cancel` for both revisions; `tasks/result` and `tasks/list` for
    2025-11-25, `tasks/update` for the 2026-07-28 extension."""

    # Advertised (with no settings, as SEP-2663 has none) under `capabilities.extensions` in
    # `server/discover`. The 2025-11-25 core capability is `capabilities.tasks` instead (added by
    # `TaskMiddleware`, which drops this entry from an `initialize` answer).
    identifier = TASKS_EXTENSION

    def methods(self) -> Sequence[MethodBinding]:
        legacy, extension = frozenset({TASKS_VERSION}), frozenset({EXTENSION_VERSION})
        both = legacy | extension
        return (
            MethodBinding("tasks/get", GetTaskRequestParams, _get, both),
            MethodBinding("tasks/result", GetTaskPayloadRequestParams, _result, legacy),
            MethodBinding("tasks/list", PaginatedRequestParams, _list, legacy),
            MethodBinding("tasks/cancel", CancelTaskRequestParams, _cancel, both),
            MethodBinding("tasks/update", UpdateTaskRequestParams, _update, extension),
        )


class UpdateTaskRequestParams(RequestParams):
    """`tasks/update` (2026-07-28): responses to a task's input requests."""

    task_id: str = Field(alias="taskId")
    input_responses: dict[str, Any] = Field(alias="inputResponses")


def _speaks_extension(ctx: ServerRequestContext[Any, Any]) -> bool:
    """Whether this request's client declared the tasks extension (on 2026-07-28, per request)."""
    capabilities = ctx.session.client_capabilities
    extensions = capabilities.extensions if capabilities is not None else None
    return (
        ctx.protocol_version == EXTENSION_VERSION and extensions is not None and TASKS_EXTENSION in extensions
    )


def _needs_extension(ctx: ServerRequestContext[Any, Any]) -> None:
    """SEP-2663: `tasks/*` from a client that did not declare the extension is -32021."""
    if ctx.protocol_version == EXTENSION_VERSION and not _speaks_extension(ctx):
        raise MCPError(
            code=MISSING_REQUIRED_CLIENT_CAPABILITY,
            message=f"{ctx.method}: declare the {TASKS_EXTENSION} extension in this request's client "
            "capabilities to use tasks",
            data={"requiredCapabilities": {"extensions": {TASKS_EXTENSION: {}}}},
        )


async def _get(ctx: ServerRequestContext[Any, Any], params: GetTaskRequestParams) -> HandlerResult:
    _needs_extension(ctx)
    services, jobs = _services(ctx)
    try:
        view = await jobs.get(_task_id(params.task_id), _owner(services))
    except NaiveError as error:
        raise _not_found(error, params.task_id) from None
    return detailed_task(view) if ctx.protocol_version == EXTENSION_VERSION else _wire(view)


async def _update(ctx: ServerRequestContext[Any, Any], params: UpdateTaskRequestParams) -> HandlerResult:
    """Acknowledged for a task of the caller's: these tools never ask for input, so every response
    is to a key that is not outstanding, which SEP-2663 says to ignore."""
    _needs_extension(ctx)
    services, jobs = _services(ctx)
    try:
        await jobs.get(_task_id(params.task_id), _owner(services))
    except NaiveError as error:
        raise _not_found(error, params.task_id) from None
    return {}


async def _result(ctx: ServerRequestContext[Any, Any], params: GetTaskPayloadRequestParams) -> HandlerResult:
    """Waits for the end (the spec: `tasks/result` blocks until the task is terminal)."""
    services, jobs = _services(ctx)
    task_id, owner = _task_id(params.task_id), _owner(services)
    try:
        while not (view := await jobs.wait(task_id, owner, RESULT_WAIT)).done:
            pass  # each wait is bounded, so a cancelled request stops waiting
    except NaiveError as error:
        raise _not_found(error, params.task_id) from None
    # Shaped by the 2025-11-25 surface, as the plain call's answer is (no later revision's fields).
    dumped = _call_result(view, TASKS_VERSION)
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
    _needs_extension(ctx)
    services, jobs = _services(ctx)
    task_id, owner = _task_id(params.task_id), _owner(services)
    try:
        before = await jobs.get(task_id, owner)
        if ctx.protocol_version == EXTENSION_VERSION:
            # An acknowledgement (SEP-2663); a task that ended already stays as it ended.
            if before.status == "working":
                await jobs.cancel(task_id, owner)
            return {}
        if before.status != "working":
            raise MCPError(
                code=INVALID_PARAMS,
                message=f"Cannot cancel task {task_id}: it is already {before.status}",
            )
        view = await jobs.cancel(task_id, owner)
    except NaiveError as error:
        raise _not_found(error, params.task_id) from None
    return _wire(view)


def _wire(view: JobView) -> dict[str, Any]:
    task = _task(view)
    # `ttl` is required on the wire (null: unlimited), so it is never left out.
    return task.model_dump(by_alias=True, mode="json", exclude_none=True) | {"ttl": task.ttl}


def _task_v2(view: JobView) -> dict[str, Any]:
    """A job as SEP-2663's `Task`: `ttlMs` where 2025-11-25 has `ttl`."""
    wire = _wire(view)
    wire["ttlMs"] = wire.pop("ttl")
    if (interval := wire.pop("pollInterval", None)) is not None:
        wire["pollIntervalMs"] = interval
    return wire


def detailed_task(view: JobView) -> dict[str, Any]:
    """SEP-2663's `DetailedTask`: a job that ended with a result is `completed` with it inline (a
    tool error too: `failed` is for JSON-RPC errors only); one that ended without one (its
    process or the server stopped) is `failed` with an internal error saying so, the answer
    so far included."""
    task = _task_v2(view)
    if view.status in ("working", "cancelled"):
        return task
    if view.result is not None:
        return task | {"status": "completed", "result": _call_result(view, EXTENSION_VERSION)}
    said = job_answer(view, links=True).content[0]
    message = said.text if isinstance(said, TextContent) else (view.status_message or "")
    return task | {"error": {"code": INTERNAL_ERROR, "message": message}}


def _call_result(view: JobView, version: str) -> dict[str, Any]:
    """A job's answer as the plain call's `tools/call` result on `version` (resource links read
    by both revisions' clients)."""
    result = job_answer(view, links=True)
    return serialize_server_result("tools/call", version, result.model_dump(by_alias=True, mode="json"))


class TaskMiddleware:
    """What the SDK's own pipeline cannot carry (module docstring): 2025-11-25's capability,
    `taskSupport` and task-augmented calls, and the 2026-07-28 extension's calls that become tasks."""

    def __init__(self, tools: Mapping[str, RegistryTool]) -> None:
        self._tools = tools

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        method = ctx.method
        if method == "initialize":
            answer = await call_next(ctx)
            if isinstance(answer, dict):
                capabilities = answer.setdefault("capabilities", {})
                _unadvertise(capabilities)
                if answer.get("protocolVersion") == TASKS_VERSION:
                    capabilities["tasks"] = TASKS_CAPABILITY
            return answer
        params = ctx.params
        if ctx.protocol_version == EXTENSION_VERSION:
            if (
                method == "tools/call"
                and isinstance(params, Mapping)
                and params.get("name") in self._tools
                and isinstance(params.get("arguments", {}), dict)  # else the plain call refuses them
                and _speaks_extension(ctx)
            ):
                return await self._create_v2(ctx, params, call_next)
            return await call_next(ctx)
        if ctx.protocol_version != TASKS_VERSION:
            return await call_next(ctx)
        if method == "tools/list":
            answer = await call_next(ctx)
            if isinstance(answer, dict):
                for tool in answer.get("tools", []):
                    if tool.get("name") in self._tools:
                        tool["execution"] = {"taskSupport": "optional"}
            return answer
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
        try:
            view = await self._start(ctx, tool, arguments)
        except NaiveError as error:  # too_many_jobs, jobs_off: refused by name, nothing started
            raise MCPError(code=INVALID_PARAMS, message=error.describe()) from None
        return {"task": _wire(view)}

    async def _create_v2(
        self, ctx: ServerRequestContext[Any, Any], params: Mapping[str, Any], call_next: CallNext
    ) -> HandlerResult:
        """SEP-2663: the server decides. A call that ends within NAIVE_TASK_ANSWER_WAIT is answered as a
        plain call is (a quick chat pays no polling); a longer one is a task from then on. With no
        room for another job (`too_many_jobs`, or the server stopping), the call is served plain."""
        try:
            view = await self._start(ctx, self._tools[params["name"]], params.get("arguments") or {})
        except NaiveError as error:
            if error.kind not in NO_ROOM_FOR_A_JOB:
                raise
            return await call_next(ctx)
        services, jobs = _services(ctx)
        view = await jobs.wait(view.job_id, _owner(services), services.settings.task_answer_wait)
        if view.done and view.result is not None:
            return _call_result(view, EXTENSION_VERSION)
        return {"resultType": "task", **_task_v2(view)}

    async def _start(
        self, ctx: ServerRequestContext[Any, Any], tool: RegistryTool, arguments: dict[str, Any]
    ) -> JobView:
        name = tool.name
        services, jobs = _services(ctx)
        access = get_access_token()
        owner = _owner(services)
        roots = roots_for(ctx, services)
        if any(arguments.get(argument) for argument in FILE_ARGUMENTS):
            roots = await roots_now(roots)  # tests/test_tasks.py

        async def run(reporter: ProgressReporter) -> Answered:
            return answered(
                await tool.call_as_job(arguments, services, access=access, reporter=reporter, roots=roots)
            )

        # The asked ttl is taken as a wish (the spec lets the receiver choose): every job keeps the
        # operator's NAIVE_JOB_TTL, which the task's own `ttl` reports.
        view = await jobs.start(name, owner, run)  # too_many_jobs, jobs_off: NaiveError, nothing started
        logger.info("task %s started for %s", view.job_id, name)
        return view


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
