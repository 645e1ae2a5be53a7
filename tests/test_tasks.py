"""MCP tasks (2025-11-25) through the Python SDK's client in memory: the capability, taskSupport in
tools/list, a task-augmented chat, its status, result and cancel, and every bad value. The
2026-07-28 tasks extension: tests/test_tasks_extension.py.

The TypeScript SDK's proofs over stdio and HTTP are tests/test_tasks_interop.py. The Python client validates a `tools/call` answer as a `CallToolResult`, so a
task-augmented call goes through its dispatcher's raw send (`_raw`, an SDK internal).
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import mcp_types
import pytest
from mcp import Client
from mcp.client.context import ClientRequestContext
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS, METHOD_NOT_FOUND, ListRootsResult, Root
from mcp_types.methods import CLIENT_REQUESTS, SERVER_RESULTS, serialize_server_result
from pydantic import FileUrl, ValidationError

from naive_mcp.sandbox import RunningSandbox
from naive_mcp.server import create_server
from naive_mcp.settings import Settings
from naive_mcp.tasks import RELATED_TASK, TASKS_VERSION
from tests.conftest import DEFAULT_MODEL, make_settings
from tests.helpers import raw_request, settled_as, task_until

pytestmark = pytest.mark.anyio

WAIT = 60  # generous: a bound, never a pace


async def _raw(client: Client, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    return await raw_request(client, method, params)


@pytest.fixture
async def tasks_client(settings: Settings) -> AsyncIterator[Client]:
    async with Client(create_server(settings), mode="legacy") as client:
        yield client


def chat(prompt: str, model: str | None = None, **task: Any) -> dict[str, Any]:
    arguments = {"prompt": prompt, **({"model": model} if model else {})}
    return {"name": "naive_llm_chat", "arguments": arguments, "task": task}


async def _until(client: Client, task_id: str, done: Any) -> dict[str, Any]:
    return await task_until(functools.partial(_raw, client), task_id, done, wait=WAIT)


async def test_a_2025_11_25_client_sees_the_tasks_capability_and_task_support_on_chat_and_compare(
    tasks_client: Client,
) -> None:
    assert tasks_client.protocol_version == TASKS_VERSION
    capabilities = tasks_client.session.server_capabilities
    assert capabilities is not None and capabilities.tasks is not None
    assert capabilities.tasks.model_dump(by_alias=True, exclude_none=True) == {
        "list": {},
        "cancel": {},
        "requests": {"tools": {"call": {}}},
    }
    assert capabilities.extensions is None, "the 2026-07-28 tasks extension is not named to this client"
    listing = await _raw(tasks_client, "tools/list")
    support = {tool["name"]: tool.get("execution") for tool in listing["tools"]}
    assert support.pop("naive_llm_chat") == {"taskSupport": "optional"}
    assert support.pop("naive_llm_compare") == {"taskSupport": "optional"}
    assert set(support.values()) == {None}


async def test_a_task_answers_at_once_and_its_result_is_the_plain_calls(
    tasks_client: Client, client: Client
) -> None:
    created = await _raw(tasks_client, "tools/call", chat("as a task"))
    task = created["task"]
    assert task["status"] == "working"
    assert task["ttl"] > 0 and task["pollInterval"] > 0
    assert task["createdAt"].endswith("Z")

    result = await _raw(tasks_client, "tasks/result", {"taskId": task["taskId"]})  # waits for the end
    plain = (await client.call_tool("naive_llm_chat", {"prompt": "as a task"})).model_dump(
        mode="json", by_alias=True, exclude_none=True
    )
    assert result["_meta"][RELATED_TASK] == {"taskId": task["taskId"]}
    assert (
        result["content"][0]
        == plain["content"][0]
        == {
            "type": "text",
            "text": f"Sandbox reply from {DEFAULT_MODEL}: as a task",
        }
    )
    assert (
        result["isError"] is False
        and result["structuredContent"]["text"] == plain["structuredContent"]["text"]
    )
    done = await _raw(tasks_client, "tasks/get", {"taskId": task["taskId"]})
    assert done["status"] == "completed"
    listed = await _raw(tasks_client, "tasks/list")
    assert [listed_task["taskId"] for listed_task in listed["tasks"]] == [task["taskId"]]


async def test_status_says_the_answer_so_far_and_cancel_stops_the_upstream_call(
    tasks_client: Client, sandbox: RunningSandbox, api_key: str
) -> None:
    created = await _raw(tasks_client, "tools/call", chat("a long one", "sandbox/slow"))
    task_id = created["task"]["taskId"]
    answering = await _until(
        tasks_client, task_id, lambda task: "Sandbox reply" in (task.get("statusMessage") or "")
    )
    assert answering["status"] == "working"

    cancelled = await _raw(tasks_client, "tasks/cancel", {"taskId": task_id})

    assert cancelled["status"] == "cancelled"
    (record,) = [r for r in sandbox.sandbox.ledger.requests(api_key) if r.path.endswith("/chat/completions")]
    with anyio.fail_after(WAIT):
        await anyio.to_thread.run_sync(record.stream_ended.wait)
    assert record.disconnected_at is not None, "the upstream saw the call go away"
    settled = await settled_as(tasks_client, "cancelled")
    assert settled["calls"] == 1 and settled["completion_tokens"] > 0
    with pytest.raises(MCPError) as again:
        await _raw(tasks_client, "tasks/cancel", {"taskId": task_id})
    assert again.value.error.code == INVALID_PARAMS
    assert "already cancelled" in again.value.error.message


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        ({"prompt": "x", "model": "sandbox/fail-insufficient-credits"}, "insufficient_credits (HTTP 402)"),
        ({"prompt": "x", "temperature": 99}, "temperature"),
    ],
)
async def test_a_call_that_fails_makes_a_failed_task_whose_result_is_the_plain_calls_error(
    tasks_client: Client, client: Client, arguments: dict[str, Any], error: str
) -> None:
    created = await _raw(
        tasks_client, "tools/call", {"name": "naive_llm_chat", "arguments": arguments, "task": {}}
    )
    result = await _raw(tasks_client, "tasks/result", {"taskId": created["task"]["taskId"]})
    plain = await client.call_tool("naive_llm_chat", arguments)

    assert (await _raw(tasks_client, "tasks/get", {"taskId": created["task"]["taskId"]}))[
        "status"
    ] == "failed"
    assert result["isError"] is True and plain.is_error
    assert error in result["content"][0]["text"]
    assert result["content"][0]["text"] == plain.model_dump(mode="json")["content"][0]["text"]


@pytest.mark.parametrize("method", ["tasks/get", "tasks/result", "tasks/cancel"])
@pytest.mark.parametrize("task_id", ["job_nobodys", "", "x" * 500, "job\n1"])
async def test_an_unknown_or_malformed_task_id_is_invalid_params(
    tasks_client: Client, method: str, task_id: str
) -> None:
    with pytest.raises(MCPError) as refused:
        await _raw(tasks_client, method, {"taskId": task_id})
    assert refused.value.error.code == INVALID_PARAMS
    assert "job_nobodys" in refused.value.error.message or "taskId" in refused.value.error.message


@pytest.mark.parametrize("ttl", [-1, "600000", True, 1.5])
async def test_a_bad_ttl_is_refused_by_name_and_nothing_is_sent(
    tasks_client: Client, sandbox: RunningSandbox, api_key: str, ttl: Any
) -> None:
    with pytest.raises(MCPError) as refused:
        await _raw(tasks_client, "tools/call", chat("never sent", ttl=ttl))
    assert refused.value.error.code == INVALID_PARAMS
    assert "task.ttl" in refused.value.error.message
    assert sandbox.sandbox.ledger.requests(api_key) == []


async def test_a_task_past_the_callers_job_limit_is_refused_by_name_and_nothing_is_sent(
    sandbox: RunningSandbox, api_key: str
) -> None:
    async with Client(
        create_server(make_settings(sandbox, api_key, jobs_per_caller=1)), mode="legacy"
    ) as client:
        first = await _raw(client, "tools/call", chat("one", "sandbox/slow"))
        with pytest.raises(MCPError) as refused:
            await _raw(client, "tools/call", chat("two", "sandbox/slow"))
        await _raw(client, "tasks/cancel", {"taskId": first["task"]["taskId"]})
    assert refused.value.error.code == INVALID_PARAMS
    assert "NAIVE_JOBS_PER_CALLER" in refused.value.error.message
    assert "Nothing was sent upstream" in refused.value.error.message
    prompts = [r.body["messages"][-1]["content"] for r in sandbox.sandbox.ledger.requests(api_key) if r.body]
    assert "two" not in prompts


async def test_a_huge_ttl_is_cut_to_the_servers_own(tasks_client: Client) -> None:
    created = await _raw(tasks_client, "tools/call", chat("kept long", ttl=10**15))
    assert 0 < created["task"]["ttl"] < 10**15
    await _raw(tasks_client, "tasks/result", {"taskId": created["task"]["taskId"]})


@pytest.mark.parametrize("tool", ["naive_llm_models", "naive_run_primitive", "no_such_tool"])
async def test_a_task_for_a_tool_without_task_support_is_method_not_found(
    tasks_client: Client, tool: str
) -> None:
    with pytest.raises(MCPError) as refused:
        await _raw(tasks_client, "tools/call", {"name": tool, "arguments": {}, "task": {}})
    assert refused.value.error.code == METHOD_NOT_FOUND
    assert "call it without `task`" in refused.value.error.message


async def test_a_plain_call_on_a_tasks_connection_is_as_before(tasks_client: Client) -> None:
    result = await tasks_client.call_tool("naive_llm_chat", {"prompt": "plain"})
    assert result.content[0] == mcp_types.TextContent(
        type="text", text=f"Sandbox reply from {DEFAULT_MODEL}: plain"
    )
    assert (await _raw(tasks_client, "tasks/list"))["tasks"] == []


# --- what naive_mcp.tasks relies on in the SDK (mcp 2.3); a change here means rework there ---


def test_the_sdk_routes_no_tasks_methods_itself() -> None:
    for method in ("tasks/get", "tasks/result", "tasks/list", "tasks/cancel"):
        assert (method, TASKS_VERSION) not in CLIENT_REQUESTS


def test_the_sdks_tools_call_result_surface_refuses_a_create_task_result() -> None:
    """Why a task-augmented call is answered in middleware, before that surface."""
    assert ("tools/call", TASKS_VERSION) in SERVER_RESULTS
    with pytest.raises(ValidationError):
        serialize_server_result("tools/call", TASKS_VERSION, {"task": {"taskId": "t", "status": "working"}})


async def test_a_task_reads_files_under_the_client_s_roots_asked_after_its_request_ended(
    sandbox: RunningSandbox, api_key: str, tmp_path: Path
) -> None:
    (tmp_path / "NOTES.md").write_text("the notes\n")

    async def list_roots(context: ClientRequestContext) -> ListRootsResult:
        return ListRootsResult(roots=[Root(uri=FileUrl(tmp_path.as_uri()), name="project")])

    settings = make_settings(sandbox, api_key)
    async with Client(create_server(settings), list_roots_callback=list_roots, mode="legacy") as client:
        created = await _raw(
            client,
            "tools/call",
            {"name": "naive_llm_chat", "arguments": {"prompt": "q", "files": ["NOTES.md"]}, "task": {}},
        )
        result = await _raw(client, "tasks/result", {"taskId": created["task"]["taskId"]})

    assert result["isError"] is False, result["content"][0]["text"]
    assert result["structuredContent"]["files"]["included"] == [{"path": "NOTES.md", "bytes": 10}]
