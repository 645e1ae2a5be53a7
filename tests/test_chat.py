"""naive_llm_chat end to end: in-memory MCP client → server → sandbox upstream over loopback HTTP."""

from __future__ import annotations

import json
from typing import Any

import pytest
from mcp import Client
from mcp.types import CallToolResult, TextContent

from naive_mcp.sandbox import RunningSandbox
from naive_mcp.server import create_server
from tests.conftest import make_settings

pytestmark = pytest.mark.anyio


def texts(result: CallToolResult) -> list[str]:
    return [block.text for block in result.content if isinstance(block, TextContent)]


def structured(result: CallToolResult) -> dict[str, Any]:
    assert not result.is_error, texts(result)
    assert result.structured_content is not None
    return result.structured_content


def last_body(sandbox: RunningSandbox, api_key: str) -> dict[str, Any]:
    body = sandbox.sandbox.ledger.requests(api_key)[-1].body
    assert isinstance(body, dict)
    return body


async def test_prompt_gets_the_reply_unchanged_first_then_a_summary_line(client: Client) -> None:
    result = await client.call_tool("naive_llm_chat", {"prompt": "Summarize REST in one line."})

    data = structured(result)
    first, summary = texts(result)
    assert (
        first == data["text"] == "Sandbox reply from anthropic/claude-sonnet-4.6: Summarize REST in one line."
    )
    assert summary.startswith("[model anthropic/claude-sonnet-4.6 via Anthropic")
    for fact in (
        "finish stop",
        "tokens 7 in / 19 out",
        "cost $0.000306",
        "used,",
        "left",
        f"id {data['id']}",
    ):
        assert fact in summary
    assert data["model"] == "anthropic/claude-sonnet-4.6"
    assert data["provider"] == "Anthropic"
    assert data["finish_reason"] == "stop"
    assert data["truncated"] is False
    assert data["usage"] == {
        "prompt_tokens": 7,
        "completion_tokens": 19,
        "total_tokens": 26,
        "reasoning_tokens": 0,
        "cached_tokens": 0,
        "cost": 0.000306,
    }
    assert data["credits_used"] > 0
    assert data["credits_remaining"] == pytest.approx(100 - data["credits_used"])


async def test_the_credit_balance_goes_down_call_after_call(client: Client) -> None:
    first = structured(await client.call_tool("naive_llm_chat", {"prompt": "one"}))
    second = structured(await client.call_tool("naive_llm_chat", {"prompt": "two"}))

    assert second["credits_remaining"] == pytest.approx(first["credits_remaining"] - second["credits_used"])
    assert first["id"] != second["id"]


async def test_system_and_prompt_become_messages_upstream(
    client: Client, sandbox: RunningSandbox, api_key: str
) -> None:
    await client.call_tool(
        "naive_llm_chat", {"prompt": "Hi", "system": "You are terse.", "model": "openai/gpt-5.2"}
    )

    body = last_body(sandbox, api_key)
    assert body["model"] == "openai/gpt-5.2"
    assert body["messages"] == [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Hi"},
    ]
    assert "system" not in body and "prompt" not in body


async def test_messages_with_content_parts_are_forwarded_as_sent(
    client: Client, sandbox: RunningSandbox, api_key: str
) -> None:
    messages = [
        {"role": "developer", "content": "Be exact."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is in these?"},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
                {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
                {
                    "type": "file",
                    "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBERg=="},
                },
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "look", "arguments": "{}"}}],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "a cat"},
        {"role": "user", "content": "And so?"},
    ]
    result = await client.call_tool("naive_llm_chat", {"messages": messages})

    assert structured(result)["text"].endswith("And so?")
    sent = last_body(sandbox, api_key)["messages"]
    assert sent[1]["content"] == messages[1]["content"]
    assert sent[2] == {"role": "assistant", "tool_calls": messages[2]["tool_calls"]}
    assert sent[3] == messages[3]


async def test_the_configured_default_model_answers_when_none_is_given(
    sandbox: RunningSandbox, api_key: str
) -> None:
    settings = make_settings(sandbox, api_key, default_model="google/gemini-2.5-flash")
    async with Client(create_server(settings)) as client:
        data = structured(await client.call_tool("naive_llm_chat", {"prompt": "hi"}))
    assert data["model"] == "google/gemini-2.5-flash"


async def test_no_model_and_no_default_is_a_clear_error_without_an_upstream_call(
    sandbox: RunningSandbox, api_key: str
) -> None:
    settings = make_settings(sandbox, api_key, default_model=None)
    async with Client(create_server(settings)) as client:
        result = await client.call_tool("naive_llm_chat", {"prompt": "hi"})

    assert result.is_error
    assert "NAIVE_DEFAULT_MODEL" in texts(result)[0] and "`model`" in texts(result)[0]
    assert sandbox.sandbox.ledger.requests(api_key) == []


async def test_a_fallback_chain_reports_the_model_that_actually_answered(
    client: Client, sandbox: RunningSandbox, api_key: str
) -> None:
    chain = ["sandbox/fail-provider-error", "openai/gpt-5-mini"]
    data = structured(await client.call_tool("naive_llm_chat", {"prompt": "hi", "models": chain}))

    assert data["model"] == "openai/gpt-5-mini"
    assert data["provider"] == "OpenAI"
    body = last_body(sandbox, api_key)
    assert body["model"] == "sandbox/fail-provider-error"
    assert body["models"] == chain


async def test_provider_routing_and_sampling_reach_the_upstream_as_given(
    client: Client, sandbox: RunningSandbox, api_key: str
) -> None:
    arguments: dict[str, Any] = {
        "prompt": "hi",
        "provider": {
            "order": ["anthropic"],
            "allow_fallbacks": False,
            "data_collection": "deny",
            "sort": "throughput",
            "max_price": {"prompt": 5, "completion": 20},
        },
        "temperature": 0.2,
        "top_p": 0.9,
        "top_k": 40,
        "min_p": 0.05,
        "top_a": 0.1,
        "frequency_penalty": -0.5,
        "presence_penalty": 0.5,
        "repetition_penalty": 1.1,
        "seed": 42,
        "logit_bias": {"50256": -100},
        "top_logprobs": 3,
        "parallel_tool_calls": False,
    }
    structured(await client.call_tool("naive_llm_chat", arguments))

    body = last_body(sandbox, api_key)
    for name, value in arguments.items():
        if name != "prompt":
            assert body[name] == value, name


async def test_the_rest_of_openrouters_body_reaches_the_upstream_unchanged(
    client: Client, sandbox: RunningSandbox, api_key: str
) -> None:
    arguments: dict[str, Any] = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {
                        "type": "text",
                        "text": "A long brief.",
                        "cache_control": {"type": "ephemeral", "ttl": "1h"},
                    },
                    {"type": "video_url", "video_url": {"url": "https://example.com/clip.mp4"}},
                    {
                        "type": "image_url",
                        "image_url": {"url": "https://example.com/cat.png"},
                        "cache_control": {"type": "ephemeral"},
                    },
                ],
            }
        ],
        "transforms": ["middle-out"],
        "usage": {"include": True},
        "user": "end-user-42",
        "logprobs": True,
        "top_logprobs": 2,
        "plugins": [
            {"id": "web", "max_results": 3, "engine": "exa", "search_prompt": "Sources:"},
            {"id": "file-parser", "pdf": {"engine": "pdf-text"}},
            {"id": "response-healing"},
        ],
        "modalities": ["text"],
        "prediction": {"type": "content", "content": "A long brief, revised."},
    }
    structured(await client.call_tool("naive_llm_chat", arguments))

    body = last_body(sandbox, api_key)
    for name, value in arguments.items():
        assert body[name] == value, name


async def test_top_logprobs_alone_asks_for_logprobs(
    client: Client, sandbox: RunningSandbox, api_key: str
) -> None:
    structured(await client.call_tool("naive_llm_chat", {"prompt": "hi", "top_logprobs": 0}))

    body = last_body(sandbox, api_key)
    assert (body["logprobs"], body["top_logprobs"]) == (True, 0)


async def test_extra_fields_are_added_to_the_body_as_given(
    client: Client, sandbox: RunningSandbox, api_key: str
) -> None:
    extra = {
        "verbosity": "low",
        "web_search_options": {"search_context_size": "high"},
        "a_field_of_tomorrow": [1, {"nested": None}],
    }
    structured(await client.call_tool("naive_llm_chat", {"prompt": "hi", "temperature": 0.5, "extra": extra}))

    body = last_body(sandbox, api_key)
    assert {name: body[name] for name in extra} == extra
    assert body["temperature"] == 0.5 and body["stream"] is True
    assert "extra" not in body


@pytest.mark.parametrize("variant", ["nitro", "floor", "exacto", "online"])
async def test_a_routing_variant_is_answered_by_its_base_model(
    client: Client, sandbox: RunningSandbox, api_key: str, variant: str
) -> None:
    data = structured(
        await client.call_tool("naive_llm_chat", {"prompt": "hi", "model": f"openai/gpt-5.2:{variant}"})
    )

    assert data["model"] == "openai/gpt-5.2"
    assert last_body(sandbox, api_key)["model"] == f"openai/gpt-5.2:{variant}"


async def test_provider_only_routes_to_an_allowed_provider_or_explains(client: Client) -> None:
    result = await client.call_tool(
        "naive_llm_chat", {"prompt": "hi", "model": "openai/gpt-5.2", "provider": {"only": ["anthropic"]}}
    )

    assert result.is_error
    assert "invalid_input (HTTP 400)" in texts(result)[0]
    assert "No allowed providers" in texts(result)[0]


async def test_max_tokens_truncation_is_reported(
    client: Client, sandbox: RunningSandbox, api_key: str
) -> None:
    result = await client.call_tool("naive_llm_chat", {"prompt": "a long question indeed", "max_tokens": 3})

    data = structured(result)
    assert data["truncated"] is True
    assert data["finish_reason"] == "length"
    assert len(data["text"]) == 12
    assert "(truncated at max_tokens)" in texts(result)[-1]
    assert last_body(sandbox, api_key)["max_tokens"] == 3


async def test_stop_sequences_and_json_response_format(client: Client) -> None:
    stopped = structured(await client.call_tool("naive_llm_chat", {"prompt": "hi", "stop": ["from"]}))
    assert stopped["text"] == "Sandbox reply "

    schema = {"type": "object", "properties": {"answer": {"type": "string"}}}
    formatted = structured(
        await client.call_tool(
            "naive_llm_chat",
            {
                "prompt": "hi",
                "response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": schema}},
            },
        )
    )
    assert json.loads(formatted["text"]) == {"answer": "Sandbox reply from anthropic/claude-sonnet-4.6: hi"}


async def test_reasoning_is_returned_and_counted(
    client: Client, sandbox: RunningSandbox, api_key: str
) -> None:
    data = structured(
        await client.call_tool("naive_llm_chat", {"prompt": "why?", "reasoning": {"effort": "high"}})
    )

    assert data["reasoning"].startswith("The user asks: why?")
    assert data["usage"]["reasoning_tokens"] > 0
    assert last_body(sandbox, api_key)["reasoning"] == {"effort": "high"}


async def test_tool_calls_reach_the_agent(client: Client) -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather in a city",
                "parameters": {"type": "object", "properties": {"query": {"type": "string"}}},
            },
        }
    ]
    result = await client.call_tool(
        "naive_llm_chat",
        {
            "prompt": "Paris",
            "tools": tools,
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        },
    )

    data = structured(result)
    assert data["finish_reason"] == "tool_calls"
    assert data["text"] == ""
    assert data["tool_calls"] == [
        {"id": "call_sandbox_1", "name": "get_weather", "arguments": '{"query": "Paris"}'}
    ]
    calls_block, summary = texts(result)
    assert calls_block.startswith("The model asks to call tools:")
    assert "get_weather" in calls_block
    assert summary.startswith("[model ")


async def test_user_and_project_ids_are_sent_as_tenancy_headers(
    client: Client, sandbox: RunningSandbox, api_key: str
) -> None:
    structured(
        await client.call_tool(
            "naive_llm_chat", {"prompt": "hi", "user_id": "usr_alice", "project_id": "prj_1"}
        )
    )

    request = sandbox.sandbox.ledger.requests(api_key)[-1]
    assert (request.user_id, request.project_id) == ("usr_alice", "prj_1")
    assert "user_id" not in last_body(sandbox, api_key)


async def test_default_tenant_applies_when_a_call_names_none(sandbox: RunningSandbox, api_key: str) -> None:
    settings = make_settings(sandbox, api_key, default_user_id="usr_bob", default_project_id="prj_9")
    async with Client(create_server(settings)) as client:
        structured(await client.call_tool("naive_llm_chat", {"prompt": "hi"}))
        structured(await client.call_tool("naive_llm_chat", {"prompt": "hi", "user_id": "usr_carol"}))

    first, second = sandbox.sandbox.ledger.requests(api_key)
    assert (first.user_id, first.project_id) == ("usr_bob", "prj_9")
    assert (second.user_id, second.project_id) == ("usr_carol", "prj_9")


async def test_an_unknown_tenant_is_a_not_found_error(client: Client) -> None:
    result = await client.call_tool("naive_llm_chat", {"prompt": "hi", "user_id": "unknown_user"})

    assert result.is_error
    assert texts(result)[0].startswith("not_found (HTTP 404): User unknown_user not found")
