"""Load over streamable HTTP: many chat calls, many in flight, against the sandbox on loopback.

A real `naive-mcp --transport streamable-http` subprocess; `in_flight` MCP clients each make
their share of `calls` chat calls back to back. Counted: errors, per-call latency, and the
server's resident memory (VmRSS) after warm-up, halfway and at the end — it must stay flat.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import anyio
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from bench.report import Figure
from naive_mcp.sandbox import SandboxConfig, serve_in_thread

STARTUP_SECONDS = 20
MEMORY_GROWTH_TARGET_MB = 5.0


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
    with serve_in_thread(SandboxConfig(initial_credits=1e9)) as sandbox:
        port = _free_port()
        env = {
            "PATH": os.environ.get("PATH", ""),
            "NAIVE_BASE_URL": sandbox.url,
            "NAIVE_API_KEY": f"nv_sk_test_load_{uuid.uuid4().hex}",
            "NAIVE_DEFAULT_MODEL": "openai/gpt-5-mini",
            "NAIVE_LOG_LEVEL": "WARNING",
        }
        command = [
            str(Path(sys.executable).with_name("naive-mcp")),
            "--transport",
            "streamable-http",
            "--port",
            str(port),
        ]
        server = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        try:
            _wait_until_healthy(port)
            return anyio.run(_load, f"http://127.0.0.1:{port}/mcp", calls, in_flight, server.pid)
        finally:
            server.terminate()
            server.wait(30)


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
                    rss.append(_rss_mb(pid))

    # Warm-up at full concurrency: imports, the connection pool, as many sessions as the run has.
    async with anyio.create_task_group() as group:
        for index in range(in_flight):
            group.start_soon(client, -index - 1, 2)
    latencies.clear()
    errors = 0
    done = 0
    rss.append(_rss_mb(pid))
    measuring = True
    started = time.perf_counter()
    async with anyio.create_task_group() as group:
        for index in range(in_flight):
            group.start_soon(client, index, per_client)
    seconds = time.perf_counter() - started
    rss.append(_rss_mb(pid))
    return LoadRun(per_client * in_flight, errors, seconds, latencies, rss)


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_until_healthy(port: int) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        try:
            if httpx2.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return
        except httpx2.TransportError:
            pass
        time.sleep(0.05)
    raise RuntimeError("naive-mcp did not start")
