"""A `naive-mcp` subprocess on stdio, spoken to line by line: for what an SDK client cannot send
(an overlong line) and for reading the server's memory (its pid, /proc/PID/status)."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
from mcp.types import LATEST_PROTOCOL_VERSION

from tests.conftest import NAIVE_MCP, SESSION_TIMEOUT


class RawStdio:
    def __init__(self, process: subprocess.Popen[bytes], stderr: Path) -> None:
        self.process = process
        self.stderr = stderr
        self._next_id = 1

    def send(self, message: dict[str, Any] | bytes) -> None:
        data = message if isinstance(message, bytes) else json.dumps(message).encode() + b"\n"
        assert self.process.stdin is not None
        self.process.stdin.write(data)
        self.process.stdin.flush()

    async def send_in_thread(self, data: bytes) -> None:
        """For a write larger than the pipe holds: it blocks until the server has read it."""
        await anyio.to_thread.run_sync(self.send, data)

    async def receive(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        with anyio.fail_after(SESSION_TIMEOUT):
            line = await anyio.to_thread.run_sync(self.process.stdout.readline)
        assert line, f"the server closed stdout:\n{self.logs()}"
        message: dict[str, Any] = json.loads(line)
        return message

    async def answer(self, request_id: int | str | None) -> dict[str, Any]:
        """The next message with this id, notifications skipped."""
        while True:
            message = await self.receive()
            if "id" in message and message["id"] == request_id:
                return message

    async def request(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        request_id, self._next_id = self._next_id, self._next_id + 1
        self.send({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params or {}})
        return await self.answer(request_id)

    async def initialize(self) -> None:
        params = {
            "protocolVersion": LATEST_PROTOCOL_VERSION,
            "capabilities": {},
            "clientInfo": {"name": "raw-stdio-test", "version": "0"},
        }
        answer = await self.request("initialize", params)
        assert "result" in answer, answer
        self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})

    def memory(self) -> dict[str, int]:
        """The server's VmRSS and VmHWM (peak resident), in bytes."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        return {name: int(fields[name].split()[0]) * 1024 for name in ("VmRSS", "VmHWM")}

    def logs(self) -> str:
        return self.stderr.read_text()


@contextmanager
def raw_stdio(tmp: Path, env: dict[str, str]) -> Iterator[RawStdio]:
    stderr = tmp / "naive-mcp-raw.stderr"
    with stderr.open("wb") as log:
        process = subprocess.Popen(
            [str(NAIVE_MCP)],
            env={"PATH": os.environ["PATH"], "NAIVE_STORE": "memory", **env},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
        )
    try:
        yield RawStdio(process, stderr)
    finally:
        process.kill()
        process.wait(10)
        for pipe in (process.stdin, process.stdout):
            if pipe is not None:
                pipe.close()
