"""Cold start and idle memory, against the floor: a bare MCPServer with one trivial tool.

Each run spawns the server, speaks JSON-RPC to it over stdio (initialize, then tools/list), and
stops the clock at the tools/list answer; the server's resident memory (VmRSS) is read then.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench import clients
from bench.report import Figure
from bench.upstream import rss_mb

COLD_START_RATIO_TARGET = 1.2
IDLE_MEMORY_RATIO_TARGET = 1.15
_INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "bench", "version": "1"},
    },
}


def measure(runs: int) -> list[Figure]:
    naive: list[tuple[float, float]] = []
    bare: list[tuple[float, float]] = []
    for _ in range(runs):  # in turn, so that both see the same machine
        naive.append(_spawn([str(Path(sys.executable).with_name("naive-mcp"))]))
        bare.append(_spawn([sys.executable, str(Path(__file__).with_name("bare_server.py"))]))
    naive_start = [seconds * 1000 for seconds, _ in naive]
    bare_start = [seconds * 1000 for seconds, _ in bare]
    naive_rss = [rss for _, rss in naive]
    bare_rss = [rss for _, rss in bare]
    return [
        Figure("cold start to the first tools/list answer, naive-mcp", naive_start, None),
        Figure("cold start to the first tools/list answer, bare MCPServer", bare_start, None),
        Figure(
            "cold start, naive-mcp / bare, run by run",
            [ours / floor for ours, floor in zip(naive_start, bare_start, strict=True)],
            COLD_START_RATIO_TARGET,
            unit="x",
        ),
        Figure("idle resident memory, naive-mcp", naive_rss, None, unit="MB"),
        Figure("idle resident memory, bare MCPServer", bare_rss, None, unit="MB"),
        Figure(
            "idle memory, naive-mcp / bare",
            [statistics.median(naive_rss) / statistics.median(bare_rss)],
            IDLE_MEMORY_RATIO_TARGET,
            unit="x",
        ),
    ]


def _spawn(command: list[str]) -> tuple[float, float]:
    """Seconds from spawn to the tools/list answer, and the server's RSS (MB) then."""
    # naive-mcp opens the run's scratch SQLite file, the default engine (in the background:
    # tools/list does not wait for it), as a user's start opens theirs; never the user's own.
    # The bare server ignores it.
    env = {"PATH": os.environ.get("PATH", ""), "NAIVE_LOG_LEVEL": "WARNING", **clients.server_env()}
    started = time.perf_counter()
    process = subprocess.Popen(
        command, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    assert process.stdin is not None and process.stdout is not None
    try:
        _send(process, _INITIALIZE)
        _answer(process, 1)
        _send(process, {"jsonrpc": "2.0", "method": "notifications/initialized"})
        _send(process, {"jsonrpc": "2.0", "id": 2, "method": "tools/list"})
        _answer(process, 2)
        seconds = time.perf_counter() - started
        return seconds, rss_mb(process.pid)
    finally:
        process.stdin.close()
        process.wait(30)


def _send(process: subprocess.Popen[str], message: dict[str, object]) -> None:
    assert process.stdin is not None
    process.stdin.write(json.dumps(message) + "\n")
    process.stdin.flush()


def _answer(process: subprocess.Popen[str], request_id: int) -> dict[str, object]:
    assert process.stdout is not None
    while True:
        line = process.stdout.readline()
        if not line:
            raise RuntimeError("the server closed stdout")
        message: dict[str, object] = json.loads(line)
        if message.get("id") == request_id:
            return message
