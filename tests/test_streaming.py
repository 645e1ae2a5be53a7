"""Streaming chat: progress as the answer grows, heartbeats through silence, cancellation that
closes the upstream connection, and answers assembled from deltas — in memory and over stdio."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TextIO

import anyio
import anyio.lowlevel
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError
from mcp.types import CallToolResult, ImageContent, TextContent
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from naive_mcp.progress import ProgressReporter
from naive_mcp.sandbox import RunningSandbox, SandboxConfig, serve_in_thread
from naive_mcp.sandbox.ledger import RequestRecord
from naive_mcp.sandbox.responder import SANDBOX_PNG
from naive_mcp.sandbox.server import serve_app_in_thread
from naive_mcp.server import create_server
from naive_mcp.settings import Settings
from naive_mcp.wire import MAX_IMAGES
from tests.conftest import make_settings, naive_mcp, upstream_env
from tests.helpers import text_of

pytestmark = pytest.mark.anyio

# A slow answer lasts about 2.5 s (125 chunks, 20 ms apart); a "thinking" model is silent for 0.6 s.
PACED = SandboxConfig(slow_chunk_delay=0.02, slow_words=370, think_seconds=0.6, keepalive_interval=0.05)


@pytest.fixture(scope="module")
def paced() -> Iterator[RunningSandbox]:
    with serve_in_thread(PACED) as running:
        yield running


@dataclass
class Progress:
    """What a client hears while a call runs."""

    notes: list[tuple[float, str]] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    first: anyio.Event = field(default_factory=anyio.Event)

    async def __call__(self, progress: float, total: float | None, message: str | None) -> None:
        self.notes.append((progress, message or ""))
        self.times.append(time.monotonic())
        self.first.set()

    @property
    def messages(self) -> list[str]:
        return [message for _, message in self.notes]


def last_request(sandbox: RunningSandbox, api_key: str) -> RequestRecord:
    return sandbox.sandbox.ledger.requests(api_key)[-1]


async def cancel_mid_answer(client: Client) -> float:
    """Start a long answer, cancel the call at its first progress notification; when it was cancelled."""
    heard = Progress()
    async with anyio.create_task_group() as group:

        async def call() -> None:
            await client.call_tool(
                "naive_llm_chat", {"prompt": "long", "model": "sandbox/slow"}, progress_callback=heard
            )

        group.start_soon(call)
        with anyio.fail_after(10):
            await heard.first.wait()
        cancelled_at = time.monotonic()
        group.cancel_scope.cancel()
    return cancelled_at


async def ended(record: RequestRecord, within: float = 5.0) -> None:
    """Wait (bounded) until the sandbox has finished with a streamed answer."""
    assert await anyio.to_thread.run_sync(record.stream_ended.wait, within), "the upstream stream never ended"


@pytest.mark.slow
async def test_progress_carries_the_answer_as_it_grows_and_only_increases(
    paced: RunningSandbox, api_key: str
) -> None:
    heard = Progress()
    settings = make_settings(paced, api_key, progress_interval=0.1)
    async with Client(create_server(settings)) as client:
        result = await client.call_tool(
            "naive_llm_chat", {"prompt": "go", "model": "sandbox/slow"}, progress_callback=heard
        )

    assert not result.is_error, text_of(result)
    answer = text_of(result)
    assert answer.endswith("word370")
    values = [value for value, _ in heard.notes]
    assert values == sorted(set(values)), "progress must strictly increase"
    assert len(heard.notes) >= 5
    # Throttled: far fewer notifications than the 125 chunks that came in.
    assert len(heard.notes) < 60
    text_notes = [m for m in heard.messages if not m.startswith(("Still working", "Waiting for the model"))]
    assert text_notes
    for message in text_notes:
        assert answer.startswith(message) or (message.startswith("…") and message[1:] in answer)


@pytest.mark.slow
async def test_a_client_without_a_progress_token_gets_the_same_answer(
    paced: RunningSandbox, api_key: str
) -> None:
    async with Client(create_server(make_settings(paced, api_key))) as client:
        heard = Progress()
        with_token = await client.call_tool(
            "naive_llm_chat", {"prompt": "same", "model": "sandbox/slow"}, progress_callback=heard
        )
        without = await client.call_tool("naive_llm_chat", {"prompt": "same", "model": "sandbox/slow"})

    assert heard.notes, "the call with a token heard progress"
    assert with_token.content[0] == without.content[0]
    keep = ("text", "model", "provider", "finish_reason", "truncated", "usage")
    assert with_token.structured_content is not None and without.structured_content is not None
    assert {k: with_token.structured_content[k] for k in keep} == {
        k: without.structured_content[k] for k in keep
    }
    assert [r.body["stream"] for r in paced.sandbox.ledger.requests(api_key)] == [True, True]


async def test_a_silent_model_still_lets_the_client_hear_from_the_server(
    paced: RunningSandbox, api_key: str
) -> None:
    heard = Progress()
    settings = make_settings(paced, api_key, heartbeat_interval=0.1, progress_interval=0.01)
    async with Client(create_server(settings)) as client:
        result = await client.call_tool(
            "naive_llm_chat", {"prompt": "deep", "model": "sandbox/think"}, progress_callback=heard
        )
        first_token = last_request(paced, api_key).first_chunk_at

    assert not result.is_error
    heartbeats = [
        t for t, (_, m) in zip(heard.times, heard.notes, strict=True) if m.startswith("Still working (")
    ]
    assert len(heartbeats) >= 3, heard.messages
    # The order of events, not a duration: the client heard from the server while the model was
    # still silent, before the upstream sent its first token.
    assert first_token is not None and heartbeats[0] < first_token, "a heartbeat broke the silence"


async def test_cancelling_the_call_closes_the_upstream_connection_at_once(
    paced: RunningSandbox, api_key: str
) -> None:
    async with Client(create_server(make_settings(paced, api_key))) as client:
        cancelled_at = await cancel_mid_answer(client)
        record = last_request(paced, api_key)
        await ended(record)
        after = await client.call_tool("naive_llm_chat", {"prompt": "next"})

    assert not after.is_error, "the server answers the next call"
    assert record.disconnected_at is not None
    assert cancelled_at <= record.disconnected_at, "the disconnect followed the cancel, before the end"
    cancelled, finished = paced.sandbox.ledger.generations(api_key)
    assert cancelled.cancelled and not finished.cancelled
    full_cost = 0.0000004 * 745  # about 745 completion tokens at $0.4 per million
    assert cancelled.total_cost < full_cost / 2, "billing stopped at the cancel"


async def test_the_clients_own_timeout_also_closes_the_upstream_connection(api_key: str) -> None:
    # An answer of about a minute, which the client gives up on after a second: the upstream sees
    # the disconnect long before its end (no duration is asserted: the ledger says which came).
    with serve_in_thread(SandboxConfig(slow_chunk_delay=0.05, slow_words=3600)) as minute:
        async with Client(create_server(make_settings(minute, api_key))) as client:
            warm = await client.call_tool("naive_llm_chat", {"prompt": "hi"})  # the store is open
            assert not warm.is_error
            with pytest.raises(MCPError, match=r"[Tt]imed out"):
                await client.call_tool(
                    "naive_llm_chat", {"prompt": "long", "model": "sandbox/slow"}, read_timeout_seconds=1.0
                )
            with anyio.fail_after(30):
                while len(minute.sandbox.ledger.requests(api_key)) < 2:  # noqa: ASYNC110 - its own thread
                    await anyio.sleep(0.01)
            record = last_request(minute, api_key)
            await ended(record, within=30)
    assert record.disconnected_at is not None, "the answer ran to its end"


async def test_a_midstream_error_keeps_the_partial_text_and_says_it_is_incomplete(client: Client) -> None:
    result = await client.call_tool(
        "naive_llm_chat", {"prompt": "hi", "model": "sandbox/fail-midstream-error"}
    )

    assert result.is_error
    text = text_of(result)
    assert text.startswith("provider_error: the answer broke off: Provider disconnected mid-answer.")
    assert "The answer is incomplete" in text
    assert text.endswith("---\nSandbox reply from ")


async def test_a_connection_cut_mid_answer_keeps_the_partial_text(client: Client) -> None:
    result = await client.call_tool("naive_llm_chat", {"prompt": "hi", "model": "sandbox/fail-drop"})

    assert result.is_error
    text = text_of(result)
    assert text.startswith("connection_error: the connection broke mid-answer")
    assert "The answer is incomplete" in text and text.endswith("---\nSandbox reply from ")


# --- hand-written upstream streams -----------------------------------------------------------------


def chunk(**fields: Any) -> str:
    return f"data: {json.dumps({'id': 'gen-hand', 'model': 'hand/made', **fields})}\n\n"


def delta(content: str, **extra: Any) -> dict[str, Any]:
    return {"index": 0, "delta": {"content": content, **extra}, "finish_reason": None}


@asynccontextmanager
async def upstream(*events: str, content_type: str = "text/event-stream") -> AsyncIterator[Settings]:
    """An upstream whose chat answer is exactly `events`."""

    async def chat(request: Request) -> Response:
        async def body() -> AsyncIterator[str]:
            for event in events:
                yield event

        return StreamingResponse(body(), media_type=content_type)

    with serve_app_in_thread(
        Starlette(routes=[Route("/v1/llm/chat/completions", chat, methods=["POST"])])
    ) as url:
        yield Settings(
            base_url=url, api_key=SecretStr("nv_sk_test_hand"), default_model="hand/made", max_retries=0
        )


async def chat_with(*events: str, content_type: str = "text/event-stream") -> CallToolResult:
    """One `naive_llm_chat` against an upstream whose answer is exactly `events`."""
    async with (
        upstream(*events, content_type=content_type) as settings,
        Client(create_server(settings)) as client,
    ):
        return await client.call_tool("naive_llm_chat", {"prompt": "hi"})


async def test_keepalives_blank_data_and_unknown_fields_are_ignored() -> None:
    events = (
        ": OPENROUTER PROCESSING\r\n\r\n",
        chunk(choices=[delta("Hel", role="assistant")], novelty={"x": 1}),
        ": OPENROUTER PROCESSING\n\n",
        "data: \n\n",
        "event: message\nid: 7\n" + chunk(choices=[delta("lo")], system_fingerprint="fp"),
        chunk(choices=[{"index": 0, "delta": {}, "finish_reason": "stop", "logprobs": None}]),
        chunk(choices=[], usage={"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5, "cost": 0.1}),
        "data: [DONE]\n\n",
    )
    result = await chat_with(*events)

    assert not result.is_error, text_of(result)
    assert text_of(result) == "Hello"
    data = result.structured_content
    assert data is not None
    assert data["usage"]["cost"] == 0.1 and data["finish_reason"] == "stop"
    assert "credits_used" not in data and "credits_remaining" not in data
    assert "credits unknown" in text_of(result, 1)


@pytest.mark.slow
async def test_a_chunk_that_is_not_json_is_a_clear_error_keeping_the_text() -> None:
    events = (chunk(choices=[delta("Partial answer")]), "data: {not json\n\n", "data: [DONE]\n\n")
    async with upstream(*events) as settings, Client(create_server(settings)) as client:
        result = await client.call_tool("naive_llm_chat", {"prompt": "hi"})
        still = await client.call_tool("naive_llm_chat", {"prompt": "again"})

    assert result.is_error
    text = text_of(result)
    assert text.startswith(
        "bad_response: a streamed chunk is not JSON: '{not json'. The answer is incomplete"
    )
    assert text.endswith("---\nPartial answer")
    assert still.is_error, "the same upstream, the same clear error: the server is still up"


@pytest.mark.slow
async def test_a_stream_that_just_stops_was_cut_off() -> None:
    events = (chunk(choices=[delta("Half")]),)
    result = await chat_with(*events)

    assert result.is_error
    assert text_of(result).startswith(
        "connection_error: the stream ended before the answer finished (no finish_reason, no [DONE]). "
        "The answer is incomplete"
    )


async def test_an_upstream_that_answers_in_one_piece_is_read_whole() -> None:
    whole = {
        "id": "gen-whole",
        "model": "hand/made",
        "choices": [
            {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "Whole"}}
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2, "cost": 0.01},
        "credits_used": 0.02,
        "credits_remaining": 9.98,
    }
    result = await chat_with(json.dumps(whole), content_type="application/json")

    assert not result.is_error
    assert text_of(result) == "Whole"
    assert result.structured_content is not None and result.structured_content["credits_remaining"] == 9.98


async def test_streamed_images_are_image_blocks_links_or_left_out_with_the_reason() -> None:
    png = base64.b64encode(SANDBOX_PNG).decode()

    def image(url: str) -> dict[str, Any]:
        return {"type": "image_url", "image_url": {"url": url}}

    first = [image(f"data:image/png;base64,{png}"), image("https://cdn.example.com/cat.webp")]
    then = [
        image("data:text/html;base64,PGI+"),
        image("data:image/png;base64,not base64!"),
        image("data:image/svg+xml,<svg/>"),
        image("javascript:alert(1)"),
        {"type": "image_url"},  # no URL: not an image at all
        image(f"data:IMAGE/PNG;base64,{png}"),
    ]
    events = (
        chunk(choices=[delta("Here they are.")]),
        chunk(choices=[{"index": 0, "delta": {"images": first}}]),
        chunk(choices=[{"index": 0, "delta": {"images": then}, "finish_reason": "stop"}]),
        "data: [DONE]\n\n",
    )
    result = await chat_with(*events)

    assert not result.is_error, text_of(result)
    text, shown, shown_again, lines, summary = result.content
    assert isinstance(shown, ImageContent) and isinstance(shown_again, ImageContent)
    assert (shown.data, shown.mime_type, shown_again.mime_type) == (png, "image/png", "image/png")
    assert isinstance(text, TextContent) and text.text == "Here they are."
    assert isinstance(lines, TextContent) and lines.text.splitlines() == [
        "Image 2: https://cdn.example.com/cat.webp",
        "Image 3 was left out: its data: URL does not hold an image (type 'text/html')",
        "Image 4 was left out: its base64 data is malformed",
        "Image 5 was left out: its data: URL is not base64",
        "Image 6 was left out: its URL is neither a data: URL nor an http(s) link",
    ]
    assert isinstance(summary, TextContent) and "images 7 (4 left out)" in summary.text
    assert result.structured_content is not None
    assert result.structured_content["images"][:2] == [
        {"mime_type": "image/png", "size_bytes": len(SANDBOX_PNG)},
        {"url": "https://cdn.example.com/cat.webp"},
    ]


async def test_an_answer_with_more_images_than_are_held_is_refused() -> None:
    many = [{"type": "image_url", "image_url": {"url": "https://x/a.png"}}] * (MAX_IMAGES + 1)
    result = await chat_with(chunk(choices=[{"index": 0, "delta": {"images": many}}]), "data: [DONE]\n\n")

    assert result.is_error
    assert text_of(result).startswith(f"bad_response: the answer has more than {MAX_IMAGES} images")


# --- the same over stdio, with a real `naive-mcp` subprocess ----------------------------------------


@pytest.mark.slow
async def test_over_stdio_progress_arrives_and_cancel_closes_the_upstream(
    paced: RunningSandbox, api_key: str, errlog: TextIO
) -> None:
    heard = Progress()
    async with naive_mcp(errlog, upstream_env(paced, api_key)) as client:
        whole = await client.call_tool(
            "naive_llm_chat", {"prompt": "go", "model": "sandbox/slow"}, progress_callback=heard
        )
        assert not whole.is_error
        assert len(heard.notes) >= 5
        values = [value for value, _ in heard.notes]
        assert values == sorted(set(values))

        cancelled_at = await cancel_mid_answer(client)
        record = last_request(paced, api_key)
        await ended(record)
        after = await client.call_tool("naive_llm_models", {})
    assert not after.is_error
    assert record.disconnected_at is not None
    assert cancelled_at <= record.disconnected_at, "the disconnect followed the cancel, before the end"


@pytest.mark.slow
async def test_over_stdio_a_silent_model_gets_heartbeats(
    paced: RunningSandbox, api_key: str, errlog: TextIO
) -> None:
    heard = Progress()
    env = {**upstream_env(paced, api_key), "NAIVE_HEARTBEAT_INTERVAL": "0.1"}
    async with naive_mcp(errlog, env) as client:
        result = await client.call_tool(
            "naive_llm_chat", {"prompt": "deep", "model": "sandbox/think"}, progress_callback=heard
        )
    assert not result.is_error
    assert len([m for m in heard.messages if m.startswith("Still working (")]) >= 3


@pytest.mark.slow
async def test_over_stdio_split_tool_calls_are_joined_and_a_midstream_error_keeps_the_text(
    sandbox: RunningSandbox, api_key: str, errlog: TextIO
) -> None:
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    async with naive_mcp(errlog, upstream_env(sandbox, api_key)) as client:
        called = await client.call_tool("naive_llm_chat", {"prompt": "Paris", "tools": tools})
        broken = await client.call_tool(
            "naive_llm_chat", {"prompt": "hi", "model": "sandbox/fail-midstream-error"}
        )

    assert called.structured_content is not None
    assert called.structured_content["tool_calls"] == [
        {"id": "call_sandbox_1", "name": "lookup", "arguments": '{"query": "Paris"}'}
    ]
    assert broken.is_error
    assert text_of(broken).endswith("---\nSandbox reply from ")


async def test_a_malformed_detail_never_costs_a_finished_answer() -> None:
    events = (
        chunk(choices=[delta("Kept", tool_calls=5)], provider=7),
        chunk(choices=[{"index": 0, "delta": {}, "finish_reason": "stop"}]),
        chunk(choices=[], usage={"prompt_tokens": "n/a", "cost": 0.1}, credits_used="lots"),
        "data: [DONE]\n\n",
    )
    result = await chat_with(*events)

    assert not result.is_error, text_of(result)
    assert text_of(result) == "Kept"
    data = result.structured_content
    assert data is not None
    assert "usage" not in data and "provider" not in data and "credits_used" not in data


async def test_an_event_larger_than_a_megabyte_is_read() -> None:
    big = "x" * 1_500_000
    events = (
        chunk(choices=[delta(big)]),
        chunk(choices=[{"index": 0, "delta": {}, "finish_reason": "stop"}]),
    )
    result = await chat_with(*events)
    assert not result.is_error, text_of(result)[:200]
    # Read whole; it comes back as its beginning and a link (test_threads reads one back).
    assert result.structured_content is not None
    assert result.structured_content["text_chars"] == 1_500_000


async def test_progress_that_cannot_be_sent_never_fails_the_call() -> None:
    sent: list[str] = []

    async def flaky(progress: float, message: str) -> None:
        sent.append(message)
        raise OSError("the client's stream is gone")

    reporter = ProgressReporter(flaky, interval=0, heartbeat=0.01)
    async with reporter.running():
        reporter.update(lambda: "news")
        with anyio.fail_after(5):
            while not sent:
                await anyio.lowlevel.checkpoint()
        reporter.update(lambda: "more news")
    assert sent == ["news"], "one failed send ends the notifications, not the call"


async def test_a_reporter_nobody_can_hear_sends_nothing_and_runs_no_task() -> None:
    sent: list[str] = []

    async def send(progress: float, message: str) -> None:
        sent.append(message)

    reporter = ProgressReporter(send, interval=0, heartbeat=0.01)
    async with reporter.running(enabled=False):
        reporter.update(lambda: "news")
        for _ in range(20):  # a running loop sends the first news at its first turn
            await anyio.lowlevel.checkpoint()
    assert sent == []


def test_over_json_rpc_only_a_call_with_a_progress_token_gets_a_reporter() -> None:
    from types import SimpleNamespace

    from naive_mcp.tools import _progress_wanted

    def context(params: dict[str, object]) -> Any:
        return SimpleNamespace(request_context=SimpleNamespace(params=params, session=None))

    with_token = {"name": "naive_llm_chat", "_meta": {"progressToken": 7}}
    without = {"name": "naive_llm_chat", "_meta": {}}
    json_rpc = SimpleNamespace(progress_needs_token=True)
    assert _progress_wanted(json_rpc, context(with_token))  # type: ignore[arg-type]
    assert not _progress_wanted(json_rpc, context(without))  # type: ignore[arg-type]


async def test_in_process_only_a_call_with_a_progress_callback_gets_a_reporter(
    sandbox: RunningSandbox, api_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[bool] = []
    running = ProgressReporter.running

    def spy(self: ProgressReporter, *, enabled: bool = True) -> Any:
        seen.append(enabled)
        return running(self, enabled=enabled)

    monkeypatch.setattr(ProgressReporter, "running", spy)
    heard: list[str | None] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        heard.append(message)

    async with Client(create_server(make_settings(sandbox, api_key))) as client:
        quiet = await client.call_tool("naive_llm_chat", {"prompt": "no one listens"})
        loud = await client.call_tool(
            "naive_llm_chat", {"prompt": "someone listens"}, progress_callback=on_progress
        )
    assert not quiet.is_error and not loud.is_error
    assert seen == [False, True]
    assert heard, "the call with a callback still hears its progress"
