"""naive_llm_models: search, filters, sorting, paging, compact text, the cache, both list shapes,
the sandbox's test models left out unless asked for."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
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
from naive_mcp.sandbox.catalogue import MODELS as CATALOGUE
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
    assert first["matched"] == first["total"] - first["hidden"] > 8
    assert not set(ids(first)) & set(ids(second))
    _, last = await listing(client, offset=first["matched"] - 1)
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


# --- modalities, parameters, free, and the sandbox's test models ---------------------------------

SANDBOX_TEST_MODELS = sorted(model.id for model in CATALOGUE if model.id.startswith("sandbox/"))


@pytest.fixture
async def rich(sandbox: RunningSandbox, api_key: str) -> AsyncIterator[Client]:
    """A client of Naive's proxy, whose model list is OpenRouter's: modalities and parameters too."""
    settings = make_settings(sandbox, api_key, base_url=f"{sandbox.url}/v1/proxy/openrouter")
    async with Client(create_server(settings)) as connected:
        yield connected


async def listing_error(client: Client, **arguments: Any) -> str:
    result = await client.call_tool("naive_llm_models", arguments)
    assert result.is_error, result.content
    return text_of(result)


async def test_filters_by_input_and_output_modality(rich: Client) -> None:
    _, audio = await listing(rich, input_modality="audio")
    assert ids(audio) == ["google/gemini-2.5-flash", "google/gemini-2.5-pro"]

    _, files = await listing(rich, input_modality="file")
    assert ids(files) == [
        "anthropic/claude-sonnet-4.6",
        "google/gemini-2.5-pro",
        "openai/gpt-5-mini",
        "openai/gpt-5.2",
    ]
    _, images_out = await listing(rich, output_modality="image")
    assert ids(images_out) == ["google/gemini-2.5-flash-image"]
    _, text_out = await listing(rich, output_modality="text")
    _, everything = await listing(rich)
    assert text_out["matched"] == everything["matched"] > 10  # the image model gives text too
    text, audio_out = await listing(rich, output_modality="audio")
    assert audio_out["matched"] == 0 and text.startswith("No model matches")


async def test_filters_by_a_supported_parameter(rich: Client) -> None:
    _, reasoning = await listing(rich, supported_parameter="reasoning")
    assert ids(reasoning) == [
        "anthropic/claude-sonnet-4.6",
        "deepseek/deepseek-r1",
        "google/gemini-2.5-pro",
        "openai/gpt-5.2",
    ]
    _, tools = await listing(rich, supported_parameter="tools")
    assert "deepseek/deepseek-r1" not in ids(tools)
    assert "meta-llama/llama-3.3-70b-instruct:free" not in ids(tools)
    assert "anthropic/claude-sonnet-4.6" in ids(tools) and len(ids(tools)) == 8

    _, structured = await listing(rich, supported_parameter="structured_outputs", author="meta-llama")
    assert structured["matched"] == 0


async def test_an_unknown_parameter_is_refused_with_the_ones_the_models_list(rich: Client) -> None:
    text = await listing_error(rich, supported_parameter="tool")
    assert text.startswith("invalid_arguments: no model lists the parameter 'tool' (`supported_parameter`)")
    assert "include_reasoning, max_tokens" in text and "tools" in text


async def test_free_means_costing_nothing_on_either_list_shape(client: Client, rich: Client) -> None:
    for each in (client, rich):
        _, free = await listing(each, free=True)
        assert ids(free) == ["meta-llama/llama-3.3-70b-instruct:free"]
        _, priced = await listing(each, free=False, author="meta-llama")
        assert ids(priced) == ["meta-llama/llama-3.3-70b-instruct"]
    # Listed at 0 (and so free by the list, whatever they bill): the sandbox's cap-testing models.
    _, listed_free = await listing(client, free=True, author="sandbox")
    assert ids(listed_free) == ["sandbox/listed-free", "sandbox/listed-free:free"]


async def test_filters_combine_with_search_author_context_price_sort_and_paging(rich: Client) -> None:
    _, first = await listing(
        rich, input_modality="image", supported_parameter="reasoning", sort="price", limit=2
    )
    assert ids(first) == ["google/gemini-2.5-pro", "openai/gpt-5.2"]  # $11.25 each, then by id
    assert (first["matched"], first["next_offset"]) == (3, 2)
    _, rest = await listing(rich, input_modality="image", supported_parameter="reasoning", offset=2)
    assert ids(rest) == ["openai/gpt-5.2"]

    _, combined = await listing(
        rich,
        search="gemini",
        input_modality="audio",
        supported_parameter="tools",
        min_context=1_000_000,
        max_prompt_price=1,
        free=False,
    )
    assert ids(combined) == ["google/gemini-2.5-flash"]
    _, by_author = await listing(rich, author="anthropic", input_modality="file", sort="context")
    assert ids(by_author) == ["anthropic/claude-sonnet-4.6"]


async def test_the_listing_shows_modalities_compactly_when_not_text_only(rich: Client) -> None:
    text, data = await listing(rich, limit=100)

    head, *lines = text.splitlines()
    assert head.endswith("id | context | USD per 1M tokens in/out | modalities in -> out, if not text only")
    assert "google/gemini-2.5-pro | 1049K ctx | $1.25/$10 | in text+image+audio+file -> out text" in lines
    assert "anthropic/claude-haiku-4.5 | 200K ctx | $1/$5 | in text+image -> out text" in lines
    assert "google/gemini-2.5-flash-image | 33K ctx | $0.3/$2.5 | in text+image -> out image+text" in lines
    assert "meta-llama/llama-3.3-70b-instruct | 131K ctx | $0.13/$0.4" in lines
    sonnet = next(model for model in data["models"] if model["id"] == "anthropic/claude-sonnet-4.6")
    assert (sonnet["input_modalities"], sonnet["output_modalities"]) == (["text", "image", "file"], ["text"])

    text, _ = await listing(rich, author="sandbox", limit=100)
    assert all(len(line.encode()) <= 120 for line in text.splitlines()[1:])


async def test_a_line_that_would_pass_its_budget_shortens_its_modalities(api_key: str) -> None:
    # An upstream of OpenRouter's shape with an image-output model whose id is long, a model that
    # gives no architecture, and a text-only one: only the first matches output_modality=image.
    long_id = "example-labs/an-image-model-whose-id-is-as-long-as-real-ones-get-2026-01"
    models = [
        {
            "id": long_id,
            "context_length": 32_768,
            "pricing": {"prompt": "0.0000003", "completion": "0.0000025"},
            "architecture": {"input_modalities": ["text", "image"], "output_modalities": ["image", "text"]},
            "supported_parameters": ["max_tokens"],
        },
        {"id": "example-labs/plain", "context_length": 8_192, "pricing": {"prompt": "0", "completion": "0"}},
        {
            "id": "example-labs/text",
            "pricing": {"prompt": "0.000001", "completion": "0.000002"},
            "architecture": {"input_modalities": ["text"], "output_modalities": ["text"]},
        },
    ]

    async def model_list(request: Request) -> JSONResponse:
        return JSONResponse({"data": models})

    app = Starlette(routes=[Route("/v1/llm/models", model_list)])
    with serve_app_in_thread(app) as url:
        async with Client(create_server(Settings(base_url=url, api_key=SecretStr(api_key)))) as client:
            text, data = await listing(client, output_modality="image")
            every, _ = await listing(client)

    assert ids(data) == [long_id]
    line = text.splitlines()[1]
    assert line == f"{long_id} | 33K ctx | $0.3/$2.5 | in t+i -> out i+t"
    assert len(line.encode()) <= 120
    assert data["models"][0]["output_modalities"] == ["image", "text"]
    # Text to text, and modalities not given: neither line names any.
    assert {"example-labs/text | ctx ? | $1/$2", "example-labs/plain | 8K ctx | $0/$0"} < set(
        every.splitlines()
    )


async def test_a_filter_the_listing_cannot_answer_says_so(
    client: Client, sandbox: RunningSandbox, api_key: str
) -> None:
    # Naive's typed list (the sandbox's /v1/llm/models by default) has no modalities nor parameters.
    for field, value, what in (
        ("input_modality", "image", "input modalities"),
        ("output_modality", "image", "output modalities"),
        ("supported_parameter", "tools", "supported parameters"),
    ):
        text = await listing_error(client, **{field: value})
        assert text.startswith(
            f"unsupported_filter: this backend's model list does not give the models' {what}"
        ), text
        assert f"so `{field}` cannot filter it" in text
        assert "NAIVE_BASE_URL" in text and "/v1/proxy/openrouter" in text
    ledger = sandbox.sandbox.ledger
    assert [record.path for record in ledger.requests(api_key)] == ["/v1/llm/models"]  # free, cached


async def test_the_sandbox_test_models_stay_out_unless_asked_for(client: Client) -> None:
    text, default = await listing(client, limit=100)
    assert not [model_id for model_id in ids(default) if model_id.startswith("sandbox/")]
    assert default["hidden"] == len(SANDBOX_TEST_MODELS)
    assert default["total"] == default["matched"] + default["hidden"]
    assert f"; {len(SANDBOX_TEST_MODELS)} sandbox test models left out: author=sandbox lists them)" in text

    _, by_author = await listing(client, author="sandbox", limit=100)
    assert ids(by_author) == SANDBOX_TEST_MODELS and "hidden" not in by_author
    _, by_search = await listing(client, search="sandbox rate-limited", limit=100)
    assert "sandbox/fail-rate-limited" in ids(by_search)
    assert all(model_id.startswith("sandbox/") for model_id in ids(by_search))

    text, unnamed = await listing(client, search="fail-rate-limited")
    assert unnamed["matched"] == 0 and unnamed["hidden"] >= 1
    assert text.startswith("No model matches") and "author=sandbox lists them" in text


async def test_hidden_test_models_are_still_priced_for_the_spend_guard(
    sandbox: RunningSandbox, api_key: str
) -> None:
    # The listing leaves them out; the guard, which prices a capped call from the whole list,
    # does not: a call to a test model under a credit cap goes through and is billed.
    settings = make_settings(sandbox, api_key, max_total_credits=5.0)
    async with Client(create_server(settings)) as client:
        _, listed = await listing(client)
        assert "sandbox/request-fee" not in ids(listed)
        result = await client.call_tool("naive_llm_chat", {"prompt": "hi", "model": "sandbox/request-fee"})
    assert not result.is_error, text_of(result)
    assert (
        result.structured_content is not None and result.structured_content["model"] == "sandbox/request-fee"
    )
