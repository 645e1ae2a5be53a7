"""The MCP server: tools generated from the registry, one upstream client per server run."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx2
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceNotFoundError
from mcp.server.mcpserver.resources import FunctionResource
from pydantic import AnyHttpUrl

from naive_mcp import __version__
from naive_mcp.primitives import REGISTRY
from naive_mcp.redaction import Redactor
from naive_mcp.services import Services
from naive_mcp.settings import Settings
from naive_mcp.store import UsageScope
from naive_mcp.tasks import task_methods
from naive_mcp.threads import THREADS_URI, listing_json, not_found, thread_json, turn_text
from naive_mcp.tools import build_tools
from naive_mcp.usage import USAGE_URI, usage_json

logger = logging.getLogger(__name__)

INSTRUCTIONS = (
    "Naive's llm primitive: ask other models (300+, with fallbacks and provider routing) with "
    "naive_llm_chat, several at once with naive_llm_compare, choose one with naive_llm_models, and "
    "check what a call cost with naive_llm_generation. Each answer has a thread_id: pass it to "
    "continue that conversation, with any model. Chat and compare spend Naive credits; listing "
    "models and reading costs is free."
)


def _usage_scope(services: Services) -> UsageScope:
    """What the reader of naive://usage may see (`Services.usage_scope`)."""
    return services.usage_scope(services.access.grant(get_access_token()))


def _redactor(services: Services) -> Redactor:
    """The secrets a resource's reader must not see: the server's, and the reader's own token
    (in client-keys mode, its key)."""
    access = get_access_token()
    return services.redact.including(access.token if access is not None else None)


def create_server(
    settings: Settings,
    *,
    services: Services | None = None,
    http: httpx2.AsyncClient | None = None,
    progress_needs_token: bool = False,
) -> MCPServer[Services]:
    """Build the server.

    `services` shares one set (one HTTP client, one model cache, one access control) across
    every connection of an HTTP deployment; its access control then guards the HTTP endpoint.
    Without it, the server makes its own when it starts, over `http` if given, else over an HTTP
    client made on the first upstream call and closed when the server stops.
    `progress_needs_token`: served over JSON-RPC (stdio), where a call without a progress token
    gets no progress reporter.
    """

    running: list[Services] = [services] if services is not None else []  # what naive://usage reads

    @asynccontextmanager
    async def lifespan(_: MCPServer[Services]) -> AsyncIterator[Services]:
        if services is not None:
            yield services
            return
        own = Services.create(settings, http, progress_needs_token=progress_needs_token)
        running.append(own)
        try:
            async with own.running():
                yield own
        finally:
            running.remove(own)

    async def read_usage() -> str:
        current = running[-1]
        return await usage_json(await current.guard.store(), _usage_scope(current))

    guarded = services is not None and services.access.enabled
    tools = build_tools(REGISTRY)
    task_extension, task_middleware = task_methods(tools)
    server = MCPServer(
        name="naive-mcp",
        title="Naive LLM",
        version=__version__,
        instructions=INSTRUCTIONS,
        tools=tools,
        extensions=[task_extension],
        middleware=[task_middleware],
        lifespan=lifespan,
        log_level=settings.log_level,
        token_verifier=services.access if guarded and services is not None else None,
        # Static bearer tokens, no OAuth: no metadata is published (no resource_server_url), and
        # the issuer is only a required placeholder naming this server.
        auth=AuthSettings(
            issuer_url=AnyHttpUrl(f"http://{settings.host}:{settings.port}"), resource_server_url=None
        )
        if guarded
        else None,
    )
    server.add_resource(
        FunctionResource(
            uri=USAGE_URI,
            name="usage",
            title="What this server has spent",
            description="Chat calls, tokens, USD cost and credits through this server's store: all time, "
            "today and this month; in all, per model, per tenant (Naive user) and per outcome.",
            mime_type="application/json",
            fn=read_usage,
        )
    )
    _add_thread_resources(server, running)
    return server


def _add_thread_resources(server: MCPServer[Services], running: list[Services]) -> None:
    """`naive://threads` (the reader's own), each thread whole, and each turn (a long answer)."""

    async def list_threads() -> str:
        current = running[-1]
        scope = _usage_scope(current)
        records = await current.threads.listed(scope) if current.threads.enabled else []
        return listing_json(records, _redactor(current), enabled=current.threads.enabled)

    server.add_resource(
        FunctionResource(
            uri=THREADS_URI,
            name="threads",
            title="Your conversations",
            description="The threads you can continue (thread_id in naive_llm_chat), the most recently used "
            "first: title, turns, size, when each expires.",
            mime_type="application/json",
            fn=list_threads,
        )
    )

    @server.resource(
        f"{THREADS_URI}/{{thread_id}}",
        name="thread",
        title="A conversation",
        description="One of your threads, every turn as the model was sent it.",
        mime_type="application/json",
    )
    async def read_thread(thread_id: str, context: Context[Services]) -> str:
        services = context.request_context.lifespan_context
        found = (
            await services.threads.read(_usage_scope(services), thread_id)
            if services.threads.enabled
            else None
        )
        if found is None:
            raise ResourceNotFoundError(not_found(thread_id))
        return thread_json(*found, _redactor(services))

    @server.resource(
        f"{THREADS_URI}/{{thread_id}}/turns/{{number}}",
        name="turn",
        title="One turn of a conversation",
        description="One message of one of your threads: an answer whole (long answers link here).",
        mime_type="text/markdown",
    )
    async def read_turn(thread_id: str, number: str, context: Context[Services]) -> str:
        services = context.request_context.lifespan_context
        turn = None
        # ASCII digits only: str.isdigit also takes "²", which int() refuses.
        if services.threads.enabled and number.isascii() and number.isdigit() and len(number) < 10:
            turn = await services.threads.turn(_usage_scope(services), thread_id, int(number))
        if turn is None:
            raise ResourceNotFoundError(f"turn {number}: not found. {not_found(thread_id)}")
        return turn_text(turn, _redactor(services))


def freeze_startup_objects() -> None:
    """Move what start-up made (modules, schemas, the server, the app) out of the garbage
    collector's sight; call once everything is built, just before serving.

    They live as long as the process; left in view, every full collection walks them all again:
    a burst of 20 calls over HTTP took 0.13-0.16 s of server CPU before, 0.05-0.08 s after.
    """
    gc.freeze()
