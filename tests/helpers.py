"""Small readers of what a client got back, shared by the test files."""

from __future__ import annotations

import json
from typing import Any

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
