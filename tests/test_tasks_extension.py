"""The 2026-07-28 tasks extension (`io.modelcontextprotocol/tasks`, SEP-2663) through the Python
SDK's client in memory: the client declares the extension in each request's capabilities (the
SDK's `advertise`), the server decides. A chat that ends within NAIVE_TASK_ANSWER_WAIT is answered
inline; a longer one is a task, read with `tasks/get` (the result inline at the end), stopped with
`tasks/cancel`; `tasks/update` is acknowledged. A client that does not declare it gets no task.

The TypeScript ext-tasks client's proof over HTTP is in tests/test_tasks_interop.py.
"""

from __future__ import annotations

import functools
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import mcp_types
import pytest
from mcp import Client
from mcp.client.extension import advertise
from mcp.shared.exceptions import MCPError
from mcp_types import (
    CLIENT_CAPABILITIES_META_KEY,
    CLIENT_INFO_META_KEY,
    INTERNAL_ERROR,
    INVALID_PARAMS,
    MISSING_REQUIRED_CLIENT_CAPABILITY,
    PROTOCOL_VERSION_META_KEY,
)

from naive_mcp.jobs import JobView
from naive_mcp.sandbox import RunningSandbox, SandboxConfig, serve_in_thread
from naive_mcp.server import create_server
from naive_mcp.settings import Settings
from naive_mcp.tasks import EXTENSION_VERSION, TASKS_EXTENSION, detailed_task
from tests.conftest import DEFAULT_MODEL, make_settings
from tests.helpers import raw_request, settled_as, task_until

pytestmark = pytest.mark.anyio

WAIT = 60  # generous: a bound, never a pace


async def _raw(
    client: Client, method: str, params: dict[str, Any] | None = None, *, declared: bool = True
) -> dict[str, Any]:
    """One request as sent and answered on the wire, framed as a 2026-07-28 client frames it, its
    capabilities declaring the tasks extension or not."""
    meta = {
        PROTOCOL_VERSION_META_KEY: EXTENSION_VERSION,
        CLIENT_INFO_META_KEY: {"name": "test", "version": "1"},
        CLIENT_CAPABILITIES_META_KEY: {"extensions": {TASKS_EXTENSION: {}}} if declared else {},
    }
    return await raw_request(client, method, {**(params or {}), "_meta": meta})


def chat(prompt: str, model: str | None = None) -> dict[str, Any]:
    return {"name": "naive_llm_chat", "arguments": {"prompt": prompt, **({"model": model} if model else {})}}


@pytest.fixture
async def modern(settings: Settings) -> AsyncIterator[Client]:
    async with Client(create_server(settings), extensions=[advertise(TASKS_EXTENSION)]) as client:
        assert client.protocol_version == EXTENSION_VERSION
        yield client


@pytest.fixture
async def patient(sandbox: RunningSandbox, api_key: str) -> AsyncIterator[Client]:
    """`modern`, on a server that waits a minute before a call becomes a task: a quick one is
    answered inline however busy the machine is."""
    settings = make_settings(sandbox, api_key, task_answer_wait=60)
    async with Client(create_server(settings), extensions=[advertise(TASKS_EXTENSION)]) as client:
        yield client


@pytest.fixture(scope="module")
def steady() -> Iterator[RunningSandbox]:
    """`sandbox/slow` answering in 1.33 s of pauses or more: past the inline wait (1 s), then done."""
    with serve_in_thread(SandboxConfig(slow_chunk_delay=0.05, slow_words=80)) as running:
        yield running


async def _until(client: Client, task_id: str, done: Any) -> dict[str, Any]:
    return await task_until(functools.partial(_raw, client), task_id, done, wait=WAIT)


async def test_the_extension_is_advertised_in_discover_and_no_tool_needs_a_task(modern: Client) -> None:
    discovered = await modern.session.send_request(
        mcp_types.DiscoverRequest(params=mcp_types.RequestParams()), mcp_types.DiscoverResult
    )
    assert discovered.capabilities.extensions == {TASKS_EXTENSION: {}}
    assert discovered.capabilities.tasks is None, "2025-11-25's core capability is not this revision's"
    assert all(tool.execution is None for tool in (await modern.list_tools()).tools)


async def test_a_quick_chat_is_answered_inline_as_a_plain_call(patient: Client, client: Client) -> None:
    answer = await _raw(patient, "tools/call", chat("quick"))
    plain = (await client.call_tool("naive_llm_chat", {"prompt": "quick"})).model_dump(
        mode="json", by_alias=True, exclude_none=True
    )
    assert answer["resultType"] == "complete"
    assert (
        answer["content"][0]
        == plain["content"][0]
        == {
            "type": "text",
            "text": f"Sandbox reply from {DEFAULT_MODEL}: quick",
        }
    )
    assert answer["structuredContent"]["text"] == plain["structuredContent"]["text"]


@pytest.mark.slow  # over a second: a paced model answering
async def test_a_long_chat_is_a_task_whose_result_comes_inline_in_tasks_get(
    steady: RunningSandbox, api_key: str
) -> None:
    settings = make_settings(steady, api_key)
    async with Client(create_server(settings), extensions=[advertise(TASKS_EXTENSION)]) as modern:
        created = await _raw(modern, "tools/call", chat("long", "sandbox/slow"))
        assert created["resultType"] == "task" and created["status"] == "working"
        assert created["ttlMs"] > 0 and created["pollIntervalMs"] > 0
        assert created["createdAt"].endswith("Z") and created["lastUpdatedAt"].endswith("Z")
        task_id = created["taskId"]
        done = await _until(modern, task_id, lambda task: task["status"] != "working")
        updated = await _raw(modern, "tasks/update", {"taskId": task_id, "inputResponses": {"k": {}}})
        acknowledged = await _raw(modern, "tasks/cancel", {"taskId": task_id})  # ended: stays so
        again = await _raw(modern, "tasks/get", {"taskId": task_id})
    async with Client(create_server(settings)) as plain_client:
        plain = await plain_client.call_tool("naive_llm_chat", {"prompt": "long", "model": "sandbox/slow"})

    assert done["resultType"] == "complete" and done["status"] == "completed"
    result = done["result"]
    assert result["isError"] is False
    assert result["content"][0]["text"] == plain.model_dump(mode="json")["content"][0]["text"]
    assert result["content"][0]["text"].startswith("Sandbox reply from sandbox/slow")
    assert updated == {"resultType": "complete", "_meta": updated["_meta"]}
    assert acknowledged["resultType"] == "complete" and again["status"] == "completed"


@pytest.mark.slow  # over a second: a paced model answering
async def test_status_says_the_answer_so_far_and_cancel_stops_the_upstream_call(
    modern: Client, sandbox: RunningSandbox, api_key: str
) -> None:
    created = await _raw(modern, "tools/call", chat("a long one", "sandbox/slow"))
    task_id = created["taskId"]
    answering = await _until(
        modern, task_id, lambda task: "Sandbox reply" in (task.get("statusMessage") or "")
    )
    assert answering["status"] == "working" and "result" not in answering

    acknowledged = await _raw(modern, "tasks/cancel", {"taskId": task_id})
    cancelled = await _until(modern, task_id, lambda task: task["status"] != "working")

    assert acknowledged["resultType"] == "complete"
    assert cancelled["status"] == "cancelled" and "result" not in cancelled
    (record,) = [r for r in sandbox.sandbox.ledger.requests(api_key) if r.path.endswith("/chat/completions")]
    with anyio.fail_after(WAIT):
        await anyio.to_thread.run_sync(record.stream_ended.wait)
    assert record.disconnected_at is not None, "the upstream saw the call go away"
    settled = await settled_as(modern, "cancelled")
    assert settled["calls"] == 1 and settled["completion_tokens"] > 0


async def test_a_tool_error_is_completed_with_the_plain_calls_error(patient: Client, client: Client) -> None:
    arguments = {"prompt": "x", "model": "sandbox/fail-insufficient-credits"}
    answer = await _raw(patient, "tools/call", {"name": "naive_llm_chat", "arguments": arguments})
    plain = await client.call_tool("naive_llm_chat", arguments)
    assert answer["resultType"] == "complete" and answer["isError"] is True
    assert answer["content"][0]["text"] == plain.model_dump(mode="json")["content"][0]["text"]


@pytest.mark.slow  # over a second: a paced model answering
async def test_a_client_that_does_not_declare_the_extension_gets_no_task(
    steady: RunningSandbox, api_key: str
) -> None:
    async with Client(create_server(make_settings(steady, api_key))) as undeclared:
        answer = await _raw(undeclared, "tools/call", chat("plain", "sandbox/slow"), declared=False)
        with pytest.raises(MCPError) as refused:
            await _raw(undeclared, "tasks/get", {"taskId": "job_nobodys"}, declared=False)
    assert answer["resultType"] == "complete" and answer["isError"] is False, "answered whole, however long"
    assert refused.value.error.code == MISSING_REQUIRED_CLIENT_CAPABILITY
    assert refused.value.error.data == {"requiredCapabilities": {"extensions": {TASKS_EXTENSION: {}}}}


@pytest.mark.parametrize("method", ["tasks/get", "tasks/cancel", "tasks/update"])
@pytest.mark.parametrize("task_id", ["job_nobodys", "", "x" * 500, "job\n1"])
async def test_an_unknown_or_malformed_task_id_is_invalid_params(
    modern: Client, method: str, task_id: str
) -> None:
    params: dict[str, Any] = {"taskId": task_id}
    if method == "tasks/update":
        params["inputResponses"] = {}
    with pytest.raises(MCPError) as refused:
        await _raw(modern, method, params)
    assert refused.value.error.code == INVALID_PARAMS
    assert "job_nobodys" in refused.value.error.message or "taskId" in refused.value.error.message


@pytest.mark.parametrize("method", ["tasks/list", "tasks/result"])
async def test_the_2025_methods_are_not_this_revisions(modern: Client, method: str) -> None:
    with pytest.raises(MCPError) as refused:
        await _raw(modern, method, {"taskId": "job_x"})
    assert refused.value.error.code == mcp_types.METHOD_NOT_FOUND


def _view(**fields: Any) -> JobView:
    now = time.time()
    base: dict[str, Any] = {
        "job_id": "job_x",
        "tool": "naive_llm_chat",
        "status": "failed",
        "status_message": "The server process running this job stopped before it ended.",
        "partial_text": "half an ans",
        "created_at": now - 5,
        "updated_at": now,
        "expires_at": now + 3600,
    }
    return JobView(**(base | fields))


def test_a_job_that_ended_without_a_result_is_failed_with_an_internal_error_and_its_text() -> None:
    task = detailed_task(_view())
    assert task["status"] == "failed" and "result" not in task
    assert task["error"]["code"] == INTERNAL_ERROR
    assert "The server process running this job stopped" in task["error"]["message"]
    assert task["error"]["message"].endswith("half an ans")


def test_a_job_whose_call_ended_in_a_tool_error_is_completed_with_it() -> None:
    error = {"content": [{"type": "text", "text": "upstream said no"}], "isError": True}
    task = detailed_task(_view(result=error))
    assert task["status"] == "completed" and task["result"]["isError"] is True
    assert task["result"]["content"] == error["content"]


@pytest.mark.slow  # over a second: a paced model answering
async def test_with_no_room_for_another_job_a_call_is_served_plain(
    sandbox: RunningSandbox, api_key: str
) -> None:
    settings = make_settings(sandbox, api_key, jobs_per_caller=1)
    async with Client(create_server(settings)) as modern:
        created = await _raw(modern, "tools/call", chat("the one job", "sandbox/slow"))
        served = await _raw(modern, "tools/call", chat("no room"))
        await _raw(modern, "tasks/cancel", {"taskId": created["taskId"]})
    assert created["resultType"] == "task"
    assert served["resultType"] == "complete" and served["isError"] is False
    assert served["content"][0]["text"] == f"Sandbox reply from {DEFAULT_MODEL}: no room"
