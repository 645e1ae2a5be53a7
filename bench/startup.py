"""Cold start and idle memory, against the floor: a bare MCPServer with one trivial tool; and
the first chat call of a fresh process.

Each run spawns the server, speaks JSON-RPC to it over stdio (initialize, then tools/list), and
stops the clock at the tools/list answer; the server's resident memory (VmRSS) is read then.
The first call: a fresh naive-mcp against the sandbox, initialized and listed, then (right away,
or after a pause) one `naive_llm_chat`, timed from its request to its answer.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench import clients
from bench.report import Figure
from bench.upstream import MODEL, PROMPT, rss_mb

COLD_START_RATIO_TARGET = 1.0
FIRST_CALL_TARGET_MS = 50.0
FIRST_CALL_PAUSES = (0.0, 0.3, 1.0)  # seconds between the tools/list answer and the first call
IDLE_MEMORY_RATIO_TARGET = 1.1
NAIVE_MCP = str(Path(sys.executable).with_name("naive-mcp"))
_CHAT = {"name": "naive_llm_chat", "arguments": {"prompt": PROMPT, "model": MODEL}}
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


def measure(runs: int, upstream: str) -> list[Figure]:
    naive: list[tuple[float, float]] = []
    bare: list[tuple[float, float]] = []
    for _ in range(runs):  # in turn, so that both see the same machine
        naive.append(_spawn([NAIVE_MCP]))
        bare.append(_spawn([sys.executable, str(Path(__file__).with_name("bare_server.py"))]))
    first = {pause: [_first_call(upstream, pause) for _ in range(runs)] for pause in FIRST_CALL_PAUSES}
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
    ] + [
        Figure(
            f"first chat call of a fresh process, {pause * 1000:.0f} ms after tools/list",
            first[pause],
            FIRST_CALL_TARGET_MS,
        )
        for pause in FIRST_CALL_PAUSES
    ]


def _spawn(command: list[str]) -> tuple[float, float]:
    """Seconds from spawn to the tools/list answer, and the server's RSS (MB) then."""
    started = time.perf_counter()
    with _started(command, {}) as process:
        return time.perf_counter() - started, rss_mb(process.pid)


def _first_call(upstream: str, pause: float) -> float:
    """Milliseconds of the first chat call of a fresh naive-mcp, made `pause` s after tools/list."""
    env = {"NAIVE_BASE_URL": upstream, "NAIVE_API_KEY": f"nv_sk_test_bench_{uuid.uuid4().hex}"}
    with _started([NAIVE_MCP], env) as process:
        time.sleep(pause)
        started = time.perf_counter()
        _send(process, {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": _CHAT})
        answer = _answer(process, 3)
        took = (time.perf_counter() - started) * 1000
    result = answer.get("result")
    if not isinstance(result, dict) or result.get("isError"):
        raise RuntimeError(f"the first call failed: {answer}")
    return took


@contextmanager
def _started(command: list[str], env: dict[str, str]) -> Iterator[subprocess.Popen[str]]:
    """The server spawned, initialized and its tools listed; stopped (stdin closed) afterwards."""
    # naive-mcp opens the run's scratch SQLite file, the default engine (in the background:
    # tools/list does not wait for it), as a user's start opens theirs; never the user's own.
    # The bare server ignores it.
    env = {"PATH": os.environ.get("PATH", ""), "NAIVE_LOG_LEVEL": "WARNING", **clients.server_env(), **env}
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
        yield process
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
