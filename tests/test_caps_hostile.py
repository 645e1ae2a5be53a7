"""Caps that the model list and the request shape cannot fool (issue 11, holes 4 and 5).

Each test is an attack on loopback against the sandbox, and measures what the upstream billed
against the cap: a model listed at price 0 that bills, a 24 KB tool schema, per-image and
per-request fees, a call without max_tokens under a shared cap, an upstream that ignores
max_tokens.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from typing import Any, cast

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.types import CallToolResult, TextResourceContents

from naive_mcp.caller import Caller
from naive_mcp.errors import IncompleteAnswer
from naive_mcp.estimate import (
    Prices,
    SpendingRefused,
    chain_prices,
    check_allowed,
    input_usd,
    output_tokens_at_least,
)
from naive_mcp.guard import Spend, SpendGuard, new_call
from naive_mcp.sandbox import RunningSandbox, SandboxConfig, serve_in_thread
from naive_mcp.sandbox.ledger import MARKUP, USD_PER_CREDIT, RequestRecord
from naive_mcp.server import create_server
from naive_mcp.streaming import ChatStream
from naive_mcp.wire import ModelEntry
from tests.conftest import make_settings
from tests.helpers import text_of, usage_of
from tests.test_spending import completion, guard_for

pytestmark = pytest.mark.anyio

# The sandbox bills usage.cost times 1.05, at $0.50 a credit.
SANDBOX_CREDITS_PER_USD = MARKUP / USD_PER_CREDIT
START = 100.0  # credits of a fresh sandbox account


def billed(sandbox: RunningSandbox, api_key: str) -> float:
    """Credits the upstream has billed the key so far."""
    return round(START - sandbox.sandbox.ledger.balance(api_key), 8)


def chat_requests(sandbox: RunningSandbox, api_key: str) -> list[RequestRecord]:
    return [r for r in sandbox.sandbox.ledger.requests(api_key) if r.path.endswith("/chat/completions")]


def chats(sandbox: RunningSandbox, api_key: str) -> int:
    return len(chat_requests(sandbox, api_key))


async def in_parallel(client: Client, count: int, arguments: dict[str, Any]) -> list[CallToolResult]:
    outcomes: list[CallToolResult] = []

    async def call() -> None:
        outcomes.append(await client.call_tool("naive_llm_chat", arguments))

    async with anyio.create_task_group() as group:
        for _ in range(count):
            group.start_soon(call)
    return outcomes


def refusals(outcomes: list[CallToolResult]) -> list[str]:
    texts = [text_of(o) for o in outcomes if o.is_error]
    for text in texts:
        assert text.startswith("spending_cap: "), text
        assert text.endswith("Nothing was sent upstream and no credits were spent."), text
    return texts


@pytest.fixture
def report(caplog: pytest.LogCaptureFixture) -> Iterator[dict[str, float]]:
    """Figures a test measured, printed at its end (pytest -s shows them)."""
    figures: dict[str, float] = {}
    yield figures
    sys.stderr.write(" ".join(f"{name}={value:.6g}" for name, value in figures.items()) + "\n")


# --- hole 4: the model list -------------------------------------------------------------------


async def test_a_model_listed_free_but_billed_is_refused_under_a_cap(
    sandbox: RunningSandbox, api_key: str, report: dict[str, float]
) -> None:
    cap = 0.001
    settings = make_settings(
        sandbox,
        api_key,
        max_total_credits=cap,
        max_call_credits=cap / 2,
        credits_per_usd=SANDBOX_CREDITS_PER_USD,
    )
    arguments = {"prompt": "go " * 50, "model": "sandbox/listed-free", "max_tokens": 100}
    async with Client(create_server(settings)) as client:
        outcomes = await in_parallel(client, 50, arguments)
    texts = refusals(outcomes)
    report |= {"admitted": len(outcomes) - len(texts), "billed": billed(sandbox, api_key), "cap": cap}
    assert len(texts) == 50 and chats(sandbox, api_key) == 0 and billed(sandbox, api_key) == 0
    assert "'sandbox/list-free' is listed at price 0".replace("list-", "listed-") in texts[0]
    assert "NAIVE_FREE_MODELS" in texts[0]


async def test_a_free_model_the_operator_allows_is_refused_once_it_bills(
    sandbox: RunningSandbox, api_key: str, report: dict[str, float]
) -> None:
    cap = 0.001
    settings = make_settings(
        sandbox,
        api_key,
        max_total_credits=cap,
        credits_per_usd=SANDBOX_CREDITS_PER_USD,
        free_models=["*:free"],
    )
    arguments = {"prompt": "go " * 50, "model": "sandbox/listed-free:free", "max_tokens": 100}
    truly_free = {"prompt": "hi", "model": "meta-llama/llama-3.3-70b-instruct:free", "max_tokens": 100}
    async with Client(create_server(settings)) as client:
        first = await client.call_tool("naive_llm_chat", arguments)
        later = [await client.call_tool("naive_llm_chat", arguments) for _ in range(5)]
        free = await client.call_tool("naive_llm_chat", truly_free)
    assert not first.is_error and not free.is_error
    texts = refusals(later)
    report |= {"billed": billed(sandbox, api_key), "admitted_after_the_bill": 5 - len(texts)}
    assert len(texts) == 5
    assert "'sandbox/listed-free:free' is listed free but billed" in texts[0]
    assert chats(sandbox, api_key) == 2


async def test_a_free_model_runs_one_call_at_a_time_until_it_has_answered_at_zero(
    sandbox: RunningSandbox, api_key: str, report: dict[str, float]
) -> None:
    """Reserved at 0, 40 parallel calls to a model listed free that bills each billed past every
    cap before the first had settled (13x the total cap, found in review). Until a call to it
    has answered at 0 credits, one runs at a time."""
    cap = 0.01
    settings = make_settings(
        sandbox,
        api_key,
        max_total_credits=cap,
        max_call_credits=cap / 10,
        credits_per_usd=SANDBOX_CREDITS_PER_USD,
        free_models=["*:free"],
    )
    billing = {"prompt": "go " * 50, "model": "sandbox/listed-free:free", "max_tokens": 100}
    truly_free = {"prompt": "hi", "model": "meta-llama/llama-3.3-70b-instruct:free", "max_tokens": 100}
    async with Client(create_server(settings)) as client:
        outcomes = await in_parallel(client, 40, billing)
        one_bill = billed(sandbox, api_key)
        free = await in_parallel(client, 10, truly_free)
    texts = refusals(outcomes)
    report |= {"admitted": 40 - len(texts), "billed": one_bill, "cap": cap}
    assert len(texts) == 39 and chats(sandbox, api_key) == 11
    assert one_bill <= cap, "one call's bill, not forty"
    assert all("'sandbox/listed-free:free' is listed free but billed" in text for text in texts), texts[0]
    assert not any(outcome.is_error for outcome in free), "a model seen free runs in parallel again"


async def test_a_cap_that_is_spent_says_so_to_a_free_call(sandbox: RunningSandbox, api_key: str) -> None:
    async with guard_for(sandbox, api_key, max_total_credits=1.0, free_models=["*:free"]) as guard:
        caller = Caller(api_key=api_key)
        dear = await guard.admit(
            caller,
            {"model": "openai/gpt-5.2", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10},
        )
        dear.answered(completion(used=1.5, cost=0.06))  # the upstream billed past the cap
        await guard.settle(dear, caller)
        body = {
            "model": "meta-llama/llama-3.3-70b-instruct:free",
            "messages": [{"role": "user", "content": "hi"}],
        }
        with pytest.raises(SpendingRefused) as refused:
            await guard.admit(caller, body)
    assert refused.value.message.startswith(
        "nothing is left under NAIVE_MAX_TOTAL_CREDITS (1; 0 left, 0 held by calls in flight), so "
        "no call is admitted, not even one the model list prices at 0."
    ), refused.value.message
    assert "up to 0 credits" not in refused.value.message


# --- hole 4: the request shape ----------------------------------------------------------------


def big_tool_schema(size: int = 24 * 1024) -> list[dict[str, Any]]:
    properties: dict[str, Any] = {}
    index = 0
    while len(json.dumps(properties)) < size:
        properties[f"field_{index}"] = {"type": "string", "description": f"the {index}th field " + "x" * 80}
        index += 1
    return [{"type": "function", "function": {"name": "fill_form", "parameters": {"properties": properties}}}]


async def test_a_big_tool_schema_is_counted_as_input(
    sandbox: RunningSandbox, api_key: str, report: dict[str, float]
) -> None:
    cap = 0.05
    settings = make_settings(sandbox, api_key, max_total_credits=cap, credits_per_usd=SANDBOX_CREDITS_PER_USD)
    tools = big_tool_schema()
    arguments = {
        "prompt": "hi",
        "model": "openai/gpt-5.2",
        "max_tokens": 10,
        "tools": tools,
        "tool_choice": "none",
    }
    async with Client(create_server(settings)) as client:
        outcomes = await in_parallel(client, 20, arguments)
    texts = refusals(outcomes)
    spent = billed(sandbox, api_key)
    report |= {
        "schema_bytes": len(json.dumps(tools)),
        "admitted": 20 - len(texts),
        "billed": spent,
        "cap": cap,
    }
    assert 1 <= 20 - len(texts) <= 3 and spent <= cap
    assert chats(sandbox, api_key) == 20 - len(texts)


async def test_image_parts_are_counted_at_the_listed_image_price(
    sandbox: RunningSandbox, api_key: str, report: dict[str, float]
) -> None:
    cap = 0.1  # one call's 8 images cost $0.04, 0.084 credits
    settings = make_settings(sandbox, api_key, max_total_credits=cap, credits_per_usd=SANDBOX_CREDITS_PER_USD)
    images = [{"type": "image_url", "image_url": {"url": f"https://example.com/{n}.png"}} for n in range(8)]
    arguments = {
        "messages": [{"role": "user", "content": [{"type": "text", "text": "describe"}, *images]}],
        "model": "sandbox/image-fee",
        "max_tokens": 50,
    }
    async with Client(create_server(settings)) as client:
        outcomes = await in_parallel(client, 5, arguments)
    texts = refusals(outcomes)
    spent = billed(sandbox, api_key)
    report |= {"admitted": 5 - len(texts), "billed": spent, "cap": cap}
    assert len(texts) == 4 and spent <= cap


async def test_a_per_request_fee_is_counted(
    sandbox: RunningSandbox, api_key: str, report: dict[str, float]
) -> None:
    cap = 0.05  # one call's fee is $0.01, 0.021 credits
    settings = make_settings(sandbox, api_key, max_total_credits=cap, credits_per_usd=SANDBOX_CREDITS_PER_USD)
    arguments = {"prompt": "hi", "model": "sandbox/request-fee", "max_tokens": 50}
    async with Client(create_server(settings)) as client:
        outcomes = await in_parallel(client, 5, arguments)
    texts = refusals(outcomes)
    spent = billed(sandbox, api_key)
    report |= {"admitted": 5 - len(texts), "billed": spent, "cap": cap}
    assert len(texts) == 3 and spent <= cap


# --- hole 5: a call without max_tokens ----------------------------------------------------------


async def test_a_call_without_max_tokens_holds_a_bounded_share_and_other_tenants_still_get_in(
    api_key: str, report: dict[str, float]
) -> None:
    cap = 0.5
    # At the assumed rate (25 credits per USD) one call without max_tokens used to hold all of it.
    thinking_sandbox = serve_in_thread(SandboxConfig(think_seconds=60, keepalive_interval=0.2))
    with thinking_sandbox as thinking:
        settings = make_settings(thinking, api_key, max_total_credits=cap, cap_wait=0)
        async with Client(create_server(settings)) as client, anyio.create_task_group() as group:
            alice = {"prompt": "think", "model": "sandbox/think", "user_id": "usr_alice"}
            group.start_soon(client.call_tool, "naive_llm_chat", alice)
            with anyio.fail_after(30):
                while not chats(thinking, api_key):  # noqa: ASYNC110 - the sandbox's own thread
                    await anyio.sleep(0.01)
            (held,) = chat_requests(thinking, api_key)
            bob = await client.call_tool(
                "naive_llm_chat",
                {"prompt": "hi", "model": "openai/gpt-5-mini", "max_tokens": 100, "user_id": "usr_bob"},
            )
            carol = await client.call_tool(
                "naive_llm_chat",
                {"prompt": "hi", "model": "anthropic/claude-sonnet-4.6", "user_id": "usr_carol"},
            )
            still_thinking = not held.stream_ended.is_set()
            group.cancel_scope.cancel()
        spent = billed(thinking, api_key)
    max_tokens = held.body["max_tokens"]
    reserved = max_tokens * 0.4e-6 * 25  # sandbox/think: $0.4 per million output tokens
    report |= {"alice_max_tokens": max_tokens, "alice_output_held": reserved, "cap": cap, "billed": spent}
    assert still_thinking, "bob and carol were served while alice's call was in flight"
    assert not bob.is_error and not carol.is_error, (text_of(bob), text_of(carol))
    assert max_tokens == 4096 and reserved <= cap / 4
    assert spent <= cap
    assert carol.structured_content is not None
    (note,) = carol.structured_content["notes"]
    # Sonnet's 4096 tokens at $15/M, at the rate bob's answer showed, would hold more than a
    # quarter of what is left: carol gets what fits in that quarter.
    assert note.startswith("max_tokens set to") and "to fit a quarter of what is left under" in note, note
    report["carol_max_tokens"] = carol_tokens = chat_requests(thinking, api_key)[-1].body["max_tokens"]
    assert carol_tokens * 15e-6 * SANDBOX_CREDITS_PER_USD <= cap / 4


async def test_a_max_tokens_past_the_context_holds_no_more_than_the_context(
    api_key: str, report: dict[str, float]
) -> None:
    """Found in review: max_tokens=1,188,294 on an 8,192-token model held 0.998 of a 1-credit cap
    for an answer of 0.00066, and every other tenant waited, then was refused."""
    cap = 1.0
    thinking_sandbox = serve_in_thread(SandboxConfig(think_seconds=60, keepalive_interval=0.2))
    with thinking_sandbox as thinking:
        settings = make_settings(thinking, api_key, max_total_credits=cap, cap_wait=0)
        async with Client(create_server(settings)) as client, anyio.create_task_group() as group:
            huge = {"prompt": "think", "model": "sandbox/think", "max_tokens": 1_188_294, "user_id": "usr_a"}
            group.start_soon(client.call_tool, "naive_llm_chat", huge)
            with anyio.fail_after(30):
                while not chats(thinking, api_key):  # noqa: ASYNC110 - the sandbox's own thread
                    await anyio.sleep(0.01)
            (held,) = chat_requests(thinking, api_key)
            bob = await client.call_tool(
                "naive_llm_chat",
                {
                    "prompt": "hi",
                    "model": "anthropic/claude-sonnet-4.6",
                    "max_tokens": 1000,
                    "user_id": "usr_b",
                },
            )
            usage = await client.read_resource("naive://usage")
            still_thinking = not held.stream_ended.is_set()
            group.cancel_scope.cancel()
    contents = usage.contents[0]
    assert isinstance(contents, TextResourceContents)
    assert still_thinking and not bob.is_error, text_of(bob)
    assert held.body["max_tokens"] == 1_188_294, "the caller's max_tokens is sent as given"
    context_worth = 8_192 * 0.4e-6 * 25  # sandbox/think: 8,192 tokens of context at $0.4/M, 25 credits/USD
    report |= {"context_worth": context_worth, "cap": cap}
    assert context_worth < cap / 10


# --- hole 4: an upstream that ignores max_tokens ------------------------------------------------


async def stream_unguarded(sandbox: RunningSandbox, api_key: str, body: dict[str, Any]) -> None:
    """The call straight to the upstream, read to its end."""
    headers = {"Authorization": f"Bearer {api_key}"}
    async with (
        httpx2.AsyncClient(base_url=sandbox.url, headers=headers, timeout=30) as http,
        http.stream("POST", "/v1/llm/chat/completions", json={**body, "stream": True}) as response,
    ):
        async for _ in response.aiter_bytes():
            pass


@pytest.mark.slow
async def test_an_upstream_that_answers_past_max_tokens_is_stopped_at_the_reservation(
    sandbox: RunningSandbox, api_key: str, report: dict[str, float], caplog: pytest.LogCaptureFixture
) -> None:
    max_tokens = 50
    arguments = {"prompt": "go", "model": "sandbox/runaway", "max_tokens": max_tokens}
    await stream_unguarded(
        sandbox,
        api_key,
        {
            "model": "sandbox/runaway",
            "messages": [{"role": "user", "content": "go"}],
            "max_tokens": max_tokens,
        },
    )
    (unguarded,) = sandbox.sandbox.ledger.generations(api_key)

    settings = make_settings(sandbox, api_key, max_total_credits=1.0, credits_per_usd=SANDBOX_CREDITS_PER_USD)
    with caplog.at_level(logging.WARNING, logger="naive_mcp.guard"):
        async with Client(create_server(settings)) as client:
            result = await client.call_tool("naive_llm_chat", arguments)
            record = chat_requests(sandbox, api_key)[-1]
            assert await anyio.to_thread.run_sync(record.stream_ended.wait, 30)
            # Settled from the generation's stats, once the upstream has them: cut off.
            with anyio.fail_after(30):
                while "cut_off" not in (usage := await usage_of(client))["by_outcome"]:  # noqa: ASYNC110
                    await anyio.sleep(0.05)
    _, guarded = sandbox.sandbox.ledger.generations(api_key)
    # The sandbox bills a cut-off answer for the share of its chunks it sent.
    guarded_tokens = guarded.total_cost / unguarded.total_cost * unguarded.tokens_completion
    report |= {
        "unguarded_output_tokens": unguarded.tokens_completion,
        "unguarded_over_max_tokens": unguarded.tokens_completion / max_tokens,
        "guarded_output_tokens_billed": guarded_tokens,
        "guarded_over_max_tokens": guarded_tokens / max_tokens,
    }
    assert unguarded.tokens_completion > 10 * max_tokens, "the upstream does ignore max_tokens"
    assert result.is_error
    text = text_of(result)
    assert text.startswith("spending_cap: the upstream kept answering past the 50 output tokens reserved"), (
        text
    )
    assert guarded.cancelled and guarded_tokens < 2 * max_tokens
    assert usage["by_outcome"]["cut_off"]["calls"] == 1
    assert usage["total"]["credits"] == pytest.approx(guarded.total_cost * SANDBOX_CREDITS_PER_USD, rel=1e-3)
    assert any("answered past the 50 output tokens reserved" in r.message for r in caplog.records)


# --- the estimate on its own (pure functions of the body and the model list) --------------------


def entry(model_id: str, **pricing: object) -> ModelEntry:
    shape: dict[str, Any] = {"id": model_id, "context_length": 10_000, "pricing": pricing}
    if "max_completion_tokens" in pricing:
        shape["top_provider"] = {"max_completion_tokens": pricing.pop("max_completion_tokens")}
    return ModelEntry.model_validate(shape)


LISTING = [
    entry("a/cheap", prompt="0.000001", completion="0.000002"),
    entry("a/dear", prompt="0.000003", completion="0.00001", internal_reasoning="0.00002", request="0.01"),
    entry("a/short", prompt="0.000001", completion="0.000002", max_completion_tokens=1000),
    entry("a/variable", prompt="-1", completion="-1"),
    entry("a/nonsense", prompt="0.000001", completion="0.000002", image="lots"),
    entry("a/zero", prompt="0", completion="0"),
    entry("a/zero-but-fee", prompt="0", completion="0", request="0.001"),
]


def body_for(*models: str, **more: Any) -> dict[str, Any]:
    return {
        "model": models[0],
        "models": list(models),
        "messages": [{"role": "user", "content": "hi"}],
        **more,
    }


def test_the_chain_is_priced_fee_by_fee_at_its_dearest() -> None:
    prices = chain_prices(body_for("a/cheap", "a/dear", "a/short"), LISTING, free=())
    assert (prices.prompt, prices.completion, prices.request) == (3e-6, 2e-5, 0.01)
    assert prices.max_output == 1000 and prices.context_length == 10_000
    # A routing variant is priced as its base model.
    assert chain_prices(body_for("a/dear:nitro"), LISTING, free=()).request == 0.01
    # Fees on top of a price of 0 make a model priced, not free.
    assert chain_prices(body_for("a/zero-but-fee"), LISTING, free=()).request == 0.001


@pytest.mark.parametrize("variant", ["nitro", "floor", "exacto", "online"])
def test_an_unlisted_routing_variant_is_priced_as_its_base_model(variant: str) -> None:
    assert chain_prices(body_for(f"a/dear:{variant}"), LISTING, free=()) == chain_prices(
        body_for("a/dear"), LISTING, free=()
    )


def test_web_search_is_priced_per_result_for_the_plugin_and_an_online_model() -> None:
    prices = Prices(prompt=1e-6, web_search=0.02, context_length=1_000_000)
    plain = input_usd(body_for("a/cheap"), prices)
    online = input_usd(body_for("a/cheap:online"), prices)
    assert online == pytest.approx(plain + 0.02 + 5 * 0.004, abs=1e-5)  # five results by default
    web = body_for("a/cheap", plugins=[{"id": "web", "max_results": 20}])
    assert input_usd(web, prices) == pytest.approx(plain + 0.02 + 20 * 0.004, abs=1e-4)


@pytest.mark.parametrize(
    ("model", "allowed"),
    [
        ("a/dear:nitro", True),
        ("a/dear:free", True),
        ("a/dear:thinking", True),
        ("a/dear:online", True),
        ("a/dearer:nitro", False),  # not a variant of a/dear
        ("a/dear:custom", False),  # not a variant OpenRouter has
        ("b/dear", False),
    ],
)
def test_an_allowed_models_variants_are_allowed_too(model: str, allowed: bool) -> None:
    if allowed:
        check_allowed(body_for(model), ["a/dear"])
    else:
        with pytest.raises(SpendingRefused, match="is not allowed on this server"):
            check_allowed(body_for(model), ["a/dear"])


@pytest.mark.parametrize(
    ("model", "reason"),
    [
        ("a/variable", "cannot be estimated"),
        ("a/nonsense", "cannot be estimated"),
        ("a/missing", "cannot be estimated"),
        ("a/zero", "is listed at price 0"),
    ],
)
def test_what_cannot_be_priced_is_refused_unless_the_operator_calls_it_free(model: str, reason: str) -> None:
    with pytest.raises(SpendingRefused, match=reason) as refusal:
        chain_prices(body_for("a/cheap", model), LISTING, free=())
    assert "NAIVE_FREE_MODELS" in refusal.value.message
    free = chain_prices(body_for("a/cheap", model), LISTING, free=[model])
    assert free.free_models == (model,) and free.prompt == 1e-6


def test_every_part_sent_as_input_is_counted() -> None:
    prices = Prices(prompt=1e-6, image=0.005, request=0.01, web_search=0.02, context_length=1_000_000)
    plain = input_usd(body_for("a/cheap"), prices)
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"x": "y" * 10_000}}}]
    assert input_usd(body_for("a/cheap", tools=tools), prices) >= plain + 5_000 * 1e-6
    schema = {"type": "json_schema", "json_schema": {"name": "s", "schema": {"d": "z" * 10_000}}}
    assert input_usd(body_for("a/cheap", response_format=schema), prices) >= plain + 5_000 * 1e-6
    image = {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}
    with_images = body_for("a/cheap")
    with_images["messages"][0]["content"] = [{"type": "text", "text": "hi"}, image, image]
    assert input_usd(with_images, prices) >= plain + 2 * (0.005 + 4_096 * 1e-6)
    assert input_usd(body_for("a/cheap", web_search_options={}), prices) >= plain + 0.02
    assert plain >= 0.01, "the per-request fee"


def test_a_file_by_url_is_counted_as_the_whole_context_and_nothing_past_it() -> None:
    by_url = body_for("a/cheap")
    by_url["messages"][0]["content"] = [
        {"type": "file", "file": {"filename": "a.pdf", "file_data": "https://x/a.pdf"}}
    ]
    assert input_usd(by_url, Prices(prompt=1e-6, context_length=10_000)) == pytest.approx(10_000 * 1e-6)
    with pytest.raises(SpendingRefused, match="Send it as a data: URL"):
        input_usd(by_url, Prices(prompt=1e-6))
    video = body_for("a/cheap")
    video["messages"][0]["content"] = [
        {"type": "video_url", "video_url": {"url": "data:video/mp4;base64,AA"}}
    ]
    assert input_usd(video, Prices(prompt=1e-6, context_length=10_000)) == pytest.approx(10_000 * 1e-6)
    with pytest.raises(SpendingRefused, match="a video, whose tokens follow its length"):
        input_usd(video, Prices(prompt=1e-6))
    huge = body_for("a/cheap")
    huge["messages"][0]["content"] = "x" * 100_000
    assert input_usd(huge, Prices(prompt=1e-6, context_length=10_000)) == pytest.approx(10_000 * 1e-6)


def test_the_output_seen_is_a_lower_bound_of_its_tokens() -> None:
    assert output_tokens_at_least(pieces=10, size=16) == 10  # small pieces: a token each
    assert output_tokens_at_least(pieces=1, size=800) == 100  # one large chunk: a token every 8 bytes


def chunk(**delta: Any) -> str:
    return json.dumps({"choices": [{"index": 0, "delta": delta, "finish_reason": None}]})


def test_a_stream_is_stopped_once_its_output_passes_the_tokens_reserved() -> None:
    spend = Spend(
        cast(SpendGuard, None), new_call(Caller(api_key="nv_sk_test_x"), "m"), 1.0, output_tokens=10
    )
    # A token a piece: ten pieces fit, the eleventh is past the reservation.
    stream = ChatStream()
    for piece in ["ab"] * 5 + ["cd"] * 3:
        stream.feed(chunk(content=piece))
        spend.saw(stream)
    stream.feed(chunk(reasoning="r"))
    stream.feed(chunk(tool_calls=[{"index": 0, "function": {"name": "f", "arguments": "{}"}}]))
    spend.saw(stream)
    assert stream.output_pieces == 10 and stream.output_bytes >= 19  # text, reasoning, arguments
    stream.feed(chunk(content="e"))
    with pytest.raises(IncompleteAnswer) as stopped:
        spend.saw(stream)
    assert stopped.value.kind == "spending_cap" and stopped.value.partial == "ab" * 5 + "cd" * 3 + "e"
    # One large chunk: a token every 8 bytes.
    large = ChatStream()
    large.feed(chunk(content="x" * 88))
    with pytest.raises(IncompleteAnswer, match="stopped after at least 11"):
        spend.saw(large)
