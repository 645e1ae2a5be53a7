"""The MCP clients the benchmarks measure through: naive-mcp in memory and over a real stdio
subprocess, and the bare floor server over stdio; and the store every server the bench starts
keeps its state in.

No server the bench starts may use the user's own store: NAIVE_STORE unset is a SQLite file in
the user's data directory, which the bench's thousands of calls would fill (and whose caps and
ledger they would count against). Unless a figure says otherwise, servers get `scratch_store()`,
a SQLite file in a temp dir of this bench run: the default engine, so the figures include what
a user's calls pay for the store, but a file the run throws away.
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from mcp import Client
from mcp.client.stdio import StdioServerParameters, stdio_client
from pydantic import SecretStr

from naive_mcp.server import create_server
from naive_mcp.settings import Settings

_ROOT = Path(__file__).parents[1]  # where `python -m bench.bare_server` runs from


@functools.cache
def scratch_store() -> str:
    """A SQLite store file (NAIVE_STORE value) in a temp dir made once per bench run, removed at exit.

    Servers of one run share it, as a user's processes share their default store; the first to
    open it migrates it, so later ones start, as a user's usually do, on a store that exists.
    """
    directory = tempfile.mkdtemp(prefix="naive-bench-")
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    return str(Path(directory) / "store.sqlite3")


def server_env(store: str | None = None) -> dict[str, str]:
    """The environment naming the store for a naive-mcp subprocess: `store`, else the scratch one."""
    return {"NAIVE_STORE": store or scratch_store()}


def settings(url: str, key: str, store: str | None = None) -> Settings:
    """In-process settings against the upstream at `url`, on `store` (else the scratch store)."""
    return Settings(base_url=url, api_key=SecretStr(key), log_level="WARNING", store=store or scratch_store())


@asynccontextmanager
async def in_memory(url: str, key: str, store: str | None = None) -> AsyncIterator[Client]:
    async with Client(create_server(settings(url, key, store))) as client:
        yield client


@asynccontextmanager
async def stdio(url: str, key: str, store: str | None = None) -> AsyncIterator[Client]:
    """A real `naive-mcp` subprocess on stdio, against the upstream at `url`."""
    env = {"NAIVE_BASE_URL": url, "NAIVE_API_KEY": key, **server_env(store)}
    async with _stdio_client([str(Path(sys.executable).with_name("naive-mcp"))], env) as client:
        yield client


@asynccontextmanager
async def stdio_bare(url: str = "", key: str = "") -> AsyncIterator[Client]:
    """bench/bare_server.py as a subprocess on stdio; its `relay` tool calls the upstream at `url`."""
    env = {"BENCH_RELAY_URL": url, "BENCH_RELAY_KEY": key}
    async with _stdio_client([sys.executable, "-m", "bench.bare_server"], env) as client:
        yield client


@asynccontextmanager
async def _stdio_client(command: list[str], env: dict[str, str]) -> AsyncIterator[Client]:
    env = {"PATH": os.environ.get("PATH", ""), "NAIVE_LOG_LEVEL": "WARNING", **env}
    with open(os.devnull, "w") as quiet:  # noqa: ASYNC230 (opening /dev/null does not block)
        params = StdioServerParameters(command=command[0], args=command[1:], env=env, cwd=_ROOT)
        async with Client(stdio_client(params, errlog=quiet)) as client:
            yield client
