"""Several naive-mcp replicas on one PostgreSQL behind a real nginx: one server with one memory.

Each replica is a real `naive-mcp --transport streamable-http --stateless` process; nginx runs
the configuration we ship (deploy/nginx.conf) and spreads the calls round robin; the sandbox
upstream's own billing is the judge."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp.types import CallToolResult, TextResourceContents

from naive_mcp.sandbox import RunningSandbox, SandboxConfig, serve_in_thread
from tests.conftest import TOOL_NAMES, upstream_env
from tests.engines import balancer
from tests.helpers import text_of
from tests.remote import HttpServer, connect, http_server
from tests.test_stateless_cancel import (
    answer,
    cancel,
    ended,
    last_chat,
    post,
    streamed,
    tools_call,
)

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

WAIT = 120  # generous, for a busy machine
REPLICAS = 3
# The sandbox bills usage.cost times 1.05, at $0.50 a credit.
SANDBOX_CREDITS_PER_USD = 2.1
# One call's worst case: 100 tokens of sandbox/slow at $0.4/M and 2.1 credits per USD.
WORST = 0.000084


@contextmanager
def replicas(tmp: Path, env: dict[str, str]) -> Iterator[tuple[str, list[HttpServer]]]:
    """REPLICAS naive-mcp processes on one store, behind nginx; yields the balancer's /mcp URL."""
    with ExitStack() as stack:
        servers = [stack.enter_context(http_server(tmp, env, "--stateless")) for _ in range(REPLICAS)]
        base = stack.enter_context(balancer("nginx", [int(s.base.rsplit(":", 1)[1]) for s in servers], tmp))
        yield base, servers


def through(base: str) -> HttpServer:
    """The balancer, as a server the test helpers can connect to."""
    return HttpServer(base, "/mcp", None, Path("/dev/null"))  # type: ignore[arg-type]


@pytest.mark.parametrize("cap", ["total", "tenant"])
async def test_sixty_parallel_calls_across_three_replicas_never_spend_past_the_cap(
    api_key: str, tmp_path: Path, postgres_url: str, cap: str
) -> None:
    limit = WORST * 5 + 0.00001  # about five calls' worst case
    setting = {"total": "NAIVE_MAX_TOTAL_CREDITS", "tenant": "NAIVE_MAX_TENANT_CREDITS"}[cap]
    with serve_in_thread(SandboxConfig(slow_chunk_delay=0.01, slow_words=20)) as slow:
        env = {
            **upstream_env(slow, api_key),
            "NAIVE_STORE": postgres_url,
            setting: str(limit),
            "NAIVE_CREDITS_PER_USD": str(SANDBOX_CREDITS_PER_USD),
        }
        outcomes: list[tuple[str, CallToolResult]] = []
        with replicas(tmp_path, env) as (base, _):
            async with connect(through(base)) as client:

                async def call(user: str) -> None:
                    arguments = {"prompt": "go", "model": "sandbox/slow", "max_tokens": 100, "user_id": user}
                    outcomes.append((user, await client.call_tool("naive_llm_chat", arguments)))

                with anyio.fail_after(WAIT):
                    async with anyio.create_task_group() as group:
                        for n in range(60):
                            group.start_soon(call, f"usr_{n % 2}")
                usage = json.loads(_text(await client.read_resource("naive://usage")))
        billed = slow.sandbox.ledger.generations(api_key)
    answered = [(user, o) for user, o in outcomes if not o.is_error]
    assert all(setting in text_of(o) for _, o in outcomes if o.is_error), "every refusal names the cap"
    assert len(billed) == len(answered), "no refused call reached the upstream"
    tenants = ["usr_0", "usr_1"] if cap == "tenant" else [None]
    for tenant in tenants:
        credits = sum(g.total_cost for g in billed if tenant is None or g.user_id == tenant)
        assert credits * SANDBOX_CREDITS_PER_USD <= limit, "the upstream's own billing stays within the cap"
        calls = [o for user, o in answered if tenant is None or user == tenant]
        assert len(calls) >= 5, "the calls that fit are answered"
    assert usage["total"]["calls"] == len(answered), "every replica reads the same ledger"


async def test_a_rolling_restart_of_three_replicas_under_load_fails_no_call(
    sandbox: RunningSandbox, api_key: str, tmp_path: Path, postgres_url: str
) -> None:
    env = {**upstream_env(sandbox, api_key), "NAIVE_STORE": postgres_url, "NAIVE_SHUTDOWN_GRACE": "30"}
    outcomes: list[CallToolResult] = []
    restarted = anyio.Event()
    with replicas(tmp_path, env) as (base, servers), ExitStack() as newer:
        async with connect(through(base)) as client:

            async def steady_load() -> None:
                while not restarted.is_set():
                    outcomes.append(await client.call_tool("naive_llm_chat", {"prompt": "steady"}))

            async def roll() -> None:
                for server in servers:
                    await anyio.sleep(0.3)  # let calls land on every replica meanwhile
                    port = int(server.base.rsplit(":", 1)[1])
                    server.process.send_signal(signal.SIGTERM)
                    await anyio.to_thread.run_sync(server.process.wait, WAIT)
                    newer.enter_context(http_server(tmp_path, env, "--stateless", port=port))
                restarted.set()

            with anyio.fail_after(WAIT):
                async with anyio.create_task_group() as group:
                    for _ in range(4):
                        group.start_soon(steady_load)
                    group.start_soon(roll)
            after = await client.call_tool(
                "naive_llm_generation", {"id": outcomes[-1].structured_content["id"]}
            )  # type: ignore[index]
    failed = [text_of(o) for o in outcomes if o.is_error]
    assert not failed, failed[:3]
    assert len(outcomes) > 10
    assert not after.is_error, "a cost lookup through any replica waits out the brief 404"


def _text(result: Any) -> str:
    content = result.contents[0]
    assert isinstance(content, TextResourceContents)
    return content.text


async def test_a_stateless_cancel_reaches_the_call_on_another_replica_through_the_store(
    sandbox: RunningSandbox, api_key: str, tmp_path: Path, postgres_url: str
) -> None:
    # The call goes to one replica, its cancel to another: as a round robin would send them.
    env = {**upstream_env(sandbox, api_key), "NAIVE_STORE": postgres_url}
    with replicas(tmp_path, env) as (_, servers):
        calling, cancelling = servers[0].url, servers[1].url
        async with httpx2.AsyncClient(timeout=httpx2.Timeout(30, read=300)) as http:
            async with streamed(http, calling, tools_call(7)) as stream:
                await stream.answering()
                cancelled_at = time.monotonic()
                accepted = await post(http, cancelling, cancel(7))
                with anyio.fail_after(WAIT):
                    tail = await stream.rest()
            record = last_chat(sandbox, api_key)
            await ended(record)
    assert accepted.status_code == 202
    assert answer(tail)["error"]["code"] == -32800, "the call ends as a cancelled request"
    assert record.disconnected_at is not None, "the upstream saw the call go away"
    assert cancelled_at <= record.disconnected_at, "the disconnect followed the cancel, before the end"
    assert "a cancel from another replica cancelled 1 call(s) in flight" in servers[0].logs()


async def test_stateful_sessions_stay_on_their_replica_behind_haproxy(
    sandbox: RunningSandbox, api_key: str, tmp_path: Path, postgres_url: str
) -> None:
    env = {**upstream_env(sandbox, api_key), "NAIVE_STORE": postgres_url}
    with ExitStack() as stack:
        servers = [stack.enter_context(http_server(tmp_path, env)) for _ in range(2)]
        base = stack.enter_context(
            balancer("haproxy", [int(s.base.rsplit(":", 1)[1]) for s in servers], tmp_path)
        )
        results = []
        for _ in range(2):  # two sessions: round robin opens them on different replicas
            async with connect(through(base), mode="legacy") as client:
                assert len((await client.list_tools()).tools) == len(TOOL_NAMES)
                results += [
                    await client.call_tool("naive_llm_chat", {"prompt": f"turn {n}"}) for n in range(3)
                ]
    assert not [text_of(r) for r in results if r.is_error], "every request found its session"
