"""Advice that is right: each error tried as a new user would meet it, and the next step it names."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client
from mcp.types import CallToolResult, TextContent

from naive_mcp.errors import error_from_response
from naive_mcp.primitives.llm.chat import REASONING_SHOWN_CHARS, ChatResult
from naive_mcp.sandbox import RunningSandbox
from naive_mcp.server import create_server
from tests.conftest import make_settings, upstream_env
from tests.remote import connect, http_server
from tests.test_tenancy import INITIALIZE, MCP_HEADERS

pytestmark = pytest.mark.anyio


def texts(result: CallToolResult) -> list[str]:
    return [block.text for block in result.content if isinstance(block, TextContent)]


async def failure(client: Client, tool: str, arguments: dict[str, Any]) -> str:
    result = await client.call_tool(tool, arguments)
    assert result.is_error, texts(result)
    return "\n".join(texts(result))


async def test_a_base_url_pointing_at_the_wrong_place_says_to_check_it(
    sandbox: RunningSandbox, api_key: str
) -> None:
    # A common slip: the base URL with the API's /v1 on it, so every route is /v1/v1/...
    settings = make_settings(sandbox, api_key, base_url=f"{sandbox.url}/v1", generation_wait=0)
    async with Client(create_server(settings)) as client:
        for tool, arguments in [
            ("naive_llm_chat", {"prompt": "hi"}),
            ("naive_llm_models", {}),
            ("naive_llm_generation", {"id": "gen-1"}),
        ]:
            text = await failure(client, tool, arguments)
            assert text.startswith("wrong_base_url (HTTP 404): the upstream answered HTTP 404"), text
            assert "check NAIVE_BASE_URL" in text
            assert "Check the id" not in text


async def test_an_unknown_id_still_says_to_check_the_id(client: Client) -> None:
    text = await failure(client, "naive_llm_generation", {"id": "gen-does-not-exist"})
    assert text.startswith("not_found (HTTP 404)")
    assert "Check the id" in text


async def test_an_unknown_default_model_says_to_fix_that_setting(
    sandbox: RunningSandbox, api_key: str
) -> None:
    settings = make_settings(sandbox, api_key, default_model="anthropic/claude-sonnet-9")
    async with Client(create_server(settings)) as client:
        text = await failure(client, "naive_llm_chat", {"prompt": "hi"})
        assert text.startswith(
            "bad_default_model (HTTP 400): anthropic/claude-sonnet-9 is not a valid model ID"
        )
        assert "NAIVE_DEFAULT_MODEL" in text
        assert "Fix the call's arguments" not in text
        # A model the call names itself is the call's to fix.
        named = await failure(
            client, "naive_llm_chat", {"prompt": "hi", "model": "anthropic/claude-sonnet-9"}
        )
        assert named.startswith("invalid_input (HTTP 400)")
        assert "Fix the call's arguments" in named


async def test_no_key_and_no_model_reports_the_missing_key_first(sandbox: RunningSandbox) -> None:
    settings = make_settings(sandbox, None, default_model=None)
    async with Client(create_server(settings)) as client:
        text = await failure(client, "naive_llm_chat", {"prompt": "hi"})
    assert text.startswith("no_api_key: no Naive API key is configured"), text
    assert "NAIVE_DEFAULT_MODEL" not in text


async def test_an_error_after_retries_says_how_many_attempts_were_made(
    sandbox: RunningSandbox, api_key: str
) -> None:
    settings = make_settings(sandbox, api_key, max_retries=2, retry_max_wait=0)
    async with Client(create_server(settings)) as client:
        text = await failure(client, "naive_llm_chat", {"prompt": "hi", "model": "sandbox/fail-overloaded"})
    assert text.startswith(
        "overloaded (HTTP 529): Provider overloaded (after 3 attempts: the call and 2 retries"
    )
    assert "NAIVE_MAX_RETRIES is 2" in text
    paths = [r.path for r in sandbox.sandbox.ledger.requests(api_key)]
    assert paths.count("/v1/llm/chat/completions") == 3


async def test_an_error_without_retries_says_nothing_of_attempts(client: Client) -> None:
    text = await failure(client, "naive_llm_chat", {"prompt": "hi", "model": "sandbox/fail-overloaded"})
    assert "attempts" not in text


@pytest.mark.parametrize("name", ["verbosity", "web_search_options", "store"])
async def test_did_you_mean_only_suggests_a_close_name(client: Client, name: str) -> None:
    text = await failure(client, "naive_llm_chat", {"prompt": "hi", name: 1})
    assert f"- {name}: unknown argument; allowed: messages, prompt" in text
    assert "did you mean" not in text


@pytest.mark.parametrize(
    ("name", "meant"),
    [("temprature", "temperature"), ("max_token", "max_tokens"), ("frequency", "frequency_penalty")],
)
async def test_did_you_mean_still_catches_a_slip(client: Client, name: str, meant: str) -> None:
    text = await failure(client, "naive_llm_chat", {"prompt": "hi", name: 1})
    assert f"- {name}: unknown argument; did you mean '{meant}'?" in text


async def test_the_reasoning_reaches_the_agent_after_the_answer_and_is_counted(client: Client) -> None:
    result = await client.call_tool("naive_llm_chat", {"prompt": "why?", "reasoning": {"effort": "high"}})
    assert not result.is_error
    answer, reasoning, summary = texts(result)
    data = result.structured_content
    assert data is not None
    assert answer == data["text"]
    assert reasoning == f"The model's reasoning:\n{data['reasoning'].strip()}"
    tokens = data["usage"]["reasoning_tokens"]
    assert tokens > 0
    assert f"out (of which {tokens} reasoning)" in summary


def test_long_reasoning_is_cut_short_in_the_text() -> None:
    result = ChatResult(text="42", reasoning="x" * (REASONING_SHOWN_CHARS * 3))
    _, reasoning, _ = result.content()
    assert reasoning.startswith(
        f"The model's reasoning (its first {REASONING_SHOWN_CHARS} of {REASONING_SHOWN_CHARS * 3} characters"
    )
    assert len(reasoning) < REASONING_SHOWN_CHARS + 200


@pytest.mark.slow
async def test_an_http_client_whose_own_key_was_revoked_is_told_to_send_a_valid_key(
    sandbox: RunningSandbox, tmp_path: Path
) -> None:
    key = f"nv_sk_test_{uuid.uuid4().hex}"
    with http_server(tmp_path, {**upstream_env(sandbox, None), "NAIVE_CLIENT_KEYS": "true"}) as server:
        async with connect(server, key) as client:
            assert not (await client.call_tool("naive_llm_chat", {"prompt": "before"})).is_error
            sandbox.sandbox.ledger.revoke(key)
            text = await failure(client, "naive_llm_chat", {"prompt": "after"})
    assert text.startswith("client_key_refused (HTTP 401)"), text
    assert "send a valid Naive key" in text
    assert "NAIVE_API_KEY" not in text
    assert key not in text


@pytest.mark.slow
async def test_a_client_key_refused_says_why_in_its_401(sandbox: RunningSandbox, tmp_path: Path) -> None:
    shapeless, revoked = f"sk-{uuid.uuid4().hex}", f"nv_sk_test_revoked_{uuid.uuid4().hex}"
    env = {**upstream_env(sandbox, None), "NAIVE_CLIENT_KEYS": "true"}
    with http_server(tmp_path, env) as server, httpx2.Client(timeout=30) as http:
        answers = {
            token: http.post(
                server.url, content=INITIALIZE, headers={**MCP_HEADERS, "Authorization": f"Bearer {token}"}
            )
            for token in (shapeless, revoked)
        }
    for token, why in [
        (shapeless, "not a Naive key (nv_sk_live_…/nv_sk_test_…)"),
        (revoked, "Naive refused this key (revoked or invalid): send a valid Naive key"),
    ]:
        answer = answers[token]
        assert answer.status_code == 401
        assert answer.json() == {"error": "invalid_token", "error_description": why}
        assert answer.headers["www-authenticate"] == (
            f'Bearer error="invalid_token", error_description="{why.replace("…", "...")}"'
        )
        assert token not in answer.text


def test_only_a_404_that_is_not_naives_error_blames_the_base_url() -> None:
    bare = error_from_response(404, {"content-type": "text/plain"}, b"Not Found")
    naive = error_from_response(
        404, {}, json.dumps({"error": {"code": "not_found", "message": "m"}}).encode()
    )
    assert (bare.kind, naive.kind) == ("wrong_base_url", "not_found")
    assert "NAIVE_BASE_URL" in bare.describe()
