"""What a client sees in tools/list: seven tools, honest annotations, small schemas."""

from __future__ import annotations

import json
from typing import Any

import pytest
from mcp import Client

from bench.sizes import TOOLS_LIST_TARGET_BYTES
from naive_mcp.server import create_server
from naive_mcp.settings import Settings
from tests.conftest import TOOL_NAMES

pytestmark = pytest.mark.anyio


async def test_seven_tools_with_their_annotations(client: Client) -> None:
    tools = {tool.name: tool for tool in (await client.list_tools()).tools}

    assert list(tools) == [
        "naive_llm_chat",
        "naive_llm_compare",
        "naive_llm_models",
        "naive_llm_generation",
        "naive_llm_result",
        "naive_search_primitives",
        "naive_run_primitive",
    ]
    for spends in ("naive_llm_chat", "naive_llm_compare"):
        annotations = tools[spends].annotations
        assert annotations is not None
        assert (annotations.read_only_hint, annotations.destructive_hint) == (False, False)
        assert (annotations.idempotent_hint, annotations.open_world_hint) == (False, True)
        assert "credits" in (tools[spends].description or "")
    for free in ("naive_llm_models", "naive_llm_generation", "naive_search_primitives"):
        annotations = tools[free].annotations
        assert annotations is not None
        assert (annotations.read_only_hint, annotations.idempotent_hint) == (True, True)
        assert annotations.destructive_hint is None, "it means nothing on a read-only tool"
        assert "Free" in (tools[free].description or "")
    result = tools["naive_llm_result"].annotations
    assert result is not None and (result.read_only_hint, result.destructive_hint) == (False, True), "cancel"
    assert "Free" in (tools["naive_llm_result"].description or "")
    # Their structured content is another tool's (the job's, the named method's).
    assert tools["naive_run_primitive"].output_schema is None
    assert tools["naive_llm_result"].output_schema is None
    assert all(tools[name].output_schema for name in list(tools)[:4])


def schema_keys(node: Any) -> set[str]:
    """Every keyword used in a JSON Schema, property names excluded."""
    if isinstance(node, list):
        return set().union(*(schema_keys(item) for item in node))
    if not isinstance(node, dict):
        return set()
    keys = set(node) - {"properties"}
    for key, value in node.items():
        children = value.values() if key in ("properties", "$defs") else [value]
        keys |= set().union(*(schema_keys(child) for child in children))
    return keys


async def test_schemas_are_compact_and_carry_no_generated_titles(client: Client) -> None:
    tools = (await client.list_tools()).tools

    for tool in tools:
        keywords = schema_keys(tool.input_schema) | schema_keys(tool.output_schema)
        assert not keywords & {"title", "discriminator"}, tool.name
    chat = tools[0].input_schema
    assert chat["properties"]["temperature"] == {"maximum": 2, "minimum": 0, "type": "number"}
    assert chat["additionalProperties"] is False


async def test_all_seven_tools_fit_the_tools_list_budget(settings: Settings) -> None:
    # Measured as the bench measures it: the whole tools/list answer, as compact JSON.
    async with Client(create_server(settings), mode="legacy") as legacy:
        listing = (await legacy.list_tools()).model_dump(mode="json", by_alias=True, exclude_none=True)
    listing.pop("_meta", None)

    size = len(json.dumps(listing, separators=(",", ":")))
    assert size <= TOOLS_LIST_TARGET_BYTES, size


async def test_a_2025_era_client_with_the_initialize_handshake_is_served_too(settings: Settings) -> None:
    async with Client(create_server(settings), mode="legacy") as legacy:
        assert legacy.protocol_version == "2025-11-25"
        assert len((await legacy.list_tools()).tools) == len(TOOL_NAMES)
        result = await legacy.call_tool("naive_llm_chat", {"prompt": "hi"})
    assert not result.is_error


async def test_output_schemas_hold_their_shapes_inline_without_references(client: Client) -> None:
    tools = {tool.name: tool for tool in (await client.list_tools()).tools}
    for name, tool in tools.items():
        if tool.output_schema is not None:
            assert not schema_keys(tool.output_schema) & {"$ref", "$defs"}, name
    chat = tools["naive_llm_chat"].output_schema["properties"]  # type: ignore[index]
    # Nested records by shape, for the tools/list budget (the README lists their fields).
    assert chat["usage"] == {"type": "object"} and chat["tool_calls"] == {"type": "array"}


def test_a_model_that_refers_to_itself_keeps_its_references() -> None:
    from pydantic import BaseModel

    from naive_mcp.schema import output_schema

    class Node(BaseModel):
        name: str
        children: list[Node] = []

    schema = output_schema(Node)
    assert "$defs" in schema and "$ref" in str(schema)
