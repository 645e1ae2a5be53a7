"""Load over streamable HTTP against the sandbox on loopback, each in a process of its own.

- Sustained: `in_flight` MCP clients each make their share of `calls` chat calls back to back.
  Counted: errors, per-call latency, and the server's resident memory (VmRSS) after warm-up,
  halfway and at the end — it must stay flat.
- Burst: `burst` clients, each with its session open and warm, call at the same moment, with the
  upstream taking 200 ms to answer; the clock runs until the last answer. The same burst against
  a bare MCPServer whose one tool waits the same 200 ms is the SDK's floor, measured alongside.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from bench import clients
from bench.report import Figure
from bench.upstream import free_port, rss_mb, sandbox_process, wait_until_healthy

MEMORY_GROWTH_TARGET_MB = 5.0
BURST_LATENCY = 0.2  # seconds the upstream takes to answer, in the burst
BURST_TARGET_MS = 1.5 * BURST_LATENCY * 1000


@dataclass
class LoadRun:
    calls: int
    errors: int
    seconds: float
    latencies_ms: list[float]
    rss_mb: list[float]  # after warm-up, halfway, at the end

    def figures(self, in_flight: int) -> list[Figure]:
        growth = self.rss_mb[-1] - self.rss_mb[0]
        return [
            Figure(
                f"chat over streamable HTTP, {self.calls} calls, {in_flight} in flight",
                self.latencies_ms,
                None,
            ),
            Figure("errors in the load run", [float(self.errors)], 0.0, unit="calls"),
            Figure("server memory growth after warm-up", [growth], MEMORY_GROWTH_TARGET_MB, unit="MB"),
        ]

    def notes(self) -> list[str]:
        rss = ", ".join(f"{value:.1f}" for value in self.rss_mb)
        return [
            f"Load: {self.calls} calls in {self.seconds:.1f} s ({self.calls / self.seconds:.0f} calls/s), "
            f"{self.errors} errors; server RSS after warm-up, halfway, at the end: {rss} MB."
        ]


def run(calls: int, in_flight: int) -> LoadRun:
    with sandbox_process() as upstream, _naive_mcp(upstream) as (url, pid):
        return anyio.run(_load, url, calls, in_flight, pid)


def burst(calls: int, rounds: int) -> list[Figure]:
    """`rounds` bursts of `calls` simultaneous chat calls, naive-mcp then the bare floor."""
    with sandbox_process(latency=BURST_LATENCY) as upstream, _naive_mcp(upstream) as (url, pid):
        naive = anyio.run(_bursts, url, pid, "naive_llm_chat", "prompt", calls, rounds)
    bare_server = str(Path(__file__).with_name("bare_http_server.py"))
    with _http_server(lambda port: [sys.executable, bare_server, port, str(BURST_LATENCY)], {}) as (url, pid):
        bare = anyio.run(_bursts, url, pid, "wait", "text", calls, rounds)
    naive_totals = [burst.total_ms for burst in naive]
    bare_totals = [burst.total_ms for burst in bare]
    return [
        Figure(
            f"{calls} simultaneous chat calls, until the last answer, naive-mcp",
            naive_totals,
            BURST_TARGET_MS,
        ),
        Figure(
            f"{calls} simultaneous calls, until the last answer, bare MCPServer (floor)",
            bare_totals,
            BURST_TARGET_MS,
        ),
        Figure(
            "burst, naive-mcp / bare",
            [statistics.median(naive_totals) / statistics.median(bare_totals)],
            None,
            unit="x",
        ),
        Figure("server CPU time per call in the burst, naive-mcp", [b.cpu_ms_per_call for b in naive], None),
        Figure(
            "server CPU time per call in the burst, bare MCPServer", [b.cpu_ms_per_call for b in bare], None
        ),
        Figure("errors in the bursts", [float(sum(burst.errors for burst in naive))], 0.0, unit="calls"),
    ]


@dataclass(frozen=True)
class Burst:
    total_ms: float  # from the go to the last answer
    errors: int
    cpu_ms_per_call: float  # the server process's CPU time (user + system) over the burst, per call


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def _naive_mcp(upstream: str) -> Iterator[tuple[str, int]]:
    env = {
        "NAIVE_BASE_URL": upstream,
        "NAIVE_API_KEY": f"nv_sk_test_load_{uuid.uuid4().hex}",
        "NAIVE_DEFAULT_MODEL": "openai/gpt-5-mini",
        # The run's scratch SQLite file, the default engine: a single HTTP server's load pays
        # what its store costs (one writer at a time), and never writes to the user's own store.
        **clients.server_env(),
    }
    command = str(Path(sys.executable).with_name("naive-mcp"))
    with _http_server(
        lambda port: [command, "--transport", "streamable-http", "--port", port], env
    ) as served:
        yield served


@contextmanager
def _http_server(command: Callable[[str], list[str]], env: dict[str, str]) -> Iterator[tuple[str, int]]:
    """Run an MCP server on a free port (`command(port)`); yields its MCP endpoint and its pid."""
    port = str(free_port())
    argv = command(port)
    environment = {"PATH": os.environ.get("PATH", ""), "NAIVE_LOG_LEVEL": "WARNING", **env}
    server = subprocess.Popen(
        argv, env=environment, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_until_healthy(f"http://127.0.0.1:{port}", server)
        yield f"http://127.0.0.1:{port}/mcp", server.pid
    finally:
        server.terminate()
        server.wait(30)


async def _bursts(url: str, pid: int, tool: str, argument: str, calls: int, rounds: int) -> list[Burst]:
    """One `Burst` per round."""
    results: list[Burst] = []
    ready = 0
    all_ready = anyio.Event()
    go = [anyio.Event() for _ in range(rounds)]
    finished: list[float] = []
    errors = 0
    round_done = [anyio.Event() for _ in range(rounds)]

    async def client(index: int) -> None:
        nonlocal ready, errors
        async with (
            httpx2.AsyncClient(timeout=httpx2.Timeout(60)) as http,
            Client(streamable_http_client(url, http_client=http)) as session,
        ):
            await session.list_tools()
            await session.call_tool(tool, {argument: "warm"})
            ready += 1
            if ready == calls:
                all_ready.set()
            for turn in range(rounds):
                await go[turn].wait()
                result = await session.call_tool(tool, {argument: f"burst {index}.{turn}"})
                errors += result.is_error
                finished.append(time.perf_counter())
                if len(finished) == calls:
                    round_done[turn].set()

    async with anyio.create_task_group() as group:
        for index in range(calls):
            group.start_soon(client, index)
        await all_ready.wait()
        for turn in range(rounds):
            await anyio.sleep(0.5)  # let the warm-up's stragglers settle
            finished.clear()
            errors = 0
            cpu_before = _cpu_seconds(pid)
            started = time.perf_counter()
            go[turn].set()
            await round_done[turn].wait()
            cpu_ms = (_cpu_seconds(pid) - cpu_before) * 1000
            results.append(Burst((max(finished) - started) * 1000, errors, cpu_ms / calls))
    return results


async def _load(url: str, calls: int, in_flight: int, pid: int) -> LoadRun:
    latencies: list[float] = []
    errors = 0
    rss: list[float] = []
    done = 0
    measuring = False
    per_client = max(1, calls // in_flight)

    async def client(index: int, count: int) -> None:
        nonlocal errors, done
        async with (
            httpx2.AsyncClient(timeout=httpx2.Timeout(60)) as http,
            Client(streamable_http_client(url, http_client=http)) as session,
        ):
            await session.list_tools()
            for turn in range(count):
                started = time.perf_counter()
                result = await session.call_tool("naive_llm_chat", {"prompt": f"load {index}.{turn}"})
                latencies.append((time.perf_counter() - started) * 1000)
                errors += result.is_error
                done += 1
                if measuring and done == calls // 2:
                    rss.append(rss_mb(pid))

    # Warm-up at full concurrency: imports, the connection pool, as many sessions as the run has.
    async with anyio.create_task_group() as group:
        for index in range(in_flight):
            group.start_soon(client, -index - 1, 2)
    latencies.clear()
    errors = 0
    done = 0
    rss.append(rss_mb(pid))
    measuring = True
    started = time.perf_counter()
    async with anyio.create_task_group() as group:
        for index in range(in_flight):
            group.start_soon(client, index, per_client)
    seconds = time.perf_counter() - started
    rss.append(rss_mb(pid))
    return LoadRun(per_client * in_flight, errors, seconds, latencies, rss)
