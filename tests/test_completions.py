"""`llm.complete`: text completions (`POST /completions`) through the generic pair, on the
backends that have them, with chat's validation, streaming, progress, cancel, caps and ledger;
refused by name on Naive's typed routes, which have none."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.types import CallToolResult

from naive_mcp.sandbox import RunningSandbox, SandboxConfig, serve_in_thread
from naive_mcp.server import create_server
from tests.conftest import make_settings
from tests.helpers import text_of, usage_of
from tests.mcp_wire import ended

pytestmark = pytest.mark.anyio

WAIT = 30


def complete(client: Client, **arguments: Any) -> Any:
    return client.call_tool(
        "naive_run_primitive", {"primitive": "llm", "method": "complete", "arguments": arguments}
    )


def completions(sandbox: RunningSandbox, key: str) -> list[Any]:
    return [r for r in sandbox.sandbox.ledger.requests(key) if r.path.endswith("/completions")]


@pytest.fixture
async def client(sandbox: RunningSandbox, openrouter_key: str) -> AsyncIterator[Client]:
    settings = make_settings(sandbox, openrouter_key, base_url=f"{sandbox.url}/api/v1")
    async with Client(create_server(settings)) as connected:
        yield connected


async def test_a_text_completion_continues_the_prompt_and_costs_what_the_ledger_says(
    client: Client, sandbox: RunningSandbox, openrouter_key: str
) -> None:
    result: CallToolResult = await complete(client, prompt="Once upon a time", max_tokens=50, temperature=0.5)
    assert not result.is_error, text_of(result)
    assert text_of(result) == "Sandbox reply from anthropic/claude-sonnet-4.6: Once upon a time"
    structured = result.structured_content or {}
    assert structured["model"] == "anthropic/claude-sonnet-4.6" and structured["finish_reason"] == "stop"
    assert structured["usage"]["cost"] > 0
    [sent] = completions(sandbox, openrouter_key)
    assert sent.path == "/api/v1/completions"
    assert sent.body["prompt"] == "Once upon a time" and "messages" not in sent.body
    assert (sent.body["stream"], sent.body["max_tokens"], sent.body["temperature"]) == (True, 50, 0.5)
    usage = await usage_of(client)
    assert usage["total"]["calls"] == 1
    assert usage["total"]["cost_usd"] == pytest.approx(structured["usage"]["cost"])
    stats = await client.call_tool("naive_llm_generation", {"id": structured["id"]})
    assert not stats.is_error, text_of(stats)


async def test_a_text_completion_falls_back_along_models(
    client: Client, sandbox: RunningSandbox, openrouter_key: str
) -> None:
    result = await complete(client, prompt="hi", model="sandbox/fail-overloaded", models=["openai/gpt-5.2"])
    assert not result.is_error, text_of(result)
    assert (result.structured_content or {})["model"] == "openai/gpt-5.2"


async def test_a_text_completion_broken_midstream_keeps_what_arrived(client: Client) -> None:
    result = await complete(client, prompt="tell me more", model="sandbox/fail-midstream-error")
    assert result.is_error
    assert text_of(result).startswith("provider_error: the answer broke off")


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        ({}, "- arguments.prompt: required"),
        ({"prompt": ""}, "- arguments.prompt: "),
        ({"prompt": 7}, "- arguments.prompt: "),
        (
            {"prompt": "hi", "messages": [{"role": "user", "content": "hi"}]},
            "- arguments.messages: unknown argument",
        ),
        ({"prompt": "hi", "temperature": 3}, "- arguments.temperature: "),
        ({"prompt": "hi", "user_id": "usr_1"}, "- arguments.user_id: unknown argument"),
        (
            {"prompt": "hi", "extra": {"prompt": "other"}},
            "- arguments.extra: 'prompt' is an argument of its own",
        ),
        ({"prompt": "hi", "extra": {"stream": False}}, "- arguments.extra: 'stream' is the server's to set"),
    ],
)
async def test_a_bad_argument_is_named_and_nothing_is_sent(
    client: Client, sandbox: RunningSandbox, openrouter_key: str, arguments: dict[str, Any], named: str
) -> None:
    result = await complete(client, **arguments)
    assert result.is_error
    assert named in text_of(result)
    assert "Nothing was sent upstream and no credits were spent." in text_of(result)
    assert sandbox.sandbox.ledger.requests(openrouter_key) == []


async def test_a_usd_cap_holds_for_text_completions(sandbox: RunningSandbox, openrouter_key: str) -> None:
    settings = make_settings(sandbox, openrouter_key, base_url=f"{sandbox.url}/api/v1", max_call_usd=0.000001)
    async with Client(create_server(settings)) as client:
        refused = await complete(client, prompt="hi", max_tokens=1000)
    assert refused.is_error
    assert text_of(refused).startswith("spending_cap: this call could cost up to $")
    assert completions(sandbox, openrouter_key) == []


async def test_naives_typed_routes_have_none_and_say_where_they_are(
    sandbox: RunningSandbox, api_key: str
) -> None:
    async with Client(create_server(make_settings(sandbox, api_key))) as client:
        refused = await complete(client, prompt="hi")
    assert refused.is_error
    text = text_of(refused)
    assert text.startswith(
        "not_on_this_backend: text completions (POST /completions) are not on the Naive API"
    )
    assert "Naive's proxy (NAIVE_BASE_URL=https://api.usenaive.ai/v1/proxy/openrouter)" in text
    assert "use llm.chat with `prompt` instead" in text
    assert sandbox.sandbox.ledger.requests(api_key) == []


@pytest.fixture(scope="module")
def paced() -> Iterator[RunningSandbox]:
    """`sandbox/slow` answers in about 2.5 s (50 chunks, 50 ms apart)."""
    with serve_in_thread(SandboxConfig(slow_chunk_delay=0.05, slow_words=150)) as running:
        yield running


async def test_progress_streams_and_a_cancel_closes_the_upstream(paced: RunningSandbox) -> None:
    key = f"nv_sk_test_{uuid.uuid4().hex}"  # Naive's proxy takes Naive keys
    settings = make_settings(paced, key, base_url=f"{paced.url}/v1/proxy/openrouter")
    heard: list[str] = []
    first = anyio.Event()

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        if message and message.startswith("Sandbox reply"):
            heard.append(message)
            first.set()

    async with Client(create_server(settings)) as client:
        arguments = {
            "primitive": "llm",
            "method": "complete",
            "arguments": {"prompt": "go", "model": "sandbox/slow"},
        }
        async with anyio.create_task_group() as group:
            group.start_soon(
                lambda: client.call_tool("naive_run_primitive", arguments, progress_callback=on_progress)
            )
            with anyio.fail_after(WAIT):
                await first.wait()
            group.cancel_scope.cancel()
        [record] = completions(paced, key)
        await ended(record)
        after = await complete(client, prompt="next")
    assert not after.is_error, text_of(after)
    assert heard, "progress carried the text as it arrived"
    assert record.disconnected_at is not None, "the cancel closed the upstream connection"
    [cancelled, _] = paced.sandbox.ledger.generations(key)
    assert cancelled.cancelled
