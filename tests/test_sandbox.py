"""The sandbox speaks the Naive API on the wire: checked with plain HTTP, no naive-mcp code in between."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx2
import pytest

from naive_mcp.sandbox import RunningSandbox

pytestmark = pytest.mark.anyio


@pytest.fixture
async def http(sandbox: RunningSandbox, api_key: str) -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient(
        base_url=sandbox.url, headers={"Authorization": f"Bearer {api_key}"}
    ) as client:
        yield client


async def test_health_needs_no_key(sandbox: RunningSandbox) -> None:
    async with httpx2.AsyncClient() as client:
        response = await client.get(f"{sandbox.url}/health")
    assert response.json() == {"status": "ok"}


async def test_a_missing_key_is_unauthorized(sandbox: RunningSandbox) -> None:
    async with httpx2.AsyncClient() as client:
        response = await client.get(f"{sandbox.url}/v1/llm/models")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"


async def test_streaming_chat_is_sse_with_keepalive_deltas_usage_and_done(http: httpx2.AsyncClient) -> None:
    body = {
        "model": "anthropic/claude-sonnet-4.6",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
    }
    async with http.stream("POST", "/v1/llm/chat/completions", json=body) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        raw = (await response.aread()).decode()
    assert raw.startswith(": OPENROUTER PROCESSING\n\n")
    events = [json.loads(line[6:]) for line in raw.splitlines() if line.startswith("data: {")]
    assert raw.rstrip().endswith("data: [DONE]")
    text = "".join(event["choices"][0]["delta"].get("content", "") for event in events if event["choices"])
    assert text == "Sandbox reply from anthropic/claude-sonnet-4.6: hi"
    finishes = [event["choices"][0]["finish_reason"] for event in events if event["choices"]]
    assert finishes[-1] == "stop" and set(finishes[:-1]) == {None}
    usage = events[-1]
    assert usage["choices"] == []
    assert usage["usage"]["cost"] > 0 and usage["credits_remaining"] < 100


async def test_streamed_tool_call_arguments_arrive_split_across_chunks(http: httpx2.AsyncClient) -> None:
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    body = {"model": "openai/gpt-5.2", "prompt": "go", "tools": [tool], "stream": True}
    async with http.stream("POST", "/v1/llm/chat/completions", json=body) as response:
        events = [json.loads(line[6:]) async for line in response.aiter_lines() if line.startswith("data: {")]
    pieces = [
        call["function"].get("arguments", "")
        for event in events
        if event["choices"]
        for call in event["choices"][0]["delta"].get("tool_calls", [])
    ]
    assert len(pieces) == 2 and json.loads("".join(pieces)) == {"query": "go"}


async def test_a_midstream_error_is_an_error_chunk_after_status_200(http: httpx2.AsyncClient) -> None:
    body = {"model": "sandbox/fail-midstream-error", "prompt": "hi", "stream": True}
    async with http.stream("POST", "/v1/llm/chat/completions", json=body) as response:
        assert response.status_code == 200
        events = [json.loads(line[6:]) async for line in response.aiter_lines() if line.startswith("data: {")]
    assert events[-1]["error"]["message"] == "Provider disconnected mid-answer"
    assert events[-1]["choices"][0]["finish_reason"] == "error"


async def test_tenancy_by_header_and_by_path_mount(
    http: httpx2.AsyncClient, sandbox: RunningSandbox, api_key: str
) -> None:
    body: dict[str, Any] = {"model": "openai/gpt-5-mini", "prompt": "hi"}
    await http.post("/v1/llm/chat/completions", json=body, headers={"X-Naive-User-Id": "usr_a"})
    await http.post("/v1/users/usr_b/llm/chat/completions", json=body)
    await http.post("/v1/users/me/llm/chat/completions", json=body)
    assert [r.user_id for r in sandbox.sandbox.ledger.requests(api_key)] == ["usr_a", "usr_b", None]

    mismatch = await http.get("/v1/llm/models", headers={"X-Naive-User-Id": "foreign_user"})
    assert mismatch.status_code == 403 and mismatch.json()["error"]["code"] == "key_subject_mismatch"


async def test_the_proxy_serves_openrouters_model_shape(http: httpx2.AsyncClient) -> None:
    typed = (await http.get("/v1/llm/models", params={"search": "sonnet"})).json()
    proxied = (await http.get("/v1/proxy/openrouter/models")).json()

    assert typed == {
        "count": 1,
        "models": [
            {
                "id": "anthropic/claude-sonnet-4.6",
                "name": "Anthropic: Claude Sonnet 4.6",
                "context_length": 200000,
                "pricing": {"prompt": "0.000003", "completion": "0.000015"},
            }
        ],
    }
    sonnet = next(model for model in proxied["data"] if model["id"] == "anthropic/claude-sonnet-4.6")
    assert "reasoning" in sonnet["supported_parameters"]
    assert sonnet["architecture"]["input_modalities"] == ["text", "image", "file"]
