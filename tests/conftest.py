"""Shared fixtures: one sandbox upstream on loopback for the session, a fresh account per test."""

from __future__ import annotations

import functools
import os
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TextIO

import anyio
import httpcore2
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters, stdio_client
from pydantic import SecretStr

from naive_mcp.sandbox import RunningSandbox, SandboxConfig, serve_in_thread
from naive_mcp.server import create_server
from naive_mcp.settings import Settings

pytest_plugins = ["tests.engines"]

# The console script an MCP client would launch.
NAIVE_MCP = Path(sys.executable).with_name("naive-mcp")
DEFAULT_MODEL = "anthropic/claude-sonnet-4.6"
# Start-up, a handful of calls and shutdown of a `naive-mcp` subprocess; generous for a loaded machine.
SESSION_TIMEOUT = 60
TOOL_NAMES = {
    "naive_llm_chat",
    "naive_llm_compare",
    "naive_llm_models",
    "naive_llm_generation",
    "naive_llm_result",
    "naive_search_primitives",
    "naive_run_primitive",
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True, scope="session")
def _one_tls_context() -> Iterator[None]:
    """Every in-memory server makes its own HTTP client, and each new client loads the CA bundle
    (~40 ms of CPU: a third of the quick loop). The tests speak plain HTTP on loopback, so one
    context, made once, serves them all; the server itself makes one client a process."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(httpcore2, "default_ssl_context", functools.cache(httpcore2.default_ssl_context))
        yield


@pytest.fixture(autouse=True)
def _no_naive_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests pass settings as arguments; the developer's own NAIVE_* variables must not leak in."""
    for name in list(os.environ):
        if name.startswith("NAIVE_") or name == "OPENROUTER_API_KEY":
            monkeypatch.delenv(name)


@pytest.fixture(autouse=True)
def _no_default_store_at_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A test that names no store gets the default one (a SQLite file in the user's data
    directory): under the test session's temp directory, never the developer's own."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path_factory.getbasetemp() / "data-home"))


@pytest.fixture(scope="session")
def sandbox() -> Iterator[RunningSandbox]:
    with serve_in_thread(SandboxConfig(generation_delay=0.2)) as running:
        yield running


@pytest.fixture
def api_key() -> str:
    """A key nobody else uses: the sandbox opens a fresh account (100 credits) for it."""
    return f"nv_sk_test_{uuid.uuid4().hex}"


@pytest.fixture
def openrouter_key() -> str:
    """An OpenRouter key nobody else uses: the sandbox's `/api/v1` takes only `sk-or-v1-…` keys."""
    return f"sk-or-v1-{uuid.uuid4().hex}"


@pytest.fixture
def settings(sandbox: RunningSandbox, api_key: str) -> Settings:
    return make_settings(sandbox, api_key)


def make_settings(sandbox: RunningSandbox, api_key: str | None, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "base_url": sandbox.url,
        "api_key": SecretStr(api_key) if api_key else None,
        "default_model": DEFAULT_MODEL,
        "generation_wait": 3.0,
        # Retries are tested on their own (test_faults.py); elsewhere a fault should show at once.
        "max_retries": 0,
        # State in the process, never the developer's own store; the store's tests choose theirs.
        "store": "memory",
        **overrides,
    }
    return Settings(**values)


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[Client]:
    async with Client(create_server(settings)) as connected:
        yield connected


@pytest.fixture
def errlog(tmp_path: Path) -> Iterator[TextIO]:
    """Where the child's stderr goes."""
    with (tmp_path / "naive-mcp.stderr").open("w") as file:
        yield file


def upstream_env(sandbox: RunningSandbox, api_key: str | None) -> dict[str, str]:
    """The settings an MCP client's config would set to point the server at the sandbox."""
    env = {
        "NAIVE_BASE_URL": sandbox.url,
        "NAIVE_DEFAULT_MODEL": DEFAULT_MODEL,
        "NAIVE_MAX_RETRIES": "0",
        "NAIVE_STORE": "memory",
    }
    if api_key is not None:
        env["NAIVE_API_KEY"] = api_key
    return env


@asynccontextmanager
async def naive_mcp(errlog: TextIO, env: dict[str, str], *args: str) -> AsyncIterator[Client]:
    """A connected client to a `naive-mcp` subprocess, bounded in time."""
    assert NAIVE_MCP.exists(), f"{NAIVE_MCP} is missing: install the package into the venv"
    params = StdioServerParameters(
        command=str(NAIVE_MCP),
        args=list(args),
        env={"PATH": os.environ["PATH"], "NAIVE_STORE": "memory", **env},
    )
    with anyio.fail_after(SESSION_TIMEOUT):
        async with Client(stdio_client(params, errlog=errlog)) as client:
            yield client
