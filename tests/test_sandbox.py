"""The sandbox speaks its three APIs on the wire (Naive's typed routes, Naive's proxy, OpenRouter):
checked with plain HTTP, no naive-mcp code in between."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx2
import pytest

from naive_mcp.sandbox import RunningSandbox, SandboxConfig, serve_in_thread
from naive_mcp.sandbox.ledger import CREDITS_PER_USD

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


# --- the three API styles ---------------------------------------------------------------------

TYPED, PROXY, OPENROUTER = "/v1/llm", "/v1/proxy/openrouter", "/api/v1"
STYLES = [TYPED, PROXY, OPENROUTER]
OPENROUTER_SHAPED = [PROXY, OPENROUTER]
CREDITS_FIELDS = {"credits_used", "credits_remaining"}
MINI = "openai/gpt-5-mini"
# Generous: the sandbox makes a generation's stats visible 0.2 s after the call.
GENERATION_TIMEOUT = 30


@pytest.fixture
async def wire(sandbox: RunningSandbox) -> AsyncIterator[httpx2.AsyncClient]:
    """Plain HTTP to the sandbox; each request names its key (`bearer`)."""
    async with httpx2.AsyncClient(base_url=sandbox.url) as client:
        yield client


@pytest.fixture
def key_of(api_key: str, openrouter_key: str) -> dict[str, str]:
    """A key each style's base takes: Naive's on Naive's routes, OpenRouter's on /api/v1."""
    return {TYPED: api_key, PROXY: api_key, OPENROUTER: openrouter_key}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def sse_events(raw: str) -> list[dict[str, Any]]:
    return [json.loads(line[6:]) for line in raw.splitlines() if line.startswith("data: {")]


async def streamed(wire: httpx2.AsyncClient, url: str, key: str, body: dict[str, Any]) -> str:
    async with wire.stream("POST", url, json={**body, "stream": True}, headers=bearer(key)) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        return (await response.aread()).decode()


async def generation_of(wire: httpx2.AsyncClient, base: str, key: str, generation_id: str) -> dict[str, Any]:
    """The generation's stats, once the sandbox has them (it 404s for a moment after a call)."""
    with anyio.fail_after(GENERATION_TIMEOUT):
        while True:
            response = await wire.get(f"{base}/generation", params={"id": generation_id}, headers=bearer(key))
            if response.status_code == 200:
                data: dict[str, Any] = response.json()["data"]
                return data
            assert response.status_code == 404
            await anyio.sleep(0.05)


@pytest.mark.parametrize("base", STYLES)
async def test_chat_in_one_piece_carries_credits_only_on_the_typed_routes(
    wire: httpx2.AsyncClient, key_of: dict[str, str], base: str
) -> None:
    body = {"model": MINI, "messages": [{"role": "user", "content": "hi"}]}
    response = await wire.post(f"{base}/chat/completions", json=body, headers=bearer(key_of[base]))
    data = response.json()
    assert response.status_code == 200 and data["object"] == "chat.completion"
    assert data["choices"][0]["message"]["content"] == f"Sandbox reply from {MINI}: hi"
    assert data["usage"]["cost"] > 0
    if base == TYPED:
        assert data["credits_used"] > 0 and data["credits_remaining"] == pytest.approx(
            100 - data["credits_used"]
        )
    else:
        assert not CREDITS_FIELDS & data.keys()


@pytest.mark.parametrize("base", STYLES)
async def test_streamed_chat_carries_credits_only_on_the_typed_routes(
    wire: httpx2.AsyncClient, key_of: dict[str, str], base: str
) -> None:
    body = {"model": MINI, "messages": [{"role": "user", "content": "hi"}]}
    raw = await streamed(wire, f"{base}/chat/completions", key_of[base], body)
    assert raw.startswith(": OPENROUTER PROCESSING\n\n") and raw.rstrip().endswith("data: [DONE]")
    events = sse_events(raw)
    text = "".join(event["choices"][0]["delta"].get("content", "") for event in events if event["choices"])
    assert text == f"Sandbox reply from {MINI}: hi"
    usage = events[-1]
    assert usage["choices"] == [] and usage["usage"]["cost"] > 0
    with_credits = [event for event in events if CREDITS_FIELDS & event.keys()]
    assert with_credits == ([usage] if base == TYPED else [])


@pytest.mark.parametrize("base", OPENROUTER_SHAPED)
async def test_a_text_completion_answers_its_prompt_in_one_piece_and_is_a_generation(
    wire: httpx2.AsyncClient, key_of: dict[str, str], base: str
) -> None:
    key = key_of[base]
    response = await wire.post(
        f"{base}/completions", json={"model": MINI, "prompt": "Once upon"}, headers=bearer(key)
    )
    data = response.json()
    assert response.status_code == 200
    assert set(data) == {"id", "object", "created", "model", "provider", "choices", "usage"}
    assert (data["object"], data["model"], data["provider"]) == ("text_completion", MINI, "OpenAI")
    assert data["choices"] == [
        {"text": f"Sandbox reply from {MINI}: Once upon", "index": 0, "finish_reason": "stop"}
    ]
    assert data["usage"]["prompt_tokens"] == 3 and data["usage"]["cost"] > 0
    stats = await generation_of(wire, base, key, data["id"])
    assert (stats["model"], stats["total_cost"], stats["streamed"]) == (MINI, data["usage"]["cost"], False)


@pytest.mark.parametrize("base", OPENROUTER_SHAPED)
async def test_a_streamed_text_completion_is_text_chunks_then_usage_then_done(
    wire: httpx2.AsyncClient, key_of: dict[str, str], base: str
) -> None:
    raw = await streamed(wire, f"{base}/completions", key_of[base], {"model": MINI, "prompt": "Once upon"})
    assert raw.startswith(": OPENROUTER PROCESSING\n\n") and raw.rstrip().endswith("data: [DONE]")
    events = sse_events(raw)
    *pieces, usage = events
    assert {event["object"] for event in events} == {"text_completion"}
    assert all("delta" not in choice for event in pieces for choice in event["choices"])
    assert len([event for event in pieces if event["choices"][0]["text"]]) > 1, "the text comes in pieces"
    assert "".join(event["choices"][0]["text"] for event in pieces) == f"Sandbox reply from {MINI}: Once upon"
    assert [event["choices"][0]["finish_reason"] for event in pieces][-1] == "stop"
    assert usage["choices"] == [] and usage["usage"]["cost"] > 0
    assert not [event for event in events if CREDITS_FIELDS & event.keys()]
    stats = await generation_of(wire, base, key_of[base], usage["id"])
    assert stats["streamed"] is True and stats["total_cost"] == usage["usage"]["cost"]


async def test_a_text_completion_falls_back_along_models_as_chat_does(
    wire: httpx2.AsyncClient, openrouter_key: str
) -> None:
    body = {"model": "sandbox/fail-unavailable", "models": ["sandbox/fail-overloaded", MINI], "prompt": "hi"}
    response = await wire.post(f"{OPENROUTER}/completions", json=body, headers=bearer(openrouter_key))
    assert response.status_code == 200 and response.json()["model"] == MINI
    assert response.json()["choices"][0]["text"] == f"Sandbox reply from {MINI}: hi"


async def test_a_fault_model_fails_a_text_completion_in_openrouters_error_shape(
    wire: httpx2.AsyncClient, sandbox: RunningSandbox, openrouter_key: str
) -> None:
    body = {"model": "sandbox/fail-rate-limited", "prompt": "hi"}
    response = await wire.post(f"{OPENROUTER}/completions", json=body, headers=bearer(openrouter_key))
    assert response.status_code == 429 and response.headers["retry-after"] == "7"
    assert response.json() == {"error": {"code": 429, "message": "Too many requests"}}
    assert sandbox.sandbox.ledger.generations(openrouter_key) == []


async def test_a_midstream_error_ends_a_streamed_text_completion_after_some_text(
    wire: httpx2.AsyncClient, openrouter_key: str
) -> None:
    body = {"model": "sandbox/fail-midstream-error", "prompt": "hi there, how are you today"}
    events = sse_events(await streamed(wire, f"{OPENROUTER}/completions", openrouter_key, body))
    *pieces, failed = events
    assert pieces and all(event["choices"][0]["text"] for event in pieces)
    assert failed["error"] == {"code": 502, "message": "Provider disconnected mid-answer"}
    assert failed["choices"] == [{"text": "", "index": 0, "finish_reason": "error"}]


@pytest.mark.parametrize(
    "body",
    [
        {"model": MINI, "prompt": ["a", "list"]},
        {"model": MINI, "prompt": 7},
        {"model": MINI, "messages": [{"role": "user", "content": "chat's field"}]},
    ],
)
async def test_a_text_completion_takes_only_a_prompt_string(
    wire: httpx2.AsyncClient, sandbox: RunningSandbox, api_key: str, body: dict[str, Any]
) -> None:
    response = await wire.post(f"{PROXY}/completions", json=body, headers=bearer(api_key))
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == 400 and "prompt" in error["message"]
    assert (
        sandbox.sandbox.ledger.generations(api_key) == [] and sandbox.sandbox.ledger.balance(api_key) == 100
    )


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/llm/completions"),
        ("POST", "/v1/users/usr_a/llm/completions"),
        ("GET", "/v1/llm/key"),
        ("GET", "/v1/llm/credits"),
    ],
)
async def test_the_typed_routes_have_no_text_completions_key_or_credits(
    wire: httpx2.AsyncClient, sandbox: RunningSandbox, api_key: str, method: str, path: str
) -> None:
    body = {"model": MINI, "prompt": "hi"} if method == "POST" else None
    response = await wire.request(method, path, json=body, headers=bearer(api_key))
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["code"] == "not_found" and "/v1/proxy/openrouter" in error["message"]
    assert sandbox.sandbox.ledger.generations(api_key) == []


@pytest.mark.parametrize("base", OPENROUTER_SHAPED)
async def test_key_and_credits_go_down_by_exactly_each_calls_cost(
    wire: httpx2.AsyncClient, sandbox: RunningSandbox, key_of: dict[str, str], base: str
) -> None:
    key = key_of[base]

    async def key_and_credits() -> tuple[dict[str, Any], dict[str, Any]]:
        key_data = (await wire.get(f"{base}/key", headers=bearer(key))).json()["data"]
        credits_data = (await wire.get(f"{base}/credits", headers=bearer(key))).json()["data"]
        return key_data, credits_data

    before, credits_before = await key_and_credits()
    assert set(before) == {"label", "limit", "limit_remaining", "limit_reset", "usage", "is_free_tier"}
    assert key not in before["label"] and before["label"].startswith(key[:12])
    assert (before["limit_reset"], before["is_free_tier"], before["usage"]) == (None, False, 0)
    assert before["limit"] == before["limit_remaining"] == pytest.approx(100 / CREDITS_PER_USD)
    assert credits_before == {"total_credits": before["limit"], "total_usage": 0}

    chat = {"model": MINI, "messages": [{"role": "user", "content": "hi"}]}
    one = (await wire.post(f"{base}/chat/completions", json=chat, headers=bearer(key))).json()
    two = sse_events(await streamed(wire, f"{base}/completions", key, {"model": MINI, "prompt": "more"}))[-1]
    costs = [one["usage"]["cost"], two["usage"]["cost"]]

    after, credits_after = await key_and_credits()
    assert before["limit_remaining"] - after["limit_remaining"] == pytest.approx(sum(costs), abs=1e-12)
    assert after["usage"] == pytest.approx(sum(costs), abs=1e-12)
    assert after["limit"] == pytest.approx(before["limit"])
    assert credits_after == {"total_credits": after["limit"], "total_usage": after["usage"]}
    # The same account the typed routes show in credits.
    balance = sandbox.sandbox.ledger.balance(key)
    assert balance == pytest.approx(after["limit_remaining"] * CREDITS_PER_USD, abs=1e-8)


async def test_an_exhausted_balance_shows_on_key_and_refuses_a_text_completion(
    wire: httpx2.AsyncClient, sandbox: RunningSandbox, openrouter_key: str
) -> None:
    sandbox.sandbox.ledger.set_balance(openrouter_key, 0)
    key_data = (await wire.get(f"{OPENROUTER}/key", headers=bearer(openrouter_key))).json()["data"]
    assert key_data["limit_remaining"] == 0
    body = {"model": MINI, "prompt": "hi"}
    response = await wire.post(f"{OPENROUTER}/completions", json=body, headers=bearer(openrouter_key))
    assert response.status_code == 402
    assert response.json() == {"error": {"code": 402, "message": "Not enough credits"}}


@pytest.mark.parametrize("base", STYLES)
async def test_errors_take_the_shape_of_the_routes_style(
    wire: httpx2.AsyncClient, key_of: dict[str, str], base: str
) -> None:
    key = key_of[base]
    unknown = {"model": "nobody/nothing", "prompt": "hi"}
    blocked = {"model": "sandbox/fail-payment-required", "prompt": "hi"}
    unknown_error = (await wire.post(f"{base}/chat/completions", json=unknown, headers=bearer(key))).json()
    blocked_error = (await wire.post(f"{base}/chat/completions", json=blocked, headers=bearer(key))).json()
    message = "Trial credit cannot be used for LLM routing"
    if base == TYPED:
        assert unknown_error["error"]["code"] == "invalid_input"
        assert blocked_error == {
            "error": {
                "code": "billing_blocked",
                "message": message,
                "block_reason": "llm_routing_requires_payment",
            }
        }
    else:
        assert unknown_error == {"error": {"code": 400, "message": "nobody/nothing is not a valid model ID"}}
        assert blocked_error == {
            "error": {
                "code": 402,
                "message": message,
                "metadata": {"block_reason": "llm_routing_requires_payment"},
            }
        }


@pytest.mark.parametrize("base", OPENROUTER_SHAPED)
@pytest.mark.parametrize("header", ["X-Naive-User-Id", "X-Naive-Project-Id"])
async def test_tenancy_is_refused_off_the_typed_routes(
    wire: httpx2.AsyncClient, sandbox: RunningSandbox, key_of: dict[str, str], base: str, header: str
) -> None:
    key = key_of[base]
    body = {"model": MINI, "prompt": "hi"}
    for path in ("/chat/completions", "/completions"):
        response = await wire.post(f"{base}{path}", json=body, headers={**bearer(key), header: "usr_a"})
        assert response.status_code == 400
        error = response.json()["error"]
        assert error["code"] == 400 and "not per-tenant" in error["message"]
    assert sandbox.sandbox.ledger.generations(key) == []


async def test_openrouter_takes_only_openrouter_keys_and_naive_only_naives(
    wire: httpx2.AsyncClient, sandbox: RunningSandbox, api_key: str, openrouter_key: str
) -> None:
    naive_on_openrouter = await wire.get(f"{OPENROUTER}/models", headers=bearer(api_key))
    assert naive_on_openrouter.status_code == 401
    assert naive_on_openrouter.json() == {"error": {"code": 401, "message": f"Invalid API key: {api_key}"}}
    for base in (TYPED, PROXY):
        openrouter_on_naive = await wire.get(f"{base}/models", headers=bearer(openrouter_key))
        assert openrouter_on_naive.status_code == 401
        assert openrouter_on_naive.json()["error"]["code"] == ("unauthorized" if base == TYPED else 401)

    missing = await wire.get(f"{OPENROUTER}/key")
    assert missing.json() == {"error": {"code": 401, "message": "No auth credentials found"}}
    revoked_by_name = await wire.get(f"{OPENROUTER}/key", headers=bearer(f"{openrouter_key}-revoked"))
    assert revoked_by_name.status_code == 401 and openrouter_key in revoked_by_name.json()["error"]["message"]
    assert (await wire.get(f"{OPENROUTER}/key", headers=bearer(openrouter_key))).status_code == 200
    sandbox.sandbox.ledger.revoke(openrouter_key)
    assert (await wire.get(f"{OPENROUTER}/key", headers=bearer(openrouter_key))).status_code == 401


async def test_a_careless_openrouter_labels_a_key_with_all_of_it(openrouter_key: str) -> None:
    with serve_in_thread(SandboxConfig(echo_key=True)) as echoing:
        async with httpx2.AsyncClient(base_url=echoing.url) as client:
            data = (await client.get(f"{OPENROUTER}/key", headers=bearer(openrouter_key))).json()["data"]
    assert data["label"] == openrouter_key


@pytest.mark.parametrize("base", OPENROUTER_SHAPED)
async def test_the_proxy_and_openrouter_list_models_in_openrouters_shape(
    wire: httpx2.AsyncClient, key_of: dict[str, str], base: str
) -> None:
    listed = (await wire.get(f"{base}/models", headers=bearer(key_of[base]))).json()
    assert set(listed) == {"data"}
    sonnet = next(model for model in listed["data"] if model["id"] == "anthropic/claude-sonnet-4.6")
    assert {"architecture", "supported_parameters", "top_provider"} <= sonnet.keys()
