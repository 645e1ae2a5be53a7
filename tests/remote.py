"""A real `naive-mcp` HTTP server in a subprocess, for the remote tests."""

from __future__ import annotations

import os
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx2
from mcp import Client
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client

from bench.upstream import free_port, wait_until_healthy
from tests.conftest import NAIVE_MCP


@dataclass
class HttpServer:
    base: str  # http://127.0.0.1:PORT
    path: str
    process: subprocess.Popen[bytes]
    stderr: Path

    @property
    def url(self) -> str:
        return f"{self.base}{self.path}"

    def logs(self) -> str:
        return self.stderr.read_text()


@contextmanager
def http_server(
    tmp: Path,
    env: dict[str, str],
    *args: str,
    transport: str = "streamable-http",
    port: int | None = None,
    preexec_fn: Callable[[], None] | None = None,
    command: Sequence[str] = (str(NAIVE_MCP),),
) -> Iterator[HttpServer]:
    """Start `naive-mcp --transport …` on `port` (else a free loopback port) and wait until
    /health answers — from this process: tests run in parallel (pytest-xdist), and another
    worker's server may take a free port between `free_port()` and the bind, then answer /health
    in its place; a free port is then tried again. `preexec_fn` runs in the child before it
    starts (e.g. to set an rlimit). `command`: what to run in place of `naive-mcp`."""
    for _ in range(5):
        server = _start(tmp, env, args, transport, port or free_port(), preexec_fn, command)
        try:
            _wait_until_healthy(server)
            if port is not None or _listens_on(server.process.pid, int(server.base.rsplit(":", 1)[1])):
                break
        except BaseException:
            _stop(server.process)
            raise
        _stop(server.process)  # the port was another's: try another
    else:
        raise AssertionError("no free port could be bound in five tries")
    try:
        yield server
    finally:
        _stop(server.process)


def _start(
    tmp: Path,
    env: dict[str, str],
    args: tuple[str, ...],
    transport: str,
    port: int,
    preexec_fn: Callable[[], None] | None,
    command: Sequence[str],
) -> HttpServer:
    stderr = tmp / f"naive-mcp-{port}.stderr"
    with stderr.open("ab") as log:
        process = subprocess.Popen(
            [*command, "--transport", transport, "--port", str(port), *args],
            env={"PATH": os.environ["PATH"], "NAIVE_STORE": "memory", **env},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
            preexec_fn=preexec_fn,
        )
    return HttpServer(f"http://127.0.0.1:{port}", "/sse" if transport == "sse" else "/mcp", process, stderr)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
        process.wait(10)


def _listens_on(pid: int, port: int) -> bool:
    """Whether process `pid` holds the socket listening on loopback `port` (Linux's /proc)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as lines:
            for line in list(lines)[1:]:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                    inodes.add(fields[9])
    fds = Path(f"/proc/{pid}/fd")
    held = set()
    for fd in fds.iterdir():
        try:
            held.add(os.readlink(fd))
        except OSError:
            continue
    return any(f"socket:[{inode}]" in held for inode in inodes)


def _wait_until_healthy(server: HttpServer) -> None:
    try:
        wait_until_healthy(server.base, server.process)
    except RuntimeError as error:
        raise AssertionError(f"{error}:\n{server.logs()}") from None


@asynccontextmanager
async def connect(
    server: HttpServer, token: str | None = None, *, mode: str = "auto", terminate_on_close: bool = True
) -> AsyncIterator[Client]:
    """An MCP client over the server's transport, sending `token` as its bearer token.
    `terminate_on_close=False` for a server that is going away: no session DELETE at the end."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if server.path == "/sse":
        async with Client(sse_client(server.url, headers=headers), mode=mode) as client:
            yield client
        return
    async with (
        httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=300)) as http,
        Client(
            streamable_http_client(server.url, http_client=http, terminate_on_close=terminate_on_close),
            mode=mode,
        ) as client,
    ):
        yield client


__all__ = ["HttpServer", "connect", "free_port", "http_server"]
