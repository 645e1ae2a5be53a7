"""MCP tools, generated from the primitive registry: the typed tools and the generic pair.

Each tool validates its own arguments with the method's model (so a bad value gets an error
that names the field and what is allowed), runs the method, and turns an expected failure
into a tool result with `isError: true`. Nothing here touches HTTP.
"""

from __future__ import annotations

import json
import logging
import traceback
import warnings
from collections.abc import Awaitable, Callable, Mapping
from typing import Annotated, Any

import anyio
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import AccessToken
from mcp.server.context import ServerRequestContext
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import UnexpectedToolError
from mcp.server.mcpserver.tools import Tool
from mcp.server.mcpserver.utilities.func_metadata import ArgModelBase, FuncMetadata
from mcp.shared.exceptions import MCPDeprecationWarning, MCPError
from mcp.shared.jsonrpc_dispatcher import progress_token_from_params
from mcp_types import CallToolResult, ImageContent, ResourceLink, TextContent, ToolAnnotations
from pydantic import BaseModel, Field, WithJsonSchema

from naive_mcp.background import result_tool, starter
from naive_mcp.context_files import AskRoots, FileRoots, roots_from_uris, settings_roots
from naive_mcp.errors import IncompleteAnswer, NaiveError
from naive_mcp.progress import ProgressReporter
from naive_mcp.registry import (
    CallContext,
    ContentBlock,
    ImageBlock,
    LinkBlock,
    Method,
    MethodResult,
    Registry,
)
from naive_mcp.schema import input_schema, output_schema
from naive_mcp.services import Services
from naive_mcp.validation import Arguments, parse_arguments

logger = logging.getLogger(__name__)

SEARCH_TOOL = "naive_search_primitives"
# The protocol version that brought resource links into tool results; an older client gets the
# text beside each link, which names its URI.
RESOURCE_LINKS_SINCE = "2025-06-18"
RUN_TOOL = "naive_run_primitive"
# Seconds a client that offers roots has to list them; then NAIVE_FILE_ROOTS decides.
ROOTS_WAIT = 10.0

_Invoke = Callable[[CallContext, Mapping[str, Any]], Awaitable[MethodResult]]


class RegistryTool(Tool):
    """An MCP tool whose arguments are validated by a registry model, not by a function signature."""

    invoke: _Invoke = Field(exclude=True)

    async def run(
        self, arguments: dict[str, Any], context: Context[Any, Any], convert_result: bool = False
    ) -> CallToolResult:
        services: Services = context.request_context.lifespan_context

        async def send(progress: float, message: str) -> None:
            await context.report_progress(progress, None, message)

        settings = services.settings
        return await self.call(
            arguments,
            services,
            reporter=ProgressReporter(
                send, interval=settings.progress_interval, heartbeat=settings.heartbeat_interval
            ),
            progress=_progress_wanted(services, context),
            access=get_access_token(),
            roots=roots_for(context.request_context, services),
            links=context.request_context.protocol_version >= RESOURCE_LINKS_SINCE,
        )

    async def call(
        self,
        arguments: dict[str, Any],
        services: Services,
        *,
        reporter: ProgressReporter,
        progress: bool,
        access: AccessToken | None,
        roots: AskRoots,
        links: bool,
        in_job: bool = False,
    ) -> CallToolResult:
        """The call itself, with the request's parts passed in: a plain call's come from its
        request; a job's (`background: true`, an MCP task) outlive it, its progress going to the
        job. `in_job`: this is the job's call, so `background` runs it here."""
        failure: tuple[str, str] | None = None  # an expected error's kind and text

        async def again(reporter: ProgressReporter, roots: AskRoots) -> CallToolResult:
            return await self.call_as_job(arguments, services, access=access, reporter=reporter, roots=roots)

        with services.calls.track():
            async with reporter.running(enabled=progress):
                try:
                    await services.warm_up.wait()
                    grant = services.access.grant(access)
                    call = CallContext(
                        services,
                        reporter,
                        grant,
                        roots=roots,
                        start_job=None if in_job else starter(services, grant, roots, again, self.name),
                    )
                    result = await self.invoke(call, arguments)
                except NaiveError as error:
                    failure = (error.kind, error.describe())
                    _release(error)
                except Exception as exc:
                    # A bug: the SDK logs it with its traceback, and the client gets no internals.
                    raise UnexpectedToolError(f"Error executing tool {self.name}") from exc
        if failure is not None:
            kind, text = failure
            logger.info("%s failed: %s", self.name, kind)
            # The bearer token too: in client-keys mode it is the client's own key, which no
            # setting names. (Answers are redacted where they are read, in NaiveClient.)
            redact = services.redact.including(access.token if access is not None else None)
            return CallToolResult(content=[TextContent(type="text", text=redact(text))], is_error=True)
        return CallToolResult(
            content=[
                _content_block(block)
                for block in result.content()
                if links or not isinstance(block, LinkBlock)
            ],
            structured_content=result.model_dump(mode="json", by_alias=True, exclude_none=True),
        )

    async def call_as_job(
        self,
        arguments: dict[str, Any],
        services: Services,
        *,
        access: AccessToken | None,
        reporter: ProgressReporter,
        roots: AskRoots,
    ) -> CallToolResult:
        """The call as a job makes it (`background: true`, an MCP task): its progress to the job,
        resource links kept (a reader too old for them gets the result without them:
        `background.job_answer`), and a `background` in it run right here."""
        return await self.call(
            arguments,
            services,
            reporter=reporter,
            progress=True,
            access=access,
            roots=roots,
            links=True,
            in_job=True,
        )


def _content_block(block: ContentBlock) -> TextContent | ImageContent | ResourceLink:
    if isinstance(block, ImageBlock):
        return ImageContent(type="image", data=block.data, mime_type=block.mime_type)
    if isinstance(block, LinkBlock):
        return ResourceLink(
            type="resource_link",
            uri=block.uri,
            name=block.name,
            description=block.description,
            mime_type=block.mime_type,
        )
    return TextContent(type="text", text=block)


def _release(error: NaiveError) -> None:
    """Let go of what a caught error holds, once it is described.

    Its traceback holds every frame it came through, with their locals, and the error stays in
    reference cycles (tenacity's retry state keeps it, and a frame it passed keeps tenacity)
    that only the cyclic GC breaks, seldom: until then a broken answer's buffers and its partial
    text stayed — 30 failed 8 MiB answers kept 94 MiB resident. So they go now.
    """
    traceback.clear_frames(error.__traceback__)
    if isinstance(error, IncompleteAnswer):
        error.partial = ""


def roots_for(request: ServerRequestContext[Any, Any], services: Services) -> AskRoots:
    """Where a call's `files` and `output_file` may be. Over HTTP, NAIVE_FILE_ROOTS or none: the
    server's disk is not the client's, and a remote client's roots/list says nothing about what it
    may read here. Otherwise (stdio, in process: the user's own client) the client's MCP roots
    when it offers some (file:// URIs), else NAIVE_FILE_ROOTS. Asked for by the call that needs
    them only: it is a round trip to the client."""
    configured = services.settings.file_roots

    async def roots() -> FileRoots:
        if request.request is not None:  # a transport's HTTP request: served over HTTP
            return settings_roots(configured, "http")
        session = request.session
        capabilities = session.client_capabilities
        # On 2026-07-28 (sessionless) no request reaches the client mid-call: roots are deprecated
        # there (SEP-2577), and asking would take an InputRequiredResult round trip, which the
        # SDK's own client refuses unless its caller opted in. NAIVE_FILE_ROOTS decides there.
        offered = capabilities is not None and capabilities.roots is not None
        if offered and session.can_send_request:
            listed = None
            with anyio.move_on_after(ROOTS_WAIT), warnings.catch_warnings():
                # Roots are deprecated by the 2026-07-28 protocol (SEP-2577), but the clients of
                # 2025 that offer them are the ones that have them; a client on 2026 offers none.
                warnings.simplefilter("ignore", MCPDeprecationWarning)
                try:
                    listed = await session.list_roots()
                except MCPError as error:
                    logger.info("roots/list failed (%s): NAIVE_FILE_ROOTS instead", error)
            paths = roots_from_uris([str(root.uri) for root in listed.roots]) if listed is not None else ()
            if paths:
                return FileRoots(paths, "client")
        return settings_roots(configured, "stdio")

    return roots


def _progress_wanted(services: Services, context: Context[Any, Any]) -> bool:
    """Whether anyone can hear this call's progress; when nobody can, running the reporter would
    only cost the call time (~0.5 ms, bench/results.md).

    Over JSON-RPC (stdio, HTTP) a client asks by sending a progress token. An in-process client
    hands its callback to the SDK beside the request, where no public API shows it: the SDK's
    in-memory dispatch context (under any wrappers, `_inner`) keeps it as `_on_progress`. Should
    that ever change shape, the reporter simply runs (and a test says so).
    """
    if progress_token_from_params(context.request_context.params) is not None:
        return True
    if services.progress_needs_token:
        return False
    outbound: Any = getattr(context.request_context.session, "_request_outbound", None)
    for _ in range(4):  # unwrap the SDK's delegating contexts
        if not hasattr(outbound, "_inner"):
            break
        outbound = outbound._inner
    return getattr(outbound, "_on_progress", True) is not None


def build_tools(registry: Registry) -> list[Tool]:
    typed = [_method_tool(method) for method in registry.methods if method.typed_tool]
    return [*typed, result_tool(), *_generic_pair(registry)]


async def _run_or_start(method: Method[Any, Any], call: CallContext, arguments: Arguments) -> MethodResult:
    """The method run on `arguments`, or, for `background: true`, started as a job."""
    if call.start_job is not None and method.in_background(arguments):
        return await call.start_job(method, arguments)
    result: MethodResult = await method.handler(call, arguments)
    return result


def _method_tool(method: Method[Any, Any]) -> Tool:
    async def invoke(call: CallContext, arguments: Mapping[str, Any]) -> MethodResult:
        return await _run_or_start(method, call, method.parse(arguments))

    return _tool(
        name=method.tool_name,
        description=method.description,
        parameters=method.input_schema,
        output=method.output_schema,
        annotations=method.annotations,
        invoke=invoke,
    )


# --- the generic pair, as Naive's agent toolset has it ------------------------------------------


class SearchArguments(Arguments):
    query: str | None = Field(
        default=None, max_length=100, description="filter by words in a name or description"
    )


class MethodInfo(BaseModel):
    method: str
    tool: str = Field(description="the tool that runs it: its typed tool, or naive_run_primitive")
    description: str
    read_only: bool
    arguments_schema: dict[str, Any]


class PrimitiveInfo(BaseModel):
    primitive: str
    methods: list[MethodInfo]


class SearchResult(MethodResult):
    # Published by shape (every agent reads tools/list): its text block is this JSON itself, and
    # the README lists the fields.
    primitives: Annotated[
        list[PrimitiveInfo],
        WithJsonSchema({"type": "array", "items": {"type": "object"}}, mode="serialization"),
    ]

    def content(self) -> list[str]:
        if not self.primitives:
            return ["No primitive method matches that query. Call again without `query` to list them all."]
        hint = 'Run one with naive_run_primitive(primitive, method, arguments), e.g. primitive="llm".'
        return [json.dumps(self.model_dump(mode="json"), separators=(",", ":")), hint]


class RunArguments(Arguments):
    primitive: str = Field(min_length=1, max_length=60, description='e.g. "llm"')
    method: str = Field(min_length=1, max_length=60, description='e.g. "chat", "compare", "models"')
    arguments: dict[str, Any] = Field(
        default_factory=dict, description="the method's arguments (see naive_search_primitives)"
    )


def _generic_pair(registry: Registry) -> list[Tool]:
    async def search(call: CallContext, raw: Mapping[str, Any]) -> MethodResult:
        return _search(registry, parse_arguments(SearchArguments, raw, tool=SEARCH_TOOL))

    async def run(call: CallContext, raw: Mapping[str, Any]) -> MethodResult:
        arguments = parse_arguments(RunArguments, raw, tool=RUN_TOOL)
        method = registry.find(arguments.primitive, arguments.method)
        return await _run_or_start(method, call, method.parse(arguments.arguments, via=RUN_TOOL))

    return [
        _tool(
            name=SEARCH_TOOL,
            description=(
                "List the Naive primitives this server runs: methods and their argument schemas. Free. "
                "Then call naive_run_primitive."
            ),
            parameters=input_schema(SearchArguments),
            output=output_schema(SearchResult),
            annotations=ToolAnnotations(
                title="Search Naive primitives",
                read_only_hint=True,
                idempotent_hint=True,
                open_world_hint=False,
            ),
            invoke=search,
        ),
        _tool(
            name=RUN_TOOL,
            description=(
                'Run a Naive primitive method by name, e.g. primitive="llm", method="complete", '
                "validated and answered as its typed tool. Costs what the method costs."
            ),
            parameters=input_schema(RunArguments),
            # Its structured content is the named method's, so no one schema describes it.
            output=None,
            annotations=ToolAnnotations(
                title="Run a Naive primitive",
                read_only_hint=False,
                destructive_hint=False,
                idempotent_hint=False,
                open_world_hint=True,
            ),
            invoke=run,
        ),
    ]


def _search(registry: Registry, arguments: SearchArguments) -> SearchResult:
    words = (arguments.query or "").lower().split()
    primitives: list[PrimitiveInfo] = []
    for primitive in registry.primitives():
        methods = [
            MethodInfo(
                method=method.name,
                tool=method.tool_name if method.typed_tool else RUN_TOOL,
                description=method.description,
                read_only=bool(method.annotations.read_only_hint),
                arguments_schema=method.input_schema,
            )
            for method in registry.methods
            if method.primitive == primitive
            and all(word in f"{method.qualified_name} {method.description}".lower() for word in words)
        ]
        if methods:
            primitives.append(PrimitiveInfo(primitive=primitive, methods=methods))
    return SearchResult(primitives=primitives)


def _tool(
    *,
    name: str,
    description: str,
    parameters: dict[str, Any],
    output: dict[str, Any] | None,
    annotations: ToolAnnotations,
    invoke: _Invoke,
) -> Tool:
    return RegistryTool(
        fn=invoke,
        name=name,
        title=annotations.title,
        description=description,
        parameters=parameters,
        fn_metadata=FuncMetadata(arg_model=ArgModelBase, output_schema=output),
        is_async=True,
        context_kwarg=None,
        # The title is the tool's own; annotations.title is its older, duplicate place.
        annotations=annotations.model_copy(update={"title": None}),
        invoke=invoke,
    )
