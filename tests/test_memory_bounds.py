"""Memory stays bounded whatever the upstream or the client sends (issue 11, hole 7).

An upstream: every part of a streamed answer counts against NAIVE_MAX_RESPONSE_BYTES — tool-call
ids, names, arguments, a cost per call — and an answer holds at most MAX_TOOL_CALLS calls; an SSE
event (or a line still waiting for its newline) is bounded too. A client on stdio: a line is
bounded by NAIVE_MAX_STDIO_LINE_BYTES. The attacks run against a real `naive-mcp` subprocess,
whose resident memory is read from /proc/PID/status.
"""

from __future__ import annotations

import inspect
import json
import logging
import tracemalloc
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp.server.stdio import stdio_server

from naive_mcp.errors import IncompleteAnswer
from naive_mcp.sandbox import RunningSandbox
from naive_mcp.server import create_server
from naive_mcp.settings import Settings
from naive_mcp.streaming import MAX_TOOL_CALLS, PROGRESS_TAIL_CHARS, ChatStream
from tests.conftest import TOOL_NAMES, upstream_env
from tests.raw_stdio import raw_stdio

pytestmark = pytest.mark.anyio
# The figures each attack measured (pytest -o log_cli=true --log-cli-level=INFO shows them).
logger = logging.getLogger(__name__)

MiB = 1024 * 1024


def chunk(delta: dict[str, Any], **top: Any) -> str:
    return json.dumps({**top, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]})


def tool_delta(index: int, **function: str) -> str:
    return chunk({"tool_calls": [{"index": index, "function": function}]})


def tool_id(index: int, call_id: str) -> str:
    return chunk({"tool_calls": [{"index": index, "id": call_id}]})


def feed_all(stream: ChatStream, events: Iterable[str]) -> None:
    for event in events:
        stream.feed(event)


# --- the upstream ------------------------------------------------------------------------------


@pytest.mark.slow
async def test_an_endless_tool_call_stream_ends_at_the_response_limit_with_memory_bounded(
    sandbox: RunningSandbox, api_key: str, tmp_path: Path
) -> None:
    limit = 8 * MiB
    env = {
        **upstream_env(sandbox, api_key),
        "NAIVE_MAX_RESPONSE_BYTES": str(limit),
        # Before the fix only this ended the call, ~11 MB/s later.
        "NAIVE_TOTAL_TIMEOUT": "30",
    }
    with raw_stdio(tmp_path, env) as server:
        await server.initialize()
        warm = await server.request("tools/call", {"name": "naive_llm_chat", "arguments": {"prompt": "hi"}})
        assert not warm["result"]["isError"], warm
        before = server.memory()
        flood = {"prompt": "call tools", "model": "sandbox/fail-tool-call-flood"}
        answers, peaks = [], []
        for _ in range(3):
            answers.append(await server.request("tools/call", {"name": "naive_llm_chat", "arguments": flood}))
            peaks.append(server.memory()["VmHWM"])
        after = server.memory()
        still_up = await server.request("tools/list")

    for answer in answers:
        assert answer["result"]["isError"]
        assert answer["result"]["content"][0]["text"].startswith(
            f"bad_response: the answer is larger than NAIVE_MAX_RESPONSE_BYTES ({limit})"
        )
    assert len(still_up["result"]["tools"]) == len(TOOL_NAMES)
    growth = after["VmHWM"] - before["VmRSS"]
    logger.info(
        f"tool-call flood x3, limit {limit / MiB:.0f} MiB: RSS {before['VmRSS'] / MiB:.1f} MiB before, "
        f"peaks {', '.join(f'{peak / MiB:.1f}' for peak in peaks)} MiB, {after['VmRSS'] / MiB:.1f} MiB "
        f"after; peak growth {growth / MiB:.1f} MiB"
    )
    assert growth < 3 * limit, f"the server grew by {growth / MiB:.1f} MiB"
    # What a flood took is let go when it ends (not left to the cyclic GC): the next reuses it.
    assert peaks[-1] - peaks[0] < limit / 2, f"each flood kept more: peaks {peaks}"


def test_every_part_of_a_tool_call_counts_against_the_limit() -> None:
    limit = 64 * 1024
    over = r"larger than NAIVE_MAX_RESPONSE_BYTES \(65536\)"
    names = (tool_delta(0, name="n" * 1024) for _ in range(100))
    with pytest.raises(IncompleteAnswer, match=over):
        feed_all(ChatStream(max_bytes=limit), names)
    ids = (tool_id(index, "i" * 1024) for index in range(100))
    with pytest.raises(IncompleteAnswer, match=over):
        feed_all(ChatStream(max_bytes=limit), ids)
    # A new index costs something however empty it is.
    with pytest.raises(IncompleteAnswer, match=over):
        feed_all(ChatStream(max_bytes=limit), (tool_delta(index) for index in range(MAX_TOOL_CALLS)))
    with pytest.raises(IncompleteAnswer, match=over):
        feed_all(ChatStream(max_bytes=limit), (chunk({}, model="m" * 2 * limit),))

    # An id the upstream repeats on every delta, or a top-level string on every chunk, is held
    # once, and counted once.
    feed_all(ChatStream(max_bytes=limit), (tool_id(0, "c" * 1024) for _ in range(1000)))
    feed_all(ChatStream(max_bytes=limit), (chunk({}, model="m" * 1024) for _ in range(1000)))


def test_an_answer_holds_at_most_max_tool_calls() -> None:
    stream = ChatStream(max_bytes=None)
    for index in range(MAX_TOOL_CALLS):
        stream.feed(tool_delta(index, name="f"))
    with pytest.raises(IncompleteAnswer, match=f"more than {MAX_TOOL_CALLS} tool calls") as raised:
        stream.feed(tool_delta(MAX_TOOL_CALLS, name="f"))
    assert "parallel_tool_calls" in raised.value.message


@pytest.mark.slow
def test_what_is_held_is_what_is_counted_however_small_the_pieces() -> None:
    """2-byte pieces kept as a list of strings cost ~60 bytes each: 30 times the count."""
    stream = ChatStream(max_bytes=None)
    pieces = 200_000
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(pieces):
            stream._add({"choices": [{"delta": {"content": "ab", "reasoning": "cd"}}]})
            stream._add(
                {"choices": [{"delta": {"tool_calls": [{"index": 0, "function": {"arguments": "ef"}}]}}]}
            )
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    counted = 3 * 2 * pieces
    assert held < 1.5 * counted + 64 * 1024, f"{held} bytes held for {counted} counted"


def test_the_progress_tail_and_the_answer_survive_any_character() -> None:
    text = "".join(["a", "é", "€", "😀", "\ud800"][i % 5] * (i % 7 + 1) for i in range(500))
    stream = ChatStream()
    for at in range(0, len(text), 3):
        stream.feed(chunk({"content": text[at : at + 3]}))
        tail = stream.progress_message()
        shown = text[: at + 3]
        if len(shown) > PROGRESS_TAIL_CHARS:
            assert tail == "…" + shown[-PROGRESS_TAIL_CHARS:]
        else:
            assert tail == shown
    stream.feed(json.dumps({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}))
    assert stream.finish().choices[0].message.content == text


async def test_an_endless_line_from_the_upstream_is_bounded_by_the_event_limit() -> None:
    """NaiveClient relies on httpx2's EventSource bounding an event, and a line still waiting for
    its newline, by max_event_size: this fails loudly if that changes."""
    sent = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal sent
        yield b"data: "
        while True:
            sent += 64 * 1024
            yield b"x" * (64 * 1024)

    response = httpx2.Response(
        200,
        headers={"content-type": "text/event-stream"},
        content=endless(),
        request=httpx2.Request("POST", "http://upstream.invalid/v1/llm/chat/completions"),
    )
    with pytest.raises(httpx2.SSEError, match="exceeded the 1048576 byte limit"):
        async for _ in httpx2.EventSource(response, max_event_size=MiB):
            pass
    assert sent <= MiB + 64 * 1024


# --- the client, over stdio --------------------------------------------------------------------


@pytest.mark.slow
async def test_an_overlong_stdio_line_is_dropped_answered_and_the_server_goes_on(
    sandbox: RunningSandbox, api_key: str, tmp_path: Path
) -> None:
    limit = Settings().max_stdio_line_bytes
    with raw_stdio(tmp_path, upstream_env(sandbox, api_key)) as server:
        await server.initialize()
        assert "result" in await server.request("tools/list")
        # A call first: it waits for the warm-up (the store and the HTTP stack loaded), whose
        # memory is not the lines' to answer for.
        called = await server.request("tools/call", {"name": "naive_llm_chat", "arguments": {"prompt": "hi"}})
        assert called["result"]["isError"] is False, called
        before = server.memory()

        # A request as the SDKs write it: its id is read, so the call fails at once.
        head = b'{"jsonrpc":"2.0","id":41,"method":"tools/call","params":{"name":"naive_llm_chat",'
        await server.send_in_thread(head + b'"arguments":{"prompt":"' + b"x" * (32 * MiB) + b'"}}}\n')
        told = await server.answer(41)
        # Anything else: answered with id null.
        await server.send_in_thread(b"y" * (24 * MiB) + b"\n")
        told_null = await server.answer(None)

        after = server.memory()
        listed = await server.request("tools/list")
        logs = server.logs()

    for error in (told, told_null):
        assert error["error"]["code"] == -32600
        assert f"longer than NAIVE_MAX_STDIO_LINE_BYTES ({limit} bytes)" in error["error"]["message"]
    assert len(listed["result"]["tools"]) == len(TOOL_NAMES)
    assert logs.count("stdio: dropped a message of") == 2
    assert "(request id 41)" in logs and "(request id unknown)" in logs
    growth = after["VmHWM"] - before["VmRSS"]
    logger.info(
        f"overlong stdio lines (32 and 24 MiB), limit {limit / MiB:.0f} MiB: RSS {before['VmRSS'] / MiB:.1f} "
        f"MiB before, peak {after['VmHWM'] / MiB:.1f} MiB; peak growth {growth / MiB:.1f} MiB"
    )
    assert growth < 2 * limit, f"the server grew by {growth / MiB:.1f} MiB"


def test_the_sdk_internals_serve_stdio_relies_on() -> None:
    """serve_stdio hands the SDK's stdio_server its own stdin and stdout and runs the low-level server, as
    MCPServer.run_stdio_async does: fail loudly if either changes shape."""
    assert "stdin" in inspect.signature(stdio_server).parameters
    source = inspect.getsource(stdio_server)
    assert "async for line in stdin" in source
    assert "stdout" in inspect.signature(stdio_server).parameters
    assert "await stdout.write(" in source and "await stdout.flush()" in source
    server = create_server(Settings())
    assert hasattr(server._lowlevel_server, "run")
    assert hasattr(server._lowlevel_server, "create_initialization_options")
