"""naive_search_primitives and naive_run_primitive: the same methods as the typed tools."""

from __future__ import annotations

import json
from typing import Any

import pytest
from mcp import Client
from mcp.types import TextContent

pytestmark = pytest.mark.anyio


async def test_search_lists_the_llm_methods_with_the_typed_tools_schemas(client: Client) -> None:
    result = await client.call_tool("naive_search_primitives", {})

    assert not result.is_error
    data = result.structured_content
    assert data is not None
    (llm,) = data["primitives"]
    assert llm["primitive"] == "llm"
    typed = {tool.name: tool for tool in (await client.list_tools()).tools}
    methods = {method["method"]: method for method in llm["methods"]}
    assert list(methods) == ["chat", "complete", "compare", "models", "generation"]
    # Text completions run through the generic pair alone: tools/list stays small.
    assert methods.pop("complete")["tool"] == "naive_run_primitive"
    assert "naive_llm_complete" not in typed
    for name, method in methods.items():
        tool = typed[f"naive_llm_{name}"]
        assert method["tool"] == tool.name
        assert method["arguments_schema"] == tool.input_schema
        assert method["description"] == tool.description
    assert methods["chat"]["read_only"] is False and methods["models"]["read_only"] is True
    block = result.content[0]
    assert isinstance(block, TextContent)
    assert json.loads(block.text) == data


async def test_search_filters_by_query(client: Client) -> None:
    result = await client.call_tool("naive_search_primitives", {"query": "cost"})
    assert result.structured_content is not None
    found = [m["method"] for p in result.structured_content["primitives"] for m in p["methods"]]
    assert found == ["chat", "complete", "compare", "generation"]

    nothing = await client.call_tool("naive_search_primitives", {"query": "teleport"})
    assert nothing.structured_content == {"primitives": []}
    block = nothing.content[0]
    assert isinstance(block, TextContent) and "without `query`" in block.text


def comparable(data: dict[str, Any] | None) -> dict[str, Any]:
    assert data is not None
    return {
        key: value
        for key, value in data.items()
        if key not in ("id", "credits_used", "credits_remaining", "thread_id")
    }


async def test_run_primitive_gives_the_same_result_as_the_typed_tool(client: Client) -> None:
    arguments = {"prompt": "Same?", "model": "openai/gpt-5.2", "max_tokens": 50}

    typed = await client.call_tool("naive_llm_chat", arguments)
    generic = await client.call_tool(
        "naive_run_primitive", {"primitive": "llm", "method": "chat", "arguments": arguments}
    )

    assert not generic.is_error
    assert comparable(generic.structured_content) == comparable(typed.structured_content)
    assert generic.content[0] == typed.content[0]

    for method, method_arguments in (
        ("models", {"search": "gemini"}),
        ("generation", {"id": typed.structured_content["id"]}),
    ):  # type: ignore[index]
        via_run = await client.call_tool(
            "naive_run_primitive", {"primitive": "llm", "method": method, "arguments": method_arguments}
        )
        direct = await client.call_tool(f"naive_llm_{method}", method_arguments)
        assert via_run.structured_content == direct.structured_content
        assert via_run.content == direct.content


async def test_an_unknown_pair_names_the_methods_that_exist(client: Client) -> None:
    result = await client.call_tool("naive_run_primitive", {"primitive": "llm", "method": "compose"})

    assert result.is_error
    block = result.content[0]
    assert isinstance(block, TextContent)
    assert block.text.startswith(
        "Unknown Naive primitive method: 'llm.compose'. The methods that exist: llm.chat, llm.complete, "
        "llm.compare, llm.models, llm.generation."
    )
    assert block.text.endswith("Call naive_search_primitives to see every method and its arguments.")


async def test_run_primitive_validates_with_the_methods_own_model(client: Client) -> None:
    result = await client.call_tool(
        "naive_run_primitive",
        {"primitive": "llm", "method": "chat", "arguments": {"prompt": "x", "temperature": 9}},
    )

    assert result.is_error
    block = result.content[0]
    assert isinstance(block, TextContent)
    assert (
        "Invalid arguments for naive_run_primitive (llm.chat):\n- arguments.temperature: should be less than or equal to 2"
        in (block.text)
    )
