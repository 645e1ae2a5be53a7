"""MCP by hand over HTTP, for the tests that must do what no SDK client does: JSON-RPC messages,
one POST's event stream as it comes, what the sandbox upstream saw of a call."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx2

from naive_mcp.sandbox import RunningSandbox
from naive_mcp.sandbox.ledger import RequestRecord

# Generous bounds for a busy machine; none of them paces a test.
WAIT = 60
HEADERS = {
    "Accept": "application/json, text/event-stream",
    "Content-Type": "application/json",
    "MCP-Protocol-Version": "2025-11-25",
}


def initialize(request_id: int | str = 0) -> dict[str, Any]:
    params = {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "raw", "version": "0"},
    }
    return {"jsonrpc": "2.0", "id": request_id, "method": "initialize", "params": params}


INITIALIZED = {"jsonrpc": "2.0", "method": "notifications/initialized"}


def tools_call(
    request_id: int | str, prompt: str = "long", model: str | None = "sandbox/slow"
) -> dict[str, Any]:
    arguments = {"prompt": prompt, **({"model": model} if model else {})}
    params = {"name": "naive_llm_chat", "arguments": arguments, "_meta": {"progressToken": "p"}}
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params}


def cancel(request_id: int | str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": request_id}}


def is_answer_progress(message: object) -> bool:
    """A progress message with answer text in it (the first ones say it is waiting)."""
    return isinstance(message, str) and message.startswith("Sandbox reply")


def bearer(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


class EventStream:
    """The JSON-RPC messages of one SSE response, as they come."""

    def __init__(self, response: httpx2.Response) -> None:
        self.response = response
        self._lines = response.aiter_lines()

    async def next_event(self) -> tuple[str | None, str] | None:
        """The next event's name and data, or None at the end of the stream."""
        name: str | None = None
        data: list[str] = []
        async for line in self._lines:
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
            elif not line and data:
                return name, "\n".join(data)
        return (name, "\n".join(data)) if data else None

    async def next(self) -> dict[str, Any] | None:
        """The next message, or None at the end of the stream."""
        while (event := await self.next_event()) is not None:
            if event[0] in (None, "message"):
                message: dict[str, Any] = json.loads(event[1])
                return message
        return None

    async def answering(self) -> None:
        """Wait until the answer is coming in: the upstream has the call and is streaming it."""
        with anyio.fail_after(WAIT):
            while (message := await self.next()) is not None:
                if is_answer_progress(message.get("params", {}).get("message")):
                    return
        raise AssertionError("the call ended before its answer came")

    async def rest(self) -> list[dict[str, Any]]:
        messages = []
        while (message := await self.next()) is not None:
            messages.append(message)
        return messages


@asynccontextmanager
async def streamed(
    http: httpx2.AsyncClient, url: str, message: dict[str, Any], headers: Mapping[str, str] | None = None
) -> AsyncIterator[EventStream]:
    async with http.stream("POST", url, json=message, headers={**HEADERS, **(headers or {})}) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        yield EventStream(response)


async def post(
    http: httpx2.AsyncClient, url: str, message: Any, headers: Mapping[str, str] | None = None
) -> httpx2.Response:
    return await http.post(url, json=message, headers={**HEADERS, **(headers or {})})


def last_chat(sandbox: RunningSandbox, api_key: str) -> RequestRecord:
    """The latest chat completion the upstream saw (a cancelled call may look up its cost after)."""
    return [r for r in sandbox.sandbox.ledger.requests(api_key) if r.path.endswith("/chat/completions")][-1]


async def ended(record: RequestRecord) -> None:
    assert await anyio.to_thread.run_sync(record.stream_ended.wait, WAIT), "the upstream stream never ended"


def answer(messages: list[dict[str, Any]]) -> dict[str, Any]:
    """The one response or error among a stream's messages (the rest are progress notifications)."""
    answers = [m for m in messages if "method" not in m]
    assert len(answers) == 1, messages
    assert all(m["method"] == "notifications/progress" for m in messages if "method" in m)
    return answers[0]


def http_client(**kwargs: Any) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(timeout=httpx2.Timeout(30, read=120), **kwargs)
