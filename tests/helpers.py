"""Small readers of what a client got back, shared by the test files."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from mcp import Client
from mcp.types import CallToolResult, TextContent, TextResourceContents


def text_of(result: CallToolResult, index: int = 0) -> str:
    """The text of a result's content block (the first unless told)."""
    block = result.content[index]
    assert isinstance(block, TextContent)
    return block.text


async def usage_of(client: Client) -> dict[str, Any]:
    """The server's `naive://usage` resource, parsed."""
    contents = (await client.read_resource("naive://usage")).contents[0]
    assert isinstance(contents, TextResourceContents)
    usage: dict[str, Any] = json.loads(contents.text)
    return usage


async def settled_as(client: Client, outcome: str, *, wait: float = 60) -> dict[str, Any]:
    """The ledger's figures for `outcome` once a call has been settled so (from the generation's
    stats, which come a little after the call ends)."""
    with anyio.fail_after(wait):
        while outcome not in (by_outcome := (await usage_of(client))["by_outcome"]):  # noqa: ASYNC110 - the ledger has no event
            await anyio.sleep(0.05)
    figures: dict[str, Any] = by_outcome[outcome]
    return figures


async def raw_request(client: Client, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """One request as sent and answered on the wire, past the client's result validation (an SDK
    internal: its dispatcher's raw send), which knows neither a `CreateTaskResult` nor a
    `resultType: "task"`."""
    answer: dict[str, Any] = await client.session._dispatcher.send_raw_request(method, params, {})
    return answer


async def task_until(
    ask: Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]],
    task_id: str,
    done: Any,
    *,
    wait: float = 60,
) -> dict[str, Any]:
    """`tasks/get` of `task_id`, through `ask(method, params)`, until `done(task)` holds."""
    with anyio.fail_after(wait):
        while True:
            task = await ask("tasks/get", {"taskId": task_id})
            if done(task):
                return task
            await anyio.sleep(0.02)
