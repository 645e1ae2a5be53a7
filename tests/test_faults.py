"""The fault suite: every way the upstream can fail, each ending in a clear tool error or a
successful retry — no stuck task, no connection left busy, and the next call answered."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.types import CallToolResult

from naive_mcp.client import make_http_client
from naive_mcp.sandbox import RunningSandbox, SandboxConfig, serve_in_thread
from naive_mcp.sandbox.faults import FLAKY
from naive_mcp.server import create_server
from naive_mcp.settings import Settings
from tests.conftest import make_settings
from tests.helpers import text_of

pytestmark = pytest.mark.anyio

# Every fault must resolve within this, retries included.
BOUND_SECONDS = 10
RETRYING = {"max_retries": 2, "retry_max_wait": 0.05}


@asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[tuple[Client, httpx2.AsyncClient]]:
    async with make_http_client(settings) as http, Client(create_server(settings, http=http)) as client:
        yield client, http


@asynccontextmanager
async def tcp_upstream(handler: Callable[[anyio.abc.SocketStream], Awaitable[None]]) -> AsyncIterator[str]:
    """A loopback upstream that speaks raw TCP through `handler`: for faults HTTP servers won't make."""
    async with (
        await anyio.create_tcp_listener(local_host="127.0.0.1") as listener,
        anyio.create_task_group() as group,
    ):
        group.start_soon(listener.serve, handler)
        yield f"http://127.0.0.1:{listener.extra(anyio.abc.SocketAttribute.local_port)}"
        group.cancel_scope.cancel()


def busy_connections(http: httpx2.AsyncClient) -> int:
    """Upstream connections still in use (httpcore's pool, read for this check only)."""
    pool = http._transport._pool  # type: ignore[attr-defined]
    return sum(
        1 for connection in pool.connections if not connection.is_idle() and not connection.is_closed()
    )


async def call(client: Client, tool: str, arguments: dict[str, Any]) -> CallToolResult:
    with anyio.fail_after(BOUND_SECONDS):
        return await client.call_tool(tool, arguments)


async def no_busy_connections(http: httpx2.AsyncClient) -> None:
    """A call cut off mid-answer is settled from its generation's stats, looked up in the
    background: that lookup may hold a connection for a moment, then must give it back."""
    with anyio.fail_after(BOUND_SECONDS):
        while busy_connections(http):  # noqa: ASYNC110 - httpcore's pool has no event to wait on
            await anyio.sleep(0.02)


async def healthy_after(client: Client, http: httpx2.AsyncClient, model: str = "openai/gpt-5-mini") -> None:
    await no_busy_connections(http)
    after = await call(client, "naive_llm_chat", {"prompt": "next", "model": model})
    assert not after.is_error, text_of(after)


def attempts(sandbox: RunningSandbox, api_key: str, path: str = "/v1/llm/chat/completions") -> int:
    return sum(1 for record in sandbox.sandbox.ledger.requests(api_key) if record.path == path)


@pytest.mark.parametrize("fault", sorted(FLAKY))
async def test_a_passing_fault_is_retried_and_the_call_succeeds(
    sandbox: RunningSandbox, api_key: str, fault: str
) -> None:
    async with serving(make_settings(sandbox, api_key, **RETRYING)) as (client, http):
        result = await call(client, "naive_llm_chat", {"prompt": "hi", "model": f"sandbox/flaky-{fault}"})
        assert not result.is_error, text_of(result)
        assert text_of(result) == f"Sandbox reply from sandbox/flaky-{fault}: hi"
        await healthy_after(client, http)
    assert attempts(sandbox, api_key) == 3  # the fault, the retry, the next call


@pytest.mark.parametrize(
    ("fault", "retried", "says"),
    [
        (  # a Retry-After past NAIVE_RETRY_MAX_WAIT: not retried, the delay is passed on
            "rate-limited",
            False,
            "rate_limited (HTTP 429): Too many requests\nSlow down and retry after the delay. Retry after 7 s.",
        ),
        ("rate-limited-bare", True, "rate_limited (HTTP 429): Too many requests"),
        ("server-error", False, "provider_error (HTTP 500): Internal server error"),
        ("provider-error", True, "provider_error (HTTP 502)"),
        ("unavailable", False, "unavailable (HTTP 503): No provider available"),  # Retry-After: 2
        ("not-configured", False, "not_configured (HTTP 503)"),
        ("gateway-timeout", True, "provider_error (HTTP 504): Gateway timeout"),
        ("timeout-524", True, "request_timeout (HTTP 524)"),
        ("overloaded", True, "overloaded (HTTP 529)"),
        ("invalid-input", False, "invalid_input (HTTP 400)"),
        (
            "html",
            True,
            "provider_error (HTTP 502): the upstream answered HTTP 502 with a body that is not a Naive error (text/html)",
        ),
        (
            "not-json",
            False,
            "bad_response: POST /v1/llm/chat/completions answered HTTP 200 with a body that is not JSON",
        ),
    ],
)
async def test_a_lasting_fault_is_retried_only_if_retrying_can_help_then_explained(
    sandbox: RunningSandbox, api_key: str, fault: str, retried: bool, says: str
) -> None:
    async with serving(make_settings(sandbox, api_key, **RETRYING)) as (client, http):
        result = await call(client, "naive_llm_chat", {"prompt": "hi", "model": f"sandbox/fail-{fault}"})
        assert result.is_error
        assert text_of(result).startswith(says)
        await healthy_after(client, http)
    assert attempts(sandbox, api_key) == (3 if retried else 1) + 1


async def test_a_refused_connection_is_retried_then_explained(
    api_key: str, sandbox: RunningSandbox, caplog: pytest.LogCaptureFixture
) -> None:
    async with await anyio.create_tcp_listener(local_host="127.0.0.1") as listener:
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
    settings = make_settings(sandbox, api_key, base_url=f"http://127.0.0.1:{port}", **RETRYING)
    with caplog.at_level(logging.INFO, logger="naive_mcp.client"):
        async with serving(settings) as (client, http):
            result = await call(client, "naive_llm_chat", {"prompt": "hi"})
            assert text_of(result).startswith(
                f"connection_error: could not reach http://127.0.0.1:{port}: ConnectError"
            )
            assert busy_connections(http) == 0
    # Each retry came after the backoff the settings allow, not a wall-clock guess.
    retries = [
        re.fullmatch(r"upstream \S+; retry (\d) in ([\d.]+) s", r.getMessage()) for r in caplog.records
    ]
    waits = [(int(m[1]), float(m[2])) for m in retries if m]
    assert [n for n, _ in waits] == [1, 2], caplog.text
    assert all(wait <= RETRYING["retry_max_wait"] for _, wait in waits)


async def test_a_connection_reset_before_the_answer_is_retried_then_explained(
    api_key: str, sandbox: RunningSandbox
) -> None:
    accepted = 0

    async def slam(stream: anyio.abc.SocketStream) -> None:
        nonlocal accepted
        accepted += 1
        await stream.receive()  # the request line: then hang up without a word
        await stream.aclose()

    async with tcp_upstream(slam) as url:
        settings = make_settings(sandbox, api_key, base_url=url, **RETRYING)
        async with serving(settings) as (client, http):
            result = await call(client, "naive_llm_chat", {"prompt": "hi"})
            assert busy_connections(http) == 0
    assert text_of(result).startswith("connection_error: could not reach")
    assert "RemoteProtocolError" in text_of(result)
    assert accepted == 3


async def test_a_truncated_body_is_a_clear_error(api_key: str, sandbox: RunningSandbox) -> None:
    async def truncate(stream: anyio.abc.SocketStream) -> None:
        await stream.receive()
        await stream.send(
            b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{"models": ['
        )
        await stream.aclose()

    async with tcp_upstream(truncate) as url:
        settings = make_settings(sandbox, api_key, base_url=url)
        async with serving(settings) as (client, http):
            result = await call(client, "naive_llm_models", {})
            assert busy_connections(http) == 0
    assert result.is_error
    assert text_of(result).startswith(f"connection_error: the answer from {url} was cut off")
    assert "RemoteProtocolError" in text_of(result)


async def test_a_connection_reset_mid_answer_is_not_retried_and_keeps_the_text(
    sandbox: RunningSandbox, api_key: str
) -> None:
    async with serving(make_settings(sandbox, api_key, **RETRYING)) as (client, http):
        result = await call(client, "naive_llm_chat", {"prompt": "hi", "model": "sandbox/fail-drop"})
        assert text_of(result).startswith("connection_error: the connection broke mid-answer")
        assert text_of(result).endswith("---\nSandbox reply from ")
        await healthy_after(client, http)
    assert attempts(sandbox, api_key) == 2, "tokens had streamed: no retry"


async def test_a_hang_before_the_first_byte_times_out_and_frees_the_upstream(
    sandbox: RunningSandbox, api_key: str
) -> None:
    settings = make_settings(sandbox, api_key, first_byte_timeout=0.3, **RETRYING)
    async with serving(settings) as (client, http):
        result = await call(client, "naive_llm_chat", {"prompt": "hi", "model": "sandbox/fail-hang"})
        assert text_of(result).startswith("timeout: no answer from")
        assert "NAIVE_FIRST_BYTE_TIMEOUT (0.3 s)" in text_of(result)
        await healthy_after(client, http)
    assert attempts(sandbox, api_key) == 2, "a hang is not retried"


async def test_a_slow_drip_past_the_total_timeout_keeps_what_arrived(api_key: str) -> None:
    with serve_in_thread(SandboxConfig(slow_chunk_delay=0.05, slow_words=300)) as slow:
        settings = make_settings(slow, api_key, total_timeout=0.6)
        async with serving(settings) as (client, http):
            result = await call(client, "naive_llm_chat", {"prompt": "hi", "model": "sandbox/slow"})
            assert text_of(result).startswith(
                "timeout: the call took longer than NAIVE_TOTAL_TIMEOUT (0.6 s)"
            )
            assert "The answer is incomplete" in text_of(result)
            await healthy_after(client, http)
        record = slow.sandbox.ledger.requests(api_key)[0]
        assert await anyio.to_thread.run_sync(record.stream_ended.wait, 5)
        assert record.disconnected_at is not None


async def test_a_slow_drip_within_the_timeouts_completes(api_key: str) -> None:
    with serve_in_thread(SandboxConfig(slow_chunk_delay=0.02, slow_words=60)) as slow:
        async with serving(make_settings(slow, api_key, read_timeout=1.0)) as (client, http):
            result = await call(client, "naive_llm_chat", {"prompt": "hi", "model": "sandbox/slow"})
            assert not result.is_error and text_of(result).endswith("word60")
            assert busy_connections(http) == 0


async def test_an_oversized_response_is_refused(sandbox: RunningSandbox, api_key: str) -> None:
    async with serving(make_settings(sandbox, api_key, max_response_bytes=2048)) as (client, http):
        listing = await call(client, "naive_llm_models", {})
        answer = await call(client, "naive_llm_chat", {"prompt": "x" * 3000})
        await no_busy_connections(http)
    assert text_of(listing).startswith(
        "bad_response: the upstream's answer is larger than NAIVE_MAX_RESPONSE_BYTES (2048 bytes)"
    )
    assert text_of(answer).startswith(
        "bad_response: the answer is larger than NAIVE_MAX_RESPONSE_BYTES (2048)"
    )


@pytest.mark.slow
async def test_retries_are_bounded_and_honour_retry_after_within_the_cap(
    sandbox: RunningSandbox, api_key: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="naive_mcp.client")
    async with serving(make_settings(sandbox, api_key, max_retries=2, retry_max_wait=2)) as (client, _):
        honoured = await call(
            client, "naive_llm_chat", {"prompt": "hi", "model": "sandbox/fail-rate-limited-1s"}
        )
    waits = [record.getMessage() for record in caplog.records if "retry" in record.getMessage()]
    assert honoured.is_error
    assert waits == ["upstream rate_limited; retry 1 in 1.00 s", "upstream rate_limited; retry 2 in 1.00 s"]
    assert attempts(sandbox, api_key) == 3

    caplog.clear()
    async with serving(make_settings(sandbox, api_key, max_retries=2, retry_max_wait=0.05)) as (client, _):
        too_long = await call(
            client, "naive_llm_chat", {"prompt": "hi", "model": "sandbox/fail-rate-limited"}
        )
    assert not [record for record in caplog.records if "retry" in record.getMessage()]
    assert too_long.is_error and "Retry after 7 s" in text_of(too_long), (
        "a Retry-After past the cap is not retried"
    )
    assert attempts(sandbox, api_key) == 4
