"""What one `naive_llm_chat` call adds: through MCP (in memory and over a real stdio
subprocess) against the same request made directly with httpx2, run after run in turn, so both
see the same machine. Two floors are measured alongside: the bare MCPServer's own trivial call,
and a relay — a bare MCPServer whose one tool makes that same direct request — so that what the
SDK adds and what naive-mcp adds on top can be told apart.

Also here: the resident memory of the in-memory server and client before and after 10,000 calls.
"""

from __future__ import annotations

import gc
import os
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable

import httpx2
from mcp import Client
from mcp.server.mcpserver import MCPServer

from bench import bare_server, clients
from bench.report import Figure
from bench.upstream import MODEL, PROMPT, direct_chat, rss_mb, sandbox_process

IN_MEMORY_TARGET_MS = 1.0
STDIO_TARGET_MS = 2.0
STDIO_RATIO_TARGET = 1.0  # what naive-mcp adds over stdio, against the bare SDK's whole trivial call
MEMORY_GROWTH_TARGET_MB = 5.0

Call = Callable[[], Awaitable[object]]
PAIRED = (
    "in memory",
    "relay",
    "stdio",
    "relay stdio",
)  # calls measured against a direct request made just before


async def measure(runs: int, memory_calls: int) -> list[Figure]:
    with sandbox_process() as url:
        key = f"nv_sk_test_bench_{uuid.uuid4().hex}"
        async with (
            httpx2.AsyncClient() as http,
            clients.in_memory(url, key) as in_memory,
            clients.stdio(url, key) as stdio,
            Client(bare_server.server) as bare,
            Client(_relay(http, url, key)) as relay,
            clients.stdio_bare(url, key) as bare_stdio,
        ):
            calls: dict[str, Call] = {
                "direct": lambda: direct_chat(http, url, key),
                "in memory": lambda: _chat(in_memory),
                "relay": lambda: relay.call_tool("relay", {"text": PROMPT}),
                "stdio": lambda: _chat(stdio),
                "bare in memory": lambda: bare.call_tool("echo", {"text": PROMPT}),
                "bare stdio": lambda: bare_stdio.call_tool("echo", {"text": PROMPT}),
                "relay stdio": lambda: bare_stdio.call_tool("relay", {"text": PROMPT}),
            }
            for call in calls.values():  # warm: imports, connection pools, caches
                for _ in range(5):
                    await call()
            gc.collect()
            gc.freeze()  # as `naive-mcp` does once started
            times: dict[str, list[float]] = {name: [] for name in calls}
            for name, call in calls.items():
                if name == "direct":
                    continue
                # A block per client, each call paired with a direct request made just before it.
                for _ in range(runs):
                    if name in PAIRED:
                        times["direct"].append(await _ms(calls["direct"]))
                    times[name].append(await _ms(call))
            growth = await _memory_growth(lambda: _chat(in_memory), memory_calls)
            gc.unfreeze()

    def added(name: str) -> list[float]:
        offset = PAIRED.index(name) * runs
        direct = times["direct"][offset : offset + runs]
        return [through - before for through, before in zip(times[name], direct, strict=True)]

    return [
        Figure("the chat request made directly with httpx2", times["direct"], None),
        Figure("naive_llm_chat through MCP, in memory", times["in memory"], None),
        Figure("added by MCP and naive-mcp, in memory", added("in memory"), IN_MEMORY_TARGET_MS),
        Figure("floor: the same request from a bare MCPServer tool, in memory", times["relay"], None),
        Figure("added by the SDK alone (relay - direct), in memory", added("relay"), None),
        Figure("naive_llm_chat through MCP, stdio", times["stdio"], None),
        Figure("added by MCP and naive-mcp, stdio", added("stdio"), STDIO_TARGET_MS),
        Figure("floor: bare MCPServer trivial call, in memory", times["bare in memory"], None),
        Figure("floor: bare MCPServer trivial call, stdio", times["bare stdio"], None),
        Figure(
            "stdio: added by naive-mcp / the bare trivial call (medians)",
            [statistics.median(added("stdio")) / statistics.median(times["bare stdio"])],
            STDIO_RATIO_TARGET,
            unit="x",
        ),
        Figure("added by the SDK alone (relay - direct), stdio", added("relay stdio"), None),
        Figure(
            "stdio: added by naive-mcp / added by the SDK relaying the same request (medians)",
            [statistics.median(added("stdio")) / statistics.median(added("relay stdio"))],
            None,
            unit="x",
        ),
        Figure(
            f"memory growth after {memory_calls} in-memory chat calls",
            [growth],
            MEMORY_GROWTH_TARGET_MB,
            unit="MB",
        ),
    ]


async def _ms(call: Call) -> float:
    started = time.perf_counter()
    await call()
    return (time.perf_counter() - started) * 1000


async def _chat(client: Client) -> None:
    result = await client.call_tool("naive_llm_chat", {"prompt": PROMPT, "model": MODEL})
    if result.is_error:
        raise RuntimeError(f"the benchmark call failed: {result.content}")


async def _memory_growth(call: Call, calls: int) -> float:
    """MB of resident memory this process gained over `calls` calls, after a warm-up of 100."""
    for _ in range(100):
        await call()
    gc.collect()
    before = rss_mb(os.getpid())
    for _ in range(calls):
        await call()
    gc.collect()
    return rss_mb(os.getpid()) - before


def _relay(http: httpx2.AsyncClient, url: str, key: str) -> MCPServer:
    """The SDK's floor for a chat call: a bare server whose tool makes the direct request."""
    server = MCPServer("relay")

    @server.tool()
    async def relay(text: str) -> str:
        """Make the chat request directly."""
        await direct_chat(http, url, key)
        return text

    return server
