"""naive_llm_generation: cost of an earlier call, through the brief 404 right after it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from mcp import Client
from mcp.types import TextContent

from naive_mcp.sandbox import RunningSandbox, SandboxConfig, serve_in_thread
from naive_mcp.server import create_server
from tests.conftest import make_settings

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def lagging() -> Iterator[RunningSandbox]:
    """Stats that appear 2 s after a generation ends: the lookup made right after the chat meets
    the 404 however busy the machine is (the server waits up to NAIVE_GENERATION_WAIT for them)."""
    with serve_in_thread(SandboxConfig(generation_delay=2.0)) as running:
        yield running


async def test_stats_of_a_call_made_a_moment_ago_arrive_after_the_brief_404(
    lagging: RunningSandbox, api_key: str
) -> None:
    sandbox = lagging
    async with Client(create_server(make_settings(sandbox, api_key, generation_wait=60.0))) as client:
        chat = await client.call_tool("naive_llm_chat", {"prompt": "hello", "model": "openai/gpt-5.2"})
        assert chat.structured_content is not None
        generation_id = chat.structured_content["id"]

        result = await client.call_tool("naive_llm_generation", {"id": generation_id})

    assert not result.is_error, result.content
    data = result.structured_content
    assert data is not None
    assert data["id"] == generation_id
    assert data["model"] == "openai/gpt-5.2"
    assert data["provider"] == "OpenAI"
    assert data["total_cost"] == chat.structured_content["usage"]["cost"]
    assert (data["tokens_prompt"], data["tokens_completion"]) == (2, 10)
    assert data["finish_reason"] == "stop" and data["streamed"] is True
    block = result.content[0]
    assert isinstance(block, TextContent)
    assert block.text.startswith(f"{generation_id}: openai/gpt-5.2 via OpenAI · cost $0.0001025")
    statuses = [r.path for r in sandbox.sandbox.ledger.requests(api_key) if r.path.endswith("/generation")]
    assert len(statuses) >= 2, "the first lookup should have met the sandbox's not-yet-there 404"


async def test_an_id_this_server_did_not_make_is_answered_at_once(
    sandbox: RunningSandbox, api_key: str
) -> None:
    async with Client(create_server(make_settings(sandbox, api_key))) as client:
        result = await client.call_tool("naive_llm_generation", {"id": "gen-does-not-exist"})
        unknown_user = await client.call_tool(
            "naive_llm_generation", {"id": "gen-x", "user_id": "unknown_bob"}
        )

    assert len(sandbox.sandbox.ledger.requests(api_key)) == 2, "one request each: no waiting on a lost cause"
    assert unknown_user.is_error

    assert result.is_error
    block = result.content[0]
    assert isinstance(block, TextContent)
    assert block.text.startswith("not_found (HTTP 404): Generation gen-does-not-exist not found")
    assert "Check the id" in block.text


async def test_another_keys_generation_is_not_visible(sandbox: RunningSandbox, api_key: str) -> None:
    async with Client(create_server(make_settings(sandbox, api_key))) as client:
        chat = await client.call_tool("naive_llm_chat", {"prompt": "secret"})
    assert chat.structured_content is not None

    other = make_settings(sandbox, "nv_sk_test_someone_else", generation_wait=0.3)
    async with Client(create_server(other)) as client:
        result = await client.call_tool("naive_llm_generation", {"id": chat.structured_content["id"]})
    assert result.is_error
