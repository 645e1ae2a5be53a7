"""Output sizes: what every agent using the server pays in context."""

from __future__ import annotations

import json
import uuid

from mcp import Client
from mcp.types import TextContent
from pydantic import SecretStr

from bench.report import Figure
from naive_mcp.sandbox import serve_in_thread
from naive_mcp.server import create_server
from naive_mcp.settings import Settings

# Every agent reads tools/list into its context (issue 13: 12 KB for all tools).
TOOLS_LIST_TARGET_BYTES = 12_000
LISTING_LINE_TARGET_BYTES = 120


async def measure() -> list[Figure]:
    with serve_in_thread() as sandbox:
        settings = Settings(base_url=sandbox.url, api_key=SecretStr(f"nv_sk_test_{uuid.uuid4().hex}"))
        async with Client(create_server(settings), mode="legacy") as client:
            listing = (await client.list_tools()).model_dump(mode="json", by_alias=True, exclude_none=True)
            listing.pop("_meta", None)
            models = await client.call_tool("naive_llm_models", {"limit": 100})
    block = models.content[0]
    assert isinstance(block, TextContent)
    assert models.structured_content is not None
    count = len(models.structured_content["models"])
    return [
        Figure(
            "tools/list, all seven tools, as JSON",
            [len(json.dumps(listing, separators=(",", ":")))],
            TOOLS_LIST_TARGET_BYTES,
            unit="bytes",
        ),
        Figure(
            f"naive_llm_models text block, per model ({count} models)",
            [len(block.text.encode()) / count],
            LISTING_LINE_TARGET_BYTES,
            unit="bytes",
        ),
    ]
