"""Every tool on every backend, over real loopback HTTP to the sandbox in each API style: Naive's
proxy (`/v1/proxy/openrouter`) and OpenRouter's API (`/api/v1`), beside the typed routes the rest
of the suite uses. Costs in USD, caps in USD, the balance floor from `GET /key`, no tenants."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from mcp import Client

from naive_mcp.sandbox import RunningSandbox, SandboxConfig, serve_in_thread
from naive_mcp.server import create_server
from tests.conftest import DEFAULT_MODEL, make_settings
from tests.helpers import text_of, usage_of

pytestmark = pytest.mark.anyio

STYLES = {
    "proxy": ("/v1/proxy/openrouter", "nv_sk_test_"),
    "openrouter": ("/api/v1", "sk-or-v1-"),
}


@pytest.fixture(params=sorted(STYLES))
def style(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def style_key(style: str) -> str:
    return f"{STYLES[style][1]}{uuid.uuid4().hex}"


def paths(sandbox: RunningSandbox, key: str) -> list[str]:
    return [record.path for record in sandbox.sandbox.ledger.requests(key)]


async def connected(sandbox: RunningSandbox, style: str, key: str, **overrides: Any) -> AsyncIterator[Client]:
    settings = make_settings(sandbox, key, base_url=f"{sandbox.url}{STYLES[style][0]}", **overrides)
    async with Client(create_server(settings)) as client:
        yield client


@pytest.fixture
async def client(sandbox: RunningSandbox, style: str, style_key: str) -> AsyncIterator[Client]:
    async for client in connected(sandbox, style, style_key):
        yield client


async def test_chat_models_and_generation_go_to_the_styles_own_routes(
    client: Client, sandbox: RunningSandbox, style: str, style_key: str
) -> None:
    answer = await client.call_tool("naive_llm_chat", {"prompt": "hi"})
    assert not answer.is_error, text_of(answer)
    [asked] = [record for record in sandbox.sandbox.ledger.requests(style_key) if record.body]
    assert asked.body["stream"] is True  # streamed on this style too, and read whole from its SSE
    assert text_of(answer) == f"Sandbox reply from {DEFAULT_MODEL}: hi"
    structured = answer.structured_content or {}
    assert structured["usage"]["cost"] > 0  # USD, everywhere
    assert "credits_used" not in structured  # this backend reports none
    assert "credits unknown" in text_of(answer, -1)
    listing = await client.call_tool("naive_llm_models", {"search": "claude"})
    assert not listing.is_error and "anthropic/claude-sonnet-4.6" in text_of(listing)
    stats = await client.call_tool("naive_llm_generation", {"id": structured["id"]})
    assert not stats.is_error, text_of(stats)
    prefix = STYLES[style][0]
    assert paths(sandbox, style_key)[:2] == [f"{prefix}/chat/completions", f"{prefix}/models"]
    assert f"{prefix}/generation" in paths(sandbox, style_key)
    usage = await usage_of(client)
    assert usage["total"]["calls"] == 1
    assert usage["total"]["cost_usd"] == pytest.approx(structured["usage"]["cost"])
    assert usage["total"]["credits_unknown"] == 1  # the ledger invents no credits


@pytest.fixture(scope="module")
def dripping() -> Iterator[RunningSandbox]:
    """`sandbox/slow` answering in a few short steps: streamed in several chunks, soon over."""
    with serve_in_thread(SandboxConfig(slow_chunk_delay=0.01, slow_words=30)) as running:
        yield running


async def test_chat_streams_progress_with_the_text_as_it_arrives(
    dripping: RunningSandbox, style: str, style_key: str
) -> None:
    heard: list[str] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        heard.append(message or "")

    async for client in connected(dripping, style, style_key):
        answer = await client.call_tool(
            "naive_llm_chat", {"prompt": "go", "model": "sandbox/slow"}, progress_callback=on_progress
        )
    assert not answer.is_error, text_of(answer)
    assert text_of(answer).startswith("Sandbox reply from sandbox/slow")
    assert any(message.startswith("Sandbox reply from sandbox/slow") for message in heard), heard


async def test_a_call_naming_a_tenant_is_refused_by_name_and_nothing_is_sent(
    client: Client, sandbox: RunningSandbox, style_key: str
) -> None:
    for field in ("user_id", "project_id"):
        refused = await client.call_tool("naive_llm_chat", {"prompt": "hi", field: "usr_1"})
        assert refused.is_error
        assert text_of(refused).startswith(
            f"{field}: Naive users and projects exist on Naive's typed routes only"
        )
        assert "Nothing was sent upstream and no credits were spent." in text_of(refused)
    assert paths(sandbox, style_key) == []


async def test_a_usd_cap_refuses_before_anything_is_sent(
    sandbox: RunningSandbox, style: str, style_key: str
) -> None:
    async for client in connected(sandbox, style, style_key, max_call_usd=0.000001):
        refused = await client.call_tool("naive_llm_chat", {"prompt": "hi", "max_tokens": 1000})
    assert refused.is_error
    assert text_of(refused).startswith("spending_cap: this call could cost up to $")
    assert "more than NAIVE_MAX_CALL_USD ($1e-06 per call) allows" in text_of(refused)
    assert not [path for path in paths(sandbox, style_key) if path.endswith("/chat/completions")]


async def test_a_usd_total_cap_counts_what_calls_cost(
    sandbox: RunningSandbox, style: str, style_key: str
) -> None:
    async for client in connected(sandbox, style, style_key, max_total_usd=0.005):
        first = await client.call_tool("naive_llm_chat", {"prompt": "hi", "max_tokens": 20})
        assert not first.is_error, text_of(first)
        cost = (first.structured_content or {})["usage"]["cost"]
        while True:  # until what is spent leaves no room for one more
            again = await client.call_tool("naive_llm_chat", {"prompt": "hi", "max_tokens": 20})
            if again.is_error:
                break
        usage = await usage_of(client)
    assert "more than NAIVE_MAX_TOTAL_USD ($0.005; $" in text_of(again)
    assert usage["total"]["cost_usd"] <= 0.005
    assert usage["total"]["cost_usd"] >= cost


async def test_the_balance_floor_reads_get_key_before_the_first_call(
    sandbox: RunningSandbox, style: str, style_key: str
) -> None:
    async for client in connected(sandbox, style, style_key, min_usd_remaining=0.5):
        answer = await client.call_tool("naive_llm_chat", {"prompt": "hi", "max_tokens": 20})
        assert not answer.is_error, text_of(answer)
    prefix = STYLES[style][0]
    assert paths(sandbox, style_key)[0] == f"{prefix}/key"  # before the first call, not after
    # A floor above what the key has left: refused, with the balance GET /key gave.
    other = f"{STYLES[style][1]}{uuid.uuid4().hex}"
    async for client in connected(sandbox, style, other, min_usd_remaining=1_000_000):
        refused = await client.call_tool("naive_llm_chat", {"prompt": "hi", "max_tokens": 20})
    assert refused.is_error
    assert "NAIVE_MIN_USD_REMAINING ($1e+06; balance $" in text_of(refused)
    assert not [path for path in paths(sandbox, other) if path.endswith("/chat/completions")]


async def test_a_usd_cap_on_naives_typed_routes_is_converted_at_the_rate(
    sandbox: RunningSandbox, api_key: str
) -> None:
    settings = make_settings(sandbox, api_key, max_call_usd=0.000001)
    async with Client(create_server(settings)) as client:
        refused = await client.call_tool("naive_llm_chat", {"prompt": "hi", "max_tokens": 1000})
    assert refused.is_error
    # Counted in credits (the typed routes report them), the cap named in its own unit.
    assert "credits, more than NAIVE_MAX_CALL_USD ($1e-06 per call) allows" in text_of(refused)


async def test_the_model_list_asks_for_every_output_modality(
    client: Client, sandbox: RunningSandbox, style_key: str
) -> None:
    """OpenRouter lists text-output models only unless asked: image models would be missing from
    searches and unpriced under a cap."""
    listing = await client.call_tool("naive_llm_models", {"output_modality": "image"})
    assert not listing.is_error, text_of(listing)
    assert "google/gemini-2.5-flash-image" in text_of(listing)
    [asked] = [r for r in sandbox.sandbox.ledger.requests(style_key) if r.path.endswith("/models")]
    assert asked.query == "output_modalities=all"
