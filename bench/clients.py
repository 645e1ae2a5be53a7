"""The MCP clients the benchmarks measure through: naive-mcp in memory and over a real stdio
subprocess, and the bare floor server over stdio."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from mcp import Client
from mcp.client.stdio import StdioServerParameters, stdio_client
from pydantic import SecretStr

from bench import bare_server
from naive_mcp.server import create_server
from naive_mcp.settings import Settings


def settings(url: str, key: str) -> Settings:
    return Settings(base_url=url, api_key=SecretStr(key), log_level="WARNING")


@asynccontextmanager
async def in_memory(url: str, key: str) -> AsyncIterator[Client]:
    async with Client(create_server(settings(url, key))) as client:
        yield client


@asynccontextmanager
async def stdio(url: str, key: str) -> AsyncIterator[Client]:
    """A real `naive-mcp` subprocess on stdio, against the upstream at `url`."""
    env = {"NAIVE_BASE_URL": url, "NAIVE_API_KEY": key}
    async with _stdio_client([str(Path(sys.executable).with_name("naive-mcp"))], env) as client:
        yield client


@asynccontextmanager
async def stdio_bare() -> AsyncIterator[Client]:
    """bench/bare_server.py as a subprocess on stdio."""
    async with _stdio_client([sys.executable, bare_server.__file__], {}) as client:
        yield client


@asynccontextmanager
async def _stdio_client(command: list[str], env: dict[str, str]) -> AsyncIterator[Client]:
    env = {"PATH": os.environ.get("PATH", ""), "NAIVE_LOG_LEVEL": "WARNING", **env}
    with open(os.devnull, "w") as quiet:  # noqa: ASYNC230 (opening /dev/null does not block)
        params = StdioServerParameters(command=command[0], args=command[1:], env=env)
        async with Client(stdio_client(params, errlog=quiet)) as client:
            yield client
