"""The real `naive-mcp` console script, driven over stdio by the MCP SDK's client.

Each test starts the server as a subprocess, as an MCP client would, with its settings in the
environment; the child's stderr goes to a file the test reads back.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any, TextIO

import pytest
from mcp import Client
from mcp.types import CallToolResult, TextContent

from naive_mcp.sandbox import RunningSandbox
from tests.conftest import DEFAULT_MODEL, TOOL_NAMES, naive_mcp, upstream_env

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


def texts(result: CallToolResult) -> list[str]:
    blocks = result.content
    assert all(isinstance(block, TextContent) for block in blocks), blocks
    return [block.text for block in blocks if isinstance(block, TextContent)]


async def call_ok(client: Client, tool: str, arguments: dict[str, Any]) -> CallToolResult:
    result = await client.call_tool(tool, arguments)
    assert not result.is_error, texts(result)
    return result


async def call_error(client: Client, tool: str, arguments: dict[str, Any]) -> str:
    """Call a tool that must fail; returns its error text."""
    result = await client.call_tool(tool, arguments)
    assert result.is_error, result
    assert result.structured_content is None
    return "\n".join(texts(result))


def stderr_of(errlog: TextIO) -> str:
    errlog.flush()
    return Path(errlog.name).read_text()


async def test_lists_exactly_the_five_tools(sandbox: RunningSandbox, api_key: str, errlog: TextIO) -> None:
    async with naive_mcp(errlog, upstream_env(sandbox, api_key)) as client:
        listed = await client.list_tools()

    assert {tool.name for tool in listed.tools} == TOOL_NAMES
    assert len(listed.tools) == len(TOOL_NAMES)


async def test_chat_returns_reply_then_summary_and_structured_usage_and_credits(
    sandbox: RunningSandbox, api_key: str, errlog: TextIO
) -> None:
    async with naive_mcp(errlog, upstream_env(sandbox, api_key)) as client:
        result = await call_ok(client, "naive_llm_chat", {"prompt": "hello over stdio"})

    reply, summary = texts(result)
    assert reply == f"Sandbox reply from {DEFAULT_MODEL}: hello over stdio"
    structured = result.structured_content
    assert isinstance(structured, dict)
    assert structured["text"] == reply
    assert structured["id"].startswith("gen-")
    assert structured["model"] == DEFAULT_MODEL
    assert structured["usage"]["prompt_tokens"] > 0
    assert structured["usage"]["cost"] > 0
    assert structured["credits_used"] > 0
    assert structured["credits_remaining"] < 100
    assert summary.startswith(f"[model {DEFAULT_MODEL}")
    assert f"id {structured['id']}" in summary


async def test_chat_sends_the_key_and_the_tenancy_it_is_given(
    sandbox: RunningSandbox, api_key: str, errlog: TextIO
) -> None:
    async with naive_mcp(errlog, upstream_env(sandbox, api_key)) as client:
        await call_ok(client, "naive_llm_chat", {"prompt": "no tenant"})
        await call_ok(
            client,
            "naive_llm_chat",
            {"prompt": "for a tenant", "user_id": "usr_stdio_1", "project_id": "prj_stdio_1"},
        )

    plain, tenant = sandbox.sandbox.ledger.requests(api_key)
    for record in (plain, tenant):
        assert (record.method, record.path, record.key) == ("POST", "/v1/llm/chat/completions", api_key)
    assert (plain.user_id, plain.project_id) == (None, None)
    assert (tenant.user_id, tenant.project_id) == ("usr_stdio_1", "prj_stdio_1")
    assert tenant.body["messages"] == [{"role": "user", "content": "for a tenant"}]


async def test_upstream_error_is_a_tool_error_with_kind_and_delay_and_the_server_stays_up(
    sandbox: RunningSandbox, api_key: str, errlog: TextIO
) -> None:
    async with naive_mcp(errlog, upstream_env(sandbox, api_key)) as client:
        error = await call_error(
            client, "naive_llm_chat", {"prompt": "hi", "model": "sandbox/fail-rate-limited"}
        )
        after = await call_ok(client, "naive_llm_chat", {"prompt": "still there?"})

    assert "rate_limited" in error
    assert "HTTP 429" in error
    assert "Retry after 7 s" in error
    assert texts(after)[0].endswith("still there?")


async def test_api_key_never_appears_in_results_or_stderr(
    sandbox: RunningSandbox, api_key: str, errlog: TextIO
) -> None:
    # The sandbox rejects a "revoked" key and echoes it in its 401 message.
    revoked_key = f"nv_sk_test_revoked_{uuid.uuid4().hex}"
    debug = {"NAIVE_LOG_LEVEL": "DEBUG"}
    results: list[CallToolResult] = []

    async with naive_mcp(errlog, {**upstream_env(sandbox, revoked_key), **debug}) as client:
        results.append(await client.call_tool("naive_llm_chat", {"prompt": "hi"}))
        results.append(await client.call_tool("naive_llm_models", {}))
    async with naive_mcp(errlog, {**upstream_env(sandbox, api_key), **debug}) as client:
        results.append(
            await client.call_tool("naive_llm_chat", {"prompt": "hi", "model": "sandbox/fail-unauthorized"})
        )

    assert sandbox.sandbox.ledger.requests(revoked_key), "the revoked key never reached the sandbox"
    assert all(result.is_error for result in results)
    assert all("unauthorized" in texts(result)[0] for result in results)
    for key in (revoked_key, api_key):
        for result in results:
            assert all(key not in text for text in texts(result))
            assert key not in result.model_dump_json()
        assert key not in stderr_of(errlog)
    assert "naive-mcp serving on stdio" in stderr_of(errlog)


async def test_without_api_key_tools_are_listed_and_calls_ask_for_it_without_calling_upstream(
    sandbox: RunningSandbox, errlog: TextIO
) -> None:
    seen_before = len(sandbox.sandbox.ledger.requests())

    async with naive_mcp(errlog, upstream_env(sandbox, api_key=None)) as client:
        listed = await client.list_tools()
        chat_error = await call_error(client, "naive_llm_chat", {"prompt": "hi"})
        models_error = await call_error(client, "naive_llm_models", {})

    assert {tool.name for tool in listed.tools} == TOOL_NAMES
    for error in (chat_error, models_error):
        assert "no_api_key" in error
        assert "Set NAIVE_API_KEY" in error
    assert len(sandbox.sandbox.ledger.requests()) == seen_before
    assert "NAIVE_API_KEY is not set" in stderr_of(errlog)


async def test_sandbox_flag_serves_chat_models_and_generation_with_no_key_or_base_url(
    errlog: TextIO,
) -> None:
    async with naive_mcp(errlog, {}, "--sandbox") as client:
        chat = await call_ok(client, "naive_llm_chat", {"prompt": "hi sandbox"})
        models = await call_ok(client, "naive_llm_models", {"author": "anthropic"})
        generation_id = chat.structured_content["id"]
        generation = await call_ok(client, "naive_llm_generation", {"id": generation_id})

    assert texts(chat)[0].strip()
    assert [model["id"] for model in models.structured_content["models"]] == [
        "anthropic/claude-haiku-4.5",
        "anthropic/claude-sonnet-4.6",
    ]
    assert generation.structured_content["id"] == generation_id
    assert generation.structured_content["total_cost"] == chat.structured_content["usage"]["cost"]
    assert "sandbox upstream on http://127.0.0.1:" in stderr_of(errlog)
    assert "usage: 1 chat calls" in stderr_of(errlog), "the usage ledger is logged when the server stops"


async def test_out_of_range_temperature_is_an_error_naming_temperature_and_nothing_is_sent(
    sandbox: RunningSandbox, api_key: str, errlog: TextIO
) -> None:
    async with naive_mcp(errlog, upstream_env(sandbox, api_key)) as client:
        error = await call_error(client, "naive_llm_chat", {"prompt": "hi", "temperature": 5})

    assert "temperature" in error
    assert "less than or equal to 2" in error
    assert sandbox.sandbox.ledger.requests(api_key) == []
