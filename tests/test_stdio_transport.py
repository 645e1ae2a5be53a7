"""The stdio transport (naive_mcp/stdio.py): pipes served on the event loop, anything else
through a worker thread, lines bounded, stdout kept for the protocol, and the loop it runs on."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from mcp import Client
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.types import LATEST_PROTOCOL_VERSION, TextContent

from naive_mcp import cli, event_loop
from naive_mcp.errors import ConfigurationError
from naive_mcp.stdio import LineSplitter, OverlongLine, Unanswered
from tests.conftest import NAIVE_MCP, SESSION_TIMEOUT, TOOL_NAMES

# --- lines out of chunks -----------------------------------------------------------------------

LIMIT = 40
line_bodies = st.lists(st.binary(max_size=2 * LIMIT).map(lambda b: b.replace(b"\n", b"")), max_size=8)


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(cut % (len(data) + 1) for cut in cuts)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


@given(bodies=line_bodies, cuts=st.lists(st.integers(min_value=0), max_size=20), last_newline=st.booleans())
def test_lines_are_the_same_however_the_stream_is_cut(
    bodies: list[bytes], cuts: list[int], last_newline: bool
) -> None:
    data = b"\n".join(bodies) + (b"\n" if last_newline and bodies else b"")
    splitter = LineSplitter(LIMIT)
    got: list[bytes | OverlongLine] = []
    for chunk in split_at(data, cuts):
        got.extend(splitter.feed(chunk))
    got.extend(splitter.end())

    expected: list[bytes | OverlongLine] = []
    pieces = data.split(b"\n")
    for index, body in enumerate(pieces):
        ends = index < len(pieces) - 1
        if not ends and not body:
            continue
        line = body + (b"\n" if ends else b"")
        expected.append(OverlongLine(len(line), None) if len(body) > LIMIT else line)
    assert got == expected


def test_an_overlong_line_keeps_the_id_its_head_names_and_nothing_of_it_is_held() -> None:
    splitter = LineSplitter(64)
    head = b'{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"x":"'
    got = list(splitter.feed(head + b"y" * 50))
    assert got == [] and len(splitter._line) == 0  # dropped as it comes, not held
    got = [*splitter.feed(b"y" * 1000), *splitter.feed(b'"}}\n{"id":8}\n')]
    assert got == [OverlongLine(len(head) + 1050 + 4, 7), b'{"id":8}\n']


# --- served for real ---------------------------------------------------------------------------

INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": LATEST_PROTOCOL_VERSION,
        "capabilities": {},
        "clientInfo": {"name": "t", "version": "0"},
    },
}
LIST = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
INITIALIZED = {"jsonrpc": "2.0", "method": "notifications/initialized"}


def env(**extra: str) -> dict[str, str]:
    return {"PATH": os.environ["PATH"], "NAIVE_STORE": "memory", "NAIVE_LOG_LEVEL": "WARNING", **extra}


def chat(request_id: int, model: str) -> dict[str, object]:
    arguments = {"prompt": "hello", "model": model}
    return {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "tools/call",
        "params": {"name": "naive_llm_chat", "arguments": arguments},
    }


@pytest.mark.slow
@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_file_for_stdin_and_stdout_is_served_through_a_thread_and_answered_whole(
    tmp_path: Path, loop: str
) -> None:
    """Not a pipe (a file, as `naive-mcp < requests > answers` makes): served all the same, and
    the end of the file waits for every request's answer, a chat call's included."""
    requests = tmp_path / "requests.jsonl"
    messages = (INITIALIZE, INITIALIZED, LIST, chat(3, "google/gemini-2.5-flash"))
    requests.write_text("".join(json.dumps(message) + "\n" for message in messages))
    answers = tmp_path / "answers.jsonl"
    with requests.open("rb") as stdin, answers.open("wb") as stdout:
        completed = subprocess.run(
            [str(NAIVE_MCP)],
            stdin=stdin,
            stdout=stdout,
            stderr=subprocess.PIPE,
            env=env(NAIVE_EVENT_LOOP=loop, NAIVE_SANDBOX="true"),
            timeout=SESSION_TIMEOUT,
        )
    assert completed.returncode == 0, completed.stderr
    replies = {reply["id"]: reply for reply in map(json.loads, answers.read_text().splitlines())}
    assert sorted(replies) == [1, 2, 3]
    assert {tool["name"] for tool in replies[2]["result"]["tools"]} == TOOL_NAMES
    assert replies[3]["result"]["isError"] is False, replies[3]
    assert replies[3]["result"]["structuredContent"]["model"] == "google/gemini-2.5-flash"


@pytest.mark.slow
def test_a_client_that_closes_stdin_has_its_calls_cancelled_not_waited_for() -> None:
    """On pipes (a client's), stdin's end is MCP's shutdown: a call under way (here one whose
    upstream never answers) is cancelled, not waited for."""
    process = subprocess.Popen(
        [str(NAIVE_MCP)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env(NAIVE_SANDBOX="true"),
    )
    assert process.stdin is not None and process.stdout is not None
    for message in (INITIALIZE, INITIALIZED, chat(2, "sandbox/fail-hang")):
        process.stdin.write(json.dumps(message).encode() + b"\n")
    process.stdin.flush()
    assert json.loads(process.stdout.readline())["id"] == 1
    process.stdin.close()
    try:
        assert process.wait(SESSION_TIMEOUT) == 0  # the upstream hangs for 300 s
    finally:
        process.kill()
    last = json.loads(process.stdout.read())  # the SDK's word as it closes, where a pipe still takes it
    process.stdout.close()
    assert last["id"] == 2 and last["error"]["message"] == "Connection closed"


def test_what_is_unanswered_is_counted_by_id() -> None:
    unanswered = Unanswered()

    def waiting() -> dict[int | str, int]:
        return dict(unanswered._waiting)

    for line in (
        json.dumps(LIST),
        json.dumps({**LIST, "id": "2"}),  # a string id is another id
        json.dumps(LIST),  # the same id twice: two answers awaited
        json.dumps(INITIALIZED),  # a notification: nothing to answer
        json.dumps({**LIST, "id": True}),  # not an id JSON-RPC allows
        json.dumps({**LIST, "id": [1]}),
        "not json",
        "[1, 2]",
    ):
        unanswered.asked(line)
    assert waiting() == {2: 2, "2": 1}
    unanswered.answered(json.dumps({"jsonrpc": "2.0", "id": 2, "result": {}}))
    unanswered.answered(json.dumps({"jsonrpc": "2.0", "id": 9, "error": {}}))  # never asked
    unanswered.answered(json.dumps({"jsonrpc": "2.0", "id": "2", "method": "ping"}))  # a request of ours
    assert waiting() == {2: 1, "2": 1}
    unanswered.asked(
        json.dumps({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": "2"}})
    )
    unanswered.asked(json.dumps({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": 5}))
    assert waiting() == {2: 1} and not unanswered._none.is_set()
    unanswered.answered(json.dumps({"jsonrpc": "2.0", "id": 2, "result": {}}))
    assert waiting() == {} and unanswered._none.is_set()


@pytest.mark.slow
def test_the_pipes_are_left_blocking_as_they_were_found(tmp_path: Path) -> None:
    """asyncio makes the pipes it serves non-blocking; the file descriptions outlive the server
    (here this process holds the read end of stdin's pipe too), so they are put back."""
    read_end, write_end = os.pipe()
    try:
        process = subprocess.Popen(
            [str(NAIVE_MCP)], stdin=read_end, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env()
        )
        with os.fdopen(write_end, "wb") as requests:
            requests.write(json.dumps(INITIALIZE).encode() + b"\n")
            requests.flush()
            assert process.stdout is not None
            assert json.loads(process.stdout.readline())["id"] == 1
        assert process.wait(SESSION_TIMEOUT) == 0
        process.stdout.close()
        assert os.get_blocking(read_end)
    finally:
        os.close(read_end)


STRAY_SERVER = textwrap.dedent(
    """
    import os, sys
    import anyio
    from mcp.server.mcpserver import MCPServer
    from naive_mcp.stdio import serve_stdio

    server = MCPServer("stray")

    @server.tool()
    def shout(text: str) -> str:
        print("printed: " + text)
        sys.stdout.flush()
        os.write(1, b"written to fd 1\\n")
        return text

    anyio.run(serve_stdio, server, 1 << 20)
    """
)


@pytest.mark.slow
@pytest.mark.anyio
async def test_stray_output_goes_to_stderr_never_onto_the_protocol(tmp_path: Path) -> None:
    script = tmp_path / "stray.py"
    script.write_text(STRAY_SERVER)
    errors = tmp_path / "stderr"
    with errors.open("w") as errlog:
        params = StdioServerParameters(command=sys.executable, args=[str(script)], env=env())
        async with Client(stdio_client(params, errlog=errlog)) as client:
            result = await client.call_tool("shout", {"text": "hello"})
            again = await client.call_tool("shout", {"text": "again"})
    assert [block.text for block in result.content if isinstance(block, TextContent)] == ["hello"]
    assert not again.is_error
    logged = errors.read_text()
    assert "printed: hello" in logged and "written to fd 1" in logged


# --- the event loop ----------------------------------------------------------------------------


def test_uvloop_is_used_when_installed_unless_asyncio_is_chosen(monkeypatch: pytest.MonkeyPatch) -> None:
    assert event_loop.uses_uvloop("auto") is True  # the dev extras install it
    assert event_loop.uses_uvloop("uvloop") is True
    assert event_loop.uses_uvloop("asyncio") is False
    monkeypatch.setattr(event_loop.importlib.util, "find_spec", lambda name: None)
    assert event_loop.uses_uvloop("auto") is False  # never required
    with pytest.raises(ConfigurationError, match=r"install naive-mcp\[fast\]"):
        event_loop.uses_uvloop("uvloop")


def test_uvloop_asked_for_and_missing_stops_startup_naming_the_fix(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(event_loop.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setenv("NAIVE_STORE", "memory")
    with pytest.raises(SystemExit) as exited:
        cli.main(["--event-loop", "uvloop"])
    assert exited.value.code == 2
    assert (
        "naive-mcp: bad setting: NAIVE_EVENT_LOOP=uvloop, but uvloop is not installed"
        in capsys.readouterr().err
    )
