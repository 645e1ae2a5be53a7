"""The sandbox upstream in a process of its own, so that its work never shares the GIL (or the
profile) with what a benchmark measures; and what the bench reads of a server process from
Linux's /proc: its memory, its CPU with its workers', which worker holds a connection."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx2

STARTUP_SECONDS = 20


@contextmanager
def sandbox_process(latency: float = 0.0, port: int | None = None) -> Iterator[str]:
    """`python -m naive_mcp.sandbox` on `port` (else a free loopback port); yields its base URL."""
    with sandbox_server(latency, port) as (url, _):
        yield url


@contextmanager
def sandbox_server(latency: float = 0.0, port: int | None = None) -> Iterator[tuple[str, int]]:
    """As `sandbox_process`; yields its base URL and its pid (whose CPU a figure may count)."""
    port = port or free_port()
    command = [sys.executable, "-m", "naive_mcp.sandbox", "--port", str(port), "--latency", str(latency)]
    process = subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_healthy(url, process)
        yield url, process.pid
    finally:
        process.terminate()
        process.wait(30)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until_healthy(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with status {process.returncode}")
        try:
            if httpx2.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx2.TransportError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer /health within {STARTUP_SECONDS} s")


def rss_mb(pid: int) -> float:
    """Resident memory (VmRSS) of a process, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def process_tree(pid: int) -> list[int]:
    """`pid` and its live descendants (a server's workers), from Linux's /proc."""
    tree = [pid]
    for parent in tree:  # grows as it goes: children, then theirs
        try:
            tasks = list(Path(f"/proc/{parent}/task").iterdir())
        except OSError:
            continue
        for task in tasks:
            try:
                tree += [int(child) for child in (task / "children").read_text().split()]
            except OSError:
                continue
    return tree


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of `pid` and of its live descendants, in seconds."""
    total = 0
    for member in process_tree(pid):
        try:
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # it ended meanwhile
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def machine_cpu() -> tuple[int, int]:
    """The machine's CPU time so far, all cores, in clock ticks: (busy, total), from /proc/stat."""
    with open("/proc/stat") as stat:
        ticks = [int(value) for value in stat.readline().split()[1:]]
    idle = ticks[3] + ticks[4]  # idle, iowait
    return sum(ticks) - idle, sum(ticks)


def connection_holders(server_port: int, client_ports: Iterable[int], pids: Iterable[int]) -> dict[int, int]:
    """Which of `pids` holds the server's end of each loopback connection to `server_port` from
    `client_ports`: {client port: pid}. A process answers the requests of the connections it
    holds, so this says which worker served them (Linux's /proc/net/tcp and /proc/PID/fd)."""
    wanted = set(client_ports)
    inodes: dict[str, int] = {}  # socket inode: client port
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as lines:
            for line in list(lines)[1:]:
                fields = line.split()
                local, remote, state, inode = fields[1], fields[2], fields[3], fields[9]
                remote_port = int(remote.rsplit(":", 1)[1], 16)
                if (
                    state == "01"
                    and int(local.rsplit(":", 1)[1], 16) == server_port
                    and remote_port in wanted
                ):
                    inodes[f"socket:[{inode}]"] = remote_port  # 01: ESTABLISHED
    holders: dict[int, int] = {}
    for pid in pids:
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target in inodes:
                holders[inodes[target]] = pid
    return holders


# The chat request every figure makes: one short prompt to a listed model.
MODEL = "openai/gpt-5-mini"
PROMPT = "benchmark"


async def direct_chat(http: httpx2.AsyncClient, url: str, key: str) -> None:
    """What a program calling Naive itself would do: send the chat request, read the stream."""
    body = {"model": MODEL, "messages": [{"role": "user", "content": PROMPT}], "stream": True}
    headers = {"Authorization": f"Bearer {key}"}
    async with http.stream("POST", f"{url}/v1/llm/chat/completions", json=body, headers=headers) as response:
        response.raise_for_status()
        async for event in httpx2.EventSource(response):
            if event.data != "[DONE]":
                json.loads(event.data)
