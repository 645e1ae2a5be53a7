"""The MCP server: tools generated from the registry, one upstream client per server run."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import httpx2
from mcp.server.mcpserver import MCPServer

from naive_mcp import __version__
from naive_mcp.client import make_http_client
from naive_mcp.primitives import REGISTRY
from naive_mcp.services import Services
from naive_mcp.settings import Settings
from naive_mcp.tools import build_tools

INSTRUCTIONS = (
    "Naive's llm primitive: ask other models (300+, with fallbacks and provider routing) with "
    "naive_llm_chat, choose one with naive_llm_models, and check what a call cost with "
    "naive_llm_generation. Chat calls spend Naive credits; listing models and reading costs is free."
)


def create_server(settings: Settings, *, http: httpx2.AsyncClient | None = None) -> MCPServer[Services]:
    """Build the server. `http` injects the upstream HTTP client (tests); by default the
    server opens its own when it starts and closes it when it stops."""

    @asynccontextmanager
    async def lifespan(_: MCPServer[Services]) -> AsyncIterator[Services]:
        async with AsyncExitStack() as stack:
            client = http if http is not None else await stack.enter_async_context(make_http_client(settings))
            yield Services.create(settings, client)

    return MCPServer(
        name="naive-mcp",
        title="Naive LLM",
        version=__version__,
        instructions=INSTRUCTIONS,
        tools=build_tools(REGISTRY),
        lifespan=lifespan,
        log_level=settings.log_level,
    )
