"""naive_llm_models: search, filters, sorting, paging, compact text, the cache, both list shapes."""

from __future__ import annotations

import threading
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.types import TextContent
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from naive_mcp.sandbox import RunningSandbox, SandboxConfig, serve_in_thread
from naive_mcp.sandbox.server import serve_app_in_thread
from naive_mcp.server import create_server
from naive_mcp.settings import Settings
from tests.conftest import make_settings
from tests.helpers import text_of

pytestmark = pytest.mark.anyio


async def listing(client: Client, **arguments: Any) -> tuple[str, dict[str, Any]]:
    result = await client.call_tool("naive_llm_models", arguments)
    assert not result.is_error, result.content
    block = result.content[0]
    assert isinstance(block, TextContent) and result.structured_content is not None
    return block.text, result.structured_content


def ids(data: dict[str, Any]) -> list[str]:
    return [model["id"] for model in data["models"]]


async def test_search_matches_every_word_in_id_or_name(client: Client) -> None:
    _, data = await listing(client, search="llama free")
    assert ids(data) == ["meta-llama/llama-3.3-70b-instruct:free"]

    _, data = await listing(client, search="Claude")
    assert ids(data) == ["anthropic/claude-haiku-4.5", "anthropic/claude-sonnet-4.6"]


async def test_filters_by_author_context_and_price_per_million_tokens(client: Client) -> None:
    _, by_author = await listing(client, author="google")
    assert ids(by_author) == [
        "google/gemini-2.5-flash",
        "google/gemini-2.5-flash-image",
        "google/gemini-2.5-pro",
    ]

    _, long_context = await listing(client, min_context=1_000_000)
    assert ids(long_context) == ["google/gemini-2.5-flash", "google/gemini-2.5-pro"]

    _, cheap = await listing(client, max_prompt_price=0.2, max_completion_price=0.5, search="/")
    assert ids(cheap) == [
        "meta-llama/llama-3.3-70b-instruct",
        "meta-llama/llama-3.3-70b-instruct:free",
        "mistralai/mistral-small-3.2",
        *[i for i in ids(cheap) if i.startswith("sandbox/")],
    ]
    sonnet = next(m for m in (await listing(client, search="sonnet"))[1]["models"])
    assert (sonnet["prompt_price"], sonnet["completion_price"], sonnet["context_length"]) == (
        3.0,
        15.0,
        200_000,
    )


async def test_sorts_by_price_and_by_context(client: Client) -> None:
    _, by_price = await listing(client, sort="price", author="openai")
    assert ids(by_price) == ["openai/gpt-5-mini", "openai/gpt-5.2"]

    _, by_context = await listing(client, sort="context", limit=2)
    assert ids(by_context) == ["google/gemini-2.5-flash", "google/gemini-2.5-pro"]


async def test_pages_with_offset_and_says_where_the_next_page_starts(client: Client) -> None:
    text, first = await listing(client, limit=4)
    _, second = await listing(client, limit=4, offset=4)

    assert first["next_offset"] == 4 and "More: offset=4" in text
    assert first["matched"] == first["total"] > 8
    assert not set(ids(first)) & set(ids(second))
    _, last = await listing(client, offset=first["total"] - 1)
    assert len(last["models"]) == 1 and "next_offset" not in last


async def test_the_text_listing_is_compact(client: Client) -> None:
    text, data = await listing(client, limit=100)

    lines = text.splitlines()
    assert len(lines) == 1 + len(data["models"])
    assert all(len(line.encode()) <= 120 for line in lines[1:])
    assert "anthropic/claude-sonnet-4.6 | 200K ctx | $3/$15" in lines
    assert "meta-llama/llama-3.3-70b-instruct:free | 66K ctx | $0/$0" in lines


async def test_no_match_says_how_to_widen_the_search(client: Client) -> None:
    text, data = await listing(client, search="no such model anywhere")
    assert data["matched"] == 0
    assert text.startswith("No model matches") and "Loosen the filters" in text


async def test_repeated_listings_come_from_the_cache(
    client: Client, sandbox: RunningSandbox, api_key: str
) -> None:
    await listing(client, search="claude")
    await listing(client, author="openai", sort="price")
    await listing(client, offset=3)

    assert [r.path for r in sandbox.sandbox.ledger.requests(api_key)] == ["/v1/llm/models"]


async def test_the_cache_is_per_tenant_and_expires(sandbox: RunningSandbox, api_key: str) -> None:
    async with Client(create_server(make_settings(sandbox, api_key))) as client:
        await listing(client)
        await listing(client, user_id="usr_alice")
        await listing(client, user_id="usr_alice")
    assert [r.user_id for r in sandbox.sandbox.ledger.requests(api_key)] == [None, "usr_alice"]

    async with Client(create_server(make_settings(sandbox, api_key, models_cache_ttl=0))) as client:
        await listing(client)
        await listing(client)
    assert len(sandbox.sandbox.ledger.requests(api_key)) == 4


async def test_reads_openrouters_model_list_shape_too(api_key: str) -> None:
    with serve_in_thread(SandboxConfig(models_shape="openrouter")) as openrouter_shaped:
        async with Client(create_server(make_settings(openrouter_shaped, api_key))) as client:
            text, data = await listing(client, search="sonnet")
        body = openrouter_shaped.sandbox.ledger.requests(api_key)
    assert body and data["models"][0]["id"] == "anthropic/claude-sonnet-4.6"
    assert data["models"][0]["prompt_price"] == 3.0
    assert "anthropic/claude-sonnet-4.6 | 200K ctx | $3/$15" in text


async def test_concurrent_listings_share_one_upstream_request_and_its_failure(api_key: str) -> None:
    # The upstream holds its answer until all four callers are waiting: whoever came later joined
    # the one request in flight (the order of events, not a duration, shows nobody fetched again).
    seen: list[str] = []
    release = threading.Event()

    async def slow_failure(request: Request) -> JSONResponse:
        seen.append(request.url.path)
        await anyio.to_thread.run_sync(release.wait, 30)
        return JSONResponse({"error": {"code": "provider_error", "message": "down"}}, status_code=502)

    app = Starlette(routes=[Route("/v1/llm/models", slow_failure)])
    with serve_app_in_thread(app) as url:
        async with Client(
            create_server(Settings(base_url=url, api_key=SecretStr(api_key), max_retries=0))
        ) as client:
            results: list[str] = []

            async def listing_fails() -> None:
                result = await client.call_tool("naive_llm_models", {})
                assert result.is_error
                results.append(text_of(result))

            async with anyio.create_task_group() as group:
                for _ in range(4):
                    group.start_soon(listing_fails)
                with anyio.fail_after(30):
                    while not seen:  # noqa: ASYNC110 - the upstream runs in its own thread
                        await anyio.sleep(0.01)
                    await anyio.wait_all_tasks_blocked()  # all four are waiting on an answer
                release.set()

    assert len(seen) == 1, "one upstream request for four callers"
    assert len(results) == 4 and len(set(results)) == 1, "all four got the one failure"
    assert results[0].startswith("provider_error"), results[0]
