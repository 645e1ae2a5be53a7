"""Background jobs on the MCP face: `background: true` on chat and compare, and `naive_llm_result`.

A call with `background: true` is validated as any call is (a bad value is refused at once, and
nothing starts), then answers at once with a `job_id` and what to call next, while the call runs
on as a job (`naive_mcp.jobs`, the same mechanism as MCP tasks: `naive_mcp.tasks`). The job makes
the call exactly as a plain call would, with the same guard, caps, ledger and result.

`naive_llm_result(job_id, wait_seconds)` answers with the finished result, the very one a plain
call gives, as soon as the job ends; or, after at most `wait_seconds` (at most 50: under common
clients' 60 s tool timeout), with the status and the answer so far. `cancel: true` stops it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Final

from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.tools import Tool
from mcp.server.mcpserver.utilities.func_metadata import ArgModelBase, FuncMetadata
from mcp_types import CallToolResult, TextContent, ToolAnnotations
from pydantic import ConfigDict, Field, WithJsonSchema

from naive_mcp.access import Grant
from naive_mcp.caller import TenantId
from naive_mcp.context_files import AskRoots, FileRoots
from naive_mcp.errors import NaiveError
from naive_mcp.jobs import JOB_ID_PATTERN, Answered, JobView
from naive_mcp.progress import ProgressReporter
from naive_mcp.registry import Method, MethodResult
from naive_mcp.schema import input_schema
from naive_mcp.services import Services
from naive_mcp.validation import Arguments, matching, parse_arguments

logger = logging.getLogger(__name__)

RESULT_TOOL: Final = "naive_llm_result"
# The longest one naive_llm_result waits (seconds): under the 60 s after which common clients
# (Claude Desktop) give up on a tool call, with room for the answer to travel.
MAX_WAIT_SECONDS: Final = 50.0
DEFAULT_WAIT_SECONDS: Final = 25.0
FILE_ARGUMENTS: Final = ("files", "output_file")  # a call naming these reads the allowed roots

# A tool call made again, as a job: `RegistryTool.call` with the request's parts it needs.
CallAgain = Callable[[ProgressReporter, AskRoots], Awaitable[CallToolResult]]


def job_json(view: JobView) -> dict[str, Any]:
    """A job as structured content: what a client needs to follow it."""
    return {
        "job_id": view.job_id,
        "status": view.status,
        "tool": view.tool,
        "created_at": _iso(view.created_at),
        "updated_at": _iso(view.updated_at),
        "expires_at": _iso(view.expires_at),
    }


class JobStarted(MethodResult):
    """A method's answer when it runs as a job: its result schema's required fields, empty (so a
    client that checks the result against the tool's schema accepts it), and the job."""

    model_config = ConfigDict(extra="allow")

    def content(self) -> list[str]:
        job = self.job  # type: ignore[attr-defined]
        return [
            f"Started job {job['job_id']}: the call runs on in the background (the answer is not "
            f'here yet). Call {RESULT_TOOL}(job_id="{job["job_id"]}", wait_seconds={DEFAULT_WAIT_SECONDS:g}) '
            "for the answer, or the answer so far; cancel=true stops it."
        ]


def starter(
    services: Services, grant: Grant, roots: AskRoots, again: CallAgain, tool: str
) -> Callable[[Method[Any, Any], Arguments], Awaitable[MethodResult]]:
    """What starts a call of `tool` as a job (`CallContext.start_job`)."""

    async def start(method: Method[Any, Any], arguments: Arguments) -> MethodResult:
        owner = services.caller(
            grant, getattr(arguments, "user_id", None), getattr(arguments, "project_id", None)
        )
        known = roots
        if any(getattr(arguments, name, None) for name in FILE_ARGUMENTS):
            # Asked now, while the request lasts: over stdio that is a roots/list to the client,
            # which the SDK sends only within a request.
            found = await roots()

            async def known() -> FileRoots:
                return found

        async def run(reporter: ProgressReporter) -> Answered:
            return answered(await again(reporter, known))

        view = await services.jobs.start(tool, owner, run)
        return JobStarted.model_validate({**(method.started or {}), "job": job_json(view)})

    return start


async def roots_now(roots: AskRoots) -> AskRoots:
    """A job's file roots, asked for while its request lasts: over stdio that is a roots/list to
    the client, which the SDK sends only within a request."""
    found = await roots()

    async def known() -> FileRoots:
        return found

    return known


def answered(result: CallToolResult) -> Answered:
    """A job's tool result as the job keeps it."""
    return Answered(result.model_dump(mode="json", by_alias=True, exclude_none=True), result.is_error)


# --- naive_llm_result ---------------------------------------------------------------------------


class ResultArguments(Arguments):
    # Published as a string (its pattern checked here, and explained when it does not match).
    job_id: Annotated[str, WithJsonSchema({"type": "string"})] = matching(
        JOB_ID_PATTERN, "a job id from a background call's result, such as job_..."
    )
    wait_seconds: float = Field(default=DEFAULT_WAIT_SECONDS, ge=0, le=MAX_WAIT_SECONDS)
    cancel: Annotated[bool | None, WithJsonSchema({"type": "boolean"})] = None
    user_id: TenantId | None = None  # the call's, if it named one
    project_id: TenantId | None = None


class JobResultTool(Tool):
    """`naive_llm_result`: a background job's result, or its status and answer so far."""

    async def run(
        self, arguments: dict[str, Any], context: Context[Any, Any], convert_result: bool = False
    ) -> CallToolResult:
        services: Services = context.request_context.lifespan_context
        access = get_access_token()
        links = context.request_context.protocol_version >= "2025-06-18"
        settings = services.settings

        async def send(progress: float, message: str) -> None:
            await context.report_progress(progress, None, message)

        reporter = ProgressReporter(
            send, interval=settings.progress_interval, heartbeat=settings.heartbeat_interval
        )
        try:
            with services.calls.track():
                async with reporter.running(enabled=True):
                    asked = parse_arguments(ResultArguments, arguments, tool=RESULT_TOOL)
                    grant = services.access.grant(access)
                    owner = services.caller(grant, asked.user_id, asked.project_id)
                    jobs = services.jobs
                    if asked.cancel:
                        view = await jobs.cancel(asked.job_id, owner)
                    else:
                        view = await jobs.wait(asked.job_id, owner, asked.wait_seconds)
        except NaiveError as error:
            redact = services.redact.including(access.token if access is not None else None)
            return CallToolResult(
                content=[TextContent(type="text", text=redact(error.describe()))], is_error=True
            )
        return job_answer(view, links=links)


def job_answer(view: JobView, *, links: bool) -> CallToolResult:
    """What a reader of a job gets: its result once it ended (as a plain call answers, without
    resource links for a client too old for them), else its status and the answer so far."""
    if view.result is not None:
        result = CallToolResult.model_validate(view.result)
        if not links:
            result.content = [block for block in result.content if block.type != "resource_link"]
        return result
    seconds = max(view.updated_at - view.created_at, 0.0)
    partial = view.partial_text
    so_far = f"\n\nThe answer so far ({len(partial)} characters):\n{partial}" if partial else ""
    if view.status == "working":
        head = (
            f"Job {view.job_id} is still working ({seconds:.0f} s so far)"
            + (f": {view.status_message}" if view.status_message else "")
            + f'. Call {RESULT_TOOL}(job_id="{view.job_id}", wait_seconds={MAX_WAIT_SECONDS:g}) again '
            "for the answer; cancel=true stops it."
        )
    elif view.status == "cancelled":
        head = f"Job {view.job_id} was cancelled; its spend is settled for what was generated."
    else:  # failed with no result: its process stopped, or the server did
        head = f"Job {view.job_id} failed: {view.status_message or 'it ended without a result.'}"
    structured = {"job": job_json(view), "partial_chars": len(partial)}
    return CallToolResult(
        content=[TextContent(type="text", text=head + so_far)],
        structured_content=structured,
        is_error=view.status == "failed",
    )


def result_tool() -> Tool:
    return JobResultTool(
        fn=_never,
        name=RESULT_TOOL,
        title="Result of a background job (Naive)",
        description=(
            "A background chat's or compare's result once done, else its status and answer so far "
            "after waiting up to wait_seconds; cancel=true stops it. Free."
        ),
        parameters=input_schema(ResultArguments),
        fn_metadata=FuncMetadata(arg_model=ArgModelBase, output_schema=None),
        is_async=True,
        context_kwarg=None,
        annotations=ToolAnnotations(
            read_only_hint=False, destructive_hint=True, idempotent_hint=False, open_world_hint=False
        ),
    )


async def _never() -> None:  # `run` is the tool's; the SDK wants a function all the same
    raise AssertionError("JobResultTool.run answers every call")


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))
