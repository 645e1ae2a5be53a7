"""MCP tasks as the TypeScript SDK's client sees them (tests/interop/tasks_client.mjs), over stdio
and over streamable HTTP: a chat whose model is silent for longer than the client's own request
timeout times out as a plain call and completes as a task; a task cancelled mid-answer stops the
upstream call; another tenant can neither see nor cancel a task.

The same for the 2026-07-28 tasks extension, as the SDK v2 client with the extension's own client
library (@modelcontextprotocol/ext-tasks) drives it over streamable HTTP
(tests/interop/ext_tasks_client.mjs).

The server is naive-mcp itself (`python -m naive_mcp`).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from naive_mcp.sandbox import RunningSandbox, SandboxConfig, serve_in_thread
from tests.conftest import upstream_env
from tests.outside_clients import INTEROP, node
from tests.remote import http_server

pytestmark = [pytest.mark.interop, pytest.mark.slow]

ROOT = Path(__file__).parent.parent
SERVER = (sys.executable, "-m", "naive_mcp")
TASKS_CLIENT = INTEROP / "tasks_client.mjs"
EXT_TASKS_CLIENT = INTEROP / "ext_tasks_client.mjs"
CLIENT_TIMEOUT_MS = 2000  # the TypeScript client's own limit on each request
THINK_SECONDS = 3.5  # the thinking model's silence: longer than that limit
ALICE, BOB = "tasks-alice-token", "tasks-bob-token"
TOKENS = {ALICE: {"user_id": "usr_alice"}, BOB: {"user_id": "usr_bob"}}


@pytest.fixture(scope="module")
def thinking() -> Iterator[RunningSandbox]:
    """An upstream whose `sandbox/think` is silent (keep-alives only) for THINK_SECONDS."""
    with serve_in_thread(SandboxConfig(think_seconds=THINK_SECONDS, keepalive_interval=0.2)) as running:
        yield running


def run_plan(
    home: Path, clients: dict[str, Any], steps: list[dict[str, Any]], **more: Any
) -> list[dict[str, Any]]:
    """Run the TypeScript client's plan (ext_tasks_client.mjs's with `url`); one JSON object per
    step."""
    plan = {"clients": clients, "timeoutMs": CLIENT_TIMEOUT_MS, "steps": steps, **more}
    script = EXT_TASKS_CLIENT if "url" in more else TASKS_CLIENT
    run = node(home, "node", str(script), json.dumps(plan))
    assert run.returncode == 0, f"stdout: {run.stdout}\nstderr: {run.stderr[-4000:]}"
    lines = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == len(steps), run.stdout
    return lines


def stdio_client(env: dict[str, str]) -> dict[str, Any]:
    command, *args = SERVER
    return {
        "stdio": {
            "command": command,
            "args": args,
            "cwd": str(ROOT),
            "env": {"PATH": os.environ["PATH"], **env},
        }
    }


def connect(transport: str, sandbox: RunningSandbox, api_key: str, home: Path) -> Iterator[dict[str, Any]]:
    """The clients a plan connects, by name: `a` (alice) and, over HTTP, `b` (bob). `transport`:
    stdio, streamable-http, or stateless (streamable HTTP without sessions)."""
    env = upstream_env(sandbox, api_key)
    if transport == "stdio":
        yield {"a": stdio_client(env)}
        return
    env["NAIVE_AUTH_TOKENS"] = json.dumps(TOKENS)
    if transport == "stateless":
        env["NAIVE_STATELESS"] = "true"
    with http_server(home, env, command=SERVER) as server:
        yield {
            "a": {"http": {"url": server.url, "bearer": ALICE}},
            "b": {"http": {"url": server.url, "bearer": BOB}},
        }


def think(prompt: str) -> dict[str, Any]:
    return {"tool": "naive_llm_chat", "arguments": {"prompt": prompt, "model": "sandbox/think"}}


@pytest.mark.parametrize("transport", ["stdio", "streamable-http", "stateless"])
def test_a_chat_silent_past_the_clients_timeout_times_out_plain_and_completes_as_a_task(
    thinking: RunningSandbox, api_key: str, tmp_path: Path, transport: str
) -> None:
    for clients in connect(transport, thinking, api_key, tmp_path):
        tools, plain, streamed = run_plan(
            tmp_path,
            clients,
            [
                {"client": "a", "do": "tools"},
                {"client": "a", "do": "call", **think("plain")},
                {"client": "a", "do": "stream", **think("as a task")},
            ],
        )

    execution = {tool["name"]: tool["execution"] for tool in tools["tools"]}
    assert execution["naive_llm_chat"] == execution["naive_llm_compare"] == {"taskSupport": "optional"}
    assert execution["naive_llm_models"] is None
    assert plain["error"]["code"] == -32001, plain  # the TypeScript SDK's RequestTimeout
    messages = streamed["messages"]
    assert messages[0]["type"] == "taskCreated"
    assert {message["type"] for message in messages[1:-1]} == {"taskStatus"}
    final = messages[-1]
    assert final["type"] == "result", final
    assert final["result"]["content"][0]["text"] == "Sandbox reply from sandbox/think: as a task"
    assert final["result"]["structuredContent"]["model"] == "sandbox/think"


@pytest.mark.parametrize("transport", ["stdio", "streamable-http"])
def test_a_task_cancelled_mid_answer_stops_the_upstream_call(
    sandbox: RunningSandbox, api_key: str, tmp_path: Path, transport: str
) -> None:
    slow = {"tool": "naive_llm_chat", "arguments": {"prompt": "a long one", "model": "sandbox/slow"}}
    for clients in connect(transport, sandbox, api_key, tmp_path):
        started, answering, cancelled, after = run_plan(
            tmp_path,
            clients,
            [
                {"client": "a", "do": "start", **slow},
                {"client": "a", "do": "until", "messageContains": "Sandbox reply"},
                {"client": "a", "do": "cancel"},
                {"client": "a", "do": "get"},
            ],
        )

    assert started["created"]["task"]["status"] == "working"
    assert answering["task"]["status"] == "working" and "missed" not in answering
    assert cancelled["task"]["status"] == after["task"]["status"] == "cancelled"
    (record,) = [r for r in sandbox.sandbox.ledger.requests(api_key) if r.path.endswith("/chat/completions")]
    assert record.stream_ended.wait(60)
    assert record.disconnected_at is not None, "the upstream saw the call go away"


def test_another_tenant_can_neither_see_nor_cancel_a_task(
    sandbox: RunningSandbox, api_key: str, tmp_path: Path
) -> None:
    slow = {"tool": "naive_llm_chat", "arguments": {"prompt": "alice's", "model": "sandbox/slow"}}
    for clients in connect("streamable-http", sandbox, api_key, tmp_path):
        results = run_plan(
            tmp_path,
            clients,
            [
                {"client": "a", "do": "start", **slow},
                {"client": "b", "do": "list"},
                {"client": "b", "do": "get"},
                {"client": "b", "do": "cancel"},
                {"client": "b", "do": "get", "taskId": "job_nobodys"},
                {"client": "a", "do": "list"},
                {"client": "a", "do": "cancel"},
                {
                    "client": "a",
                    "do": "raw",
                    "method": "tools/call",
                    "params": {"name": "naive_llm_models", "arguments": {}, "task": {}},
                },
                {
                    "client": "a",
                    "do": "raw",
                    "method": "tools/call",
                    "params": {**slow, "name": "naive_llm_chat", "task": {"ttl": -1}},
                },
            ],
        )
    started, bob_lists, bob_gets, bob_cancels, unknown, alice_lists, alice_cancels, no_support, bad_ttl = (
        results
    )

    task_id = started["created"]["task"]["taskId"]
    assert bob_lists["tasks"] == []
    for refused in (bob_gets, bob_cancels, unknown):
        assert refused["error"]["code"] == -32602
    # Another's task reads as an unknown one: the same words, but for the id.
    assert bob_gets["error"]["message"].replace(task_id, "ID") == unknown["error"]["message"].replace(
        "job_nobodys", "ID"
    )
    assert [task["taskId"] for task in alice_lists["tasks"]] == [task_id]
    assert alice_cancels["task"]["status"] == "cancelled"
    assert no_support["error"]["code"] == -32601
    assert bad_ttl["error"]["code"] == -32602 and "task.ttl" in bad_ttl["error"]["message"]


# --- the 2026-07-28 tasks extension, through @modelcontextprotocol/ext-tasks ----------------------


ANSWER_WAIT = 3.0  # NAIVE_TASK_ANSWER_WAIT: under THINK_SECONDS, so a thinking chat is a task


def ext_connect(transport: str, sandbox: RunningSandbox, api_key: str, home: Path) -> Iterator[str]:
    """naive-mcp over streamable HTTP (`stateless`: without sessions), alice's and bob's tokens."""
    env = {
        **upstream_env(sandbox, api_key),
        "NAIVE_AUTH_TOKENS": json.dumps(TOKENS),
        "NAIVE_TASK_ANSWER_WAIT": str(ANSWER_WAIT),
    }
    if transport == "stateless":
        env["NAIVE_STATELESS"] = "true"
    with http_server(home, env, command=SERVER) as server:
        yield server.url


# `p`: alice again, from a client that does not declare the extension (it gets no task).
EXT_CLIENTS = {"a": {"bearer": ALICE}, "b": {"bearer": BOB}, "p": {"bearer": ALICE, "tasks": False}}


@pytest.mark.parametrize("transport", ["streamable-http", "stateless"])
def test_the_extension_client_gets_a_quick_chat_at_once_and_a_silent_one_as_a_task(
    thinking: RunningSandbox, api_key: str, tmp_path: Path, transport: str
) -> None:
    quick = {"tool": "naive_llm_chat", "arguments": {"prompt": "quick"}}
    for url in ext_connect(transport, thinking, api_key, tmp_path):
        discovered, _, at_once, plain, as_task = run_plan(
            tmp_path,
            EXT_CLIENTS,
            [
                {"client": "a", "do": "capabilities"},
                {"client": "p", "do": "plain", **quick},  # the server warmed up: the next is quick
                {"client": "a", "do": "call", **quick},
                {"client": "p", "do": "plain", **think("plain")},
                {"client": "a", "do": "call", **think("as a task")},
            ],
            url=url,
        )

    assert discovered["protocol"] == "2026-07-28"
    assert discovered["capabilities"]["extensions"] == {"io.modelcontextprotocol/tasks": {}}
    assert at_once["kind"] == "immediate" and at_once["outcome"]["status"] == "completed"
    assert at_once["outcome"]["result"]["content"][0]["text"].endswith(": quick")
    assert plain["error"]["code"] == "REQUEST_TIMEOUT", plain  # the SDK v2 client gave up
    assert as_task["kind"] == "task", as_task
    assert as_task["outcome"]["status"] == "completed", as_task
    result = as_task["outcome"]["result"]
    assert result["content"][0]["text"] == "Sandbox reply from sandbox/think: as a task"
    assert result["structuredContent"]["model"] == "sandbox/think"


def test_the_extension_client_cancels_a_task_mid_answer_and_another_tenant_cannot_touch_it(
    sandbox: RunningSandbox, api_key: str, tmp_path: Path
) -> None:
    slow = {"tool": "naive_llm_chat", "arguments": {"prompt": "alice's", "model": "sandbox/slow"}}
    for url in ext_connect("streamable-http", sandbox, api_key, tmp_path):
        started, bob_gets, bob_cancels, unknown, alice_gets, cancelled, settled, after = run_plan(
            tmp_path,
            EXT_CLIENTS,
            [
                {"client": "a", "do": "start", **slow},
                {"client": "b", "do": "get"},
                {"client": "b", "do": "cancelTask"},
                {"client": "b", "do": "get", "taskId": "job_nobodys"},
                {"client": "a", "do": "get"},
                {"client": "a", "do": "cancel"},
                {"client": "a", "do": "settle"},
                {"client": "a", "do": "get"},
            ],
            url=url,
        )

    task_id = started["taskId"]
    assert started["kind"] == "task" and task_id
    for refused in (bob_gets, bob_cancels, unknown):
        assert refused["answer"]["kind"] == "error" and refused["answer"]["error"]["code"] == -32602
    # Another's task reads as an unknown one: the same words, but for the id.
    assert bob_gets["answer"]["error"]["message"].replace(task_id, "ID") == unknown["answer"]["error"][
        "message"
    ].replace("job_nobodys", "ID")
    assert alice_gets["answer"]["result"]["status"] == "working", "bob's cancel did not reach it"
    assert cancelled == {"step": 5, "do": "cancel", "cancelled": True}
    assert settled["outcome"]["status"] == "cancelled"
    assert after["answer"]["result"]["status"] == "cancelled"
    (record,) = [r for r in sandbox.sandbox.ledger.requests(api_key) if r.path.endswith("/chat/completions")]
    assert record.stream_ended.wait(60)
    assert record.disconnected_at is not None, "the upstream saw the call go away"
