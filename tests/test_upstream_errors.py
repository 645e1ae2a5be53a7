"""Every upstream failure becomes a tool error that says what happened and what to do next;
the server stays up and the next call works."""

from __future__ import annotations

import pytest
from mcp import Client
from mcp.types import CallToolResult, TextContent
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from naive_mcp.sandbox import RunningSandbox
from naive_mcp.sandbox.server import serve_app_in_thread
from naive_mcp.server import create_server
from naive_mcp.settings import Settings
from tests.conftest import make_settings
from tests.remote import free_port

pytestmark = pytest.mark.anyio


def error_text(result: CallToolResult) -> str:
    assert result.is_error, result.content
    assert result.structured_content is None
    block = result.content[0]
    assert isinstance(block, TextContent)
    return block.text


async def still_serves(client: Client) -> None:
    result = await client.call_tool("naive_llm_chat", {"prompt": "still there?"})
    assert not result.is_error, result.content


# fault model → (headline the error starts with, words of its next step)
FAULT_EXPECTATIONS = {
    "invalid-input": ("invalid_input (HTTP 400): Provide messages or prompt", "Fix the call's arguments"),
    "unauthorized": ("unauthorized (HTTP 401): Invalid API key", "set NAIVE_API_KEY"),
    "insufficient-credits": ("insufficient_credits (HTTP 402): Not enough credits", "top up credits"),
    "payment-required": ("llm_routing_requires_payment (HTTP 402)", "buy a credit pack or subscribe"),
    "forbidden": ("forbidden (HTTP 403)", "enable it in the Account Kit"),
    "key-subject-mismatch": ("key_subject_mismatch (HTTP 403)", "sealed to another user"),
    "not-found": ("not_found (HTTP 404): User not found", "Check the id"),
    "rate-limited": ("rate_limited (HTTP 429): Too many requests", "Retry after 7 s."),
    "provider-error": ("provider_error (HTTP 502)", "use another model or a fallback chain"),
    "not-configured": ("not_configured (HTTP 503)", "must set OPENROUTER_API_KEY"),
    "request-timeout": ("request_timeout (HTTP 408): Request timed out upstream", "retry"),
    "unavailable": ("unavailable (HTTP 503): No provider available", "Retry after 2 s."),
    "timeout-524": ("request_timeout (HTTP 524)", "retry"),
    "overloaded": ("overloaded (HTTP 529): Provider overloaded", "retry shortly"),
    "html": (
        "provider_error (HTTP 502): the upstream answered HTTP 502 with a body that is not",
        "text/html",
    ),
    "not-json": (
        "bad_response: POST /v1/llm/chat/completions answered HTTP 200 with a body that is not JSON",
        "",
    ),
    "midstream-error": (
        "provider_error: the answer broke off: Provider disconnected mid-answer. The answer is incomplete",
        "another model",
    ),
    "drop": (
        "connection_error: the connection broke mid-answer: RemoteProtocolError",
        "The answer is incomplete",
    ),
}


@pytest.mark.parametrize("fault", sorted(FAULT_EXPECTATIONS))
async def test_each_upstream_failure_is_explained_and_the_server_stays_up(client: Client, fault: str) -> None:
    result = await client.call_tool("naive_llm_chat", {"prompt": "hi", "model": f"sandbox/fail-{fault}"})

    headline, next_step = FAULT_EXPECTATIONS[fault]
    text = error_text(result)
    assert text.startswith(headline)
    assert next_step in text
    await still_serves(client)


async def test_an_exhausted_balance_is_insufficient_credits(
    client: Client, sandbox: RunningSandbox, api_key: str
) -> None:
    sandbox.sandbox.ledger.set_balance(api_key, 0)

    text = error_text(await client.call_tool("naive_llm_chat", {"prompt": "hi"}))

    assert text.startswith("insufficient_credits (HTTP 402)")
    assert "top up" in text


async def test_a_refused_connection_is_a_connection_error(api_key: str, sandbox: RunningSandbox) -> None:
    closed_port = free_port()  # nothing listens there
    settings = make_settings(sandbox, api_key, base_url=f"http://127.0.0.1:{closed_port}")
    async with Client(create_server(settings)) as client:
        text = error_text(await client.call_tool("naive_llm_models", {}))

    assert text.startswith(f"connection_error: could not reach http://127.0.0.1:{closed_port}: ConnectError")
    assert "nothing was sent, so nothing was billed" in text


async def test_an_upstream_that_never_answers_times_out_and_the_server_goes_on(
    sandbox: RunningSandbox, api_key: str
) -> None:
    settings = make_settings(sandbox, api_key, read_timeout=0.3)
    async with Client(create_server(settings)) as client:
        text = error_text(
            await client.call_tool("naive_llm_chat", {"prompt": "hi", "model": "sandbox/fail-hang"})
        )
        assert text.startswith("timeout: no answer from")
        assert "NAIVE_READ_TIMEOUT" in text
        await still_serves(client)


async def test_a_models_list_in_an_unknown_shape_is_a_bad_response(api_key: str) -> None:
    async def odd_shape(request: Request) -> JSONResponse:
        return JSONResponse({"items": []})

    app = Starlette(routes=[Route("/v1/llm/models", odd_shape)])
    with serve_app_in_thread(app) as url:
        settings = Settings(base_url=url, api_key=SecretStr(api_key), max_retries=0)
        async with Client(create_server(settings)) as client:
            text = error_text(await client.call_tool("naive_llm_models", {}))

    assert text.startswith("bad_response: the upstream's model list is not in the documented shape (models: ")
    assert "check NAIVE_BASE_URL" in text
