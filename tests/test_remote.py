"""naive-mcp over HTTP, as a real subprocess on loopback: transports, security, auth, tenancy,
many clients at once, and clean shutdown."""

from __future__ import annotations

import json
import signal
import subprocess
import uuid
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp.types import CallToolResult

from naive_mcp.sandbox import RunningSandbox, SandboxConfig, serve_in_thread
from tests.conftest import DEFAULT_MODEL, NAIVE_MCP, TOOL_NAMES, upstream_env
from tests.helpers import text_of
from tests.remote import HttpServer, connect, http_server

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


def upstream(sandbox: RunningSandbox, api_key: str | None = None, **more: str) -> dict[str, str]:
    return {**upstream_env(sandbox, api_key or None), **more}


async def chat(server: HttpServer, token: str | None, prompt: str, **arguments: Any) -> CallToolResult:
    async with connect(server, token) as client:
        return await client.call_tool("naive_llm_chat", {"prompt": prompt, **arguments})


def post(server: HttpServer, headers: dict[str, str] | None = None, body: bytes = b"{}") -> httpx2.Response:
    return httpx2.post(
        server.url, content=body, headers={"Content-Type": "application/json", **(headers or {})}
    )


# --- transports ---------------------------------------------------------------------------------


@pytest.mark.parametrize("stateless", [False, True], ids=["stateful", "stateless"])
async def test_streamable_http_serves_both_protocol_eras_on_one_endpoint(
    sandbox: RunningSandbox, api_key: str, tmp_path: Path, stateless: bool
) -> None:
    flags = ["--stateless"] if stateless else []
    with http_server(tmp_path, upstream(sandbox, api_key), *flags) as server:
        versions = []
        for mode in ("auto", "legacy"):
            async with connect(server, mode=mode) as client:
                versions.append(client.protocol_version)
                assert len((await client.list_tools()).tools) == len(TOOL_NAMES)
                result = await client.call_tool("naive_llm_chat", {"prompt": f"era {mode}"})
                assert text_of(result) == f"Sandbox reply from {DEFAULT_MODEL}: era {mode}"
        assert httpx2.get(f"{server.base}/health").json() == {"status": "ok"}
    assert versions == ["2026-07-28", "2025-11-25"]


async def test_sse_transport_serves_legacy_clients(
    sandbox: RunningSandbox, api_key: str, tmp_path: Path
) -> None:
    with http_server(tmp_path, upstream(sandbox, api_key), transport="sse") as server:
        result = await chat(server, None, "over sse")
        assert httpx2.get(f"{server.base}/health").json() == {"status": "ok"}
    assert text_of(result).endswith("over sse")


async def test_path_setting_moves_the_endpoint(sandbox: RunningSandbox, api_key: str, tmp_path: Path) -> None:
    with http_server(tmp_path, upstream(sandbox, api_key), "--path", "/naive/mcp") as server:
        server.path = "/naive/mcp"
        assert not (await chat(server, None, "moved")).is_error
        assert httpx2.post(f"{server.base}/mcp", json={}).status_code == 404


# --- secure by default --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "args", "says"),
    [
        ({}, ["--host", "0.0.0.0"], "refusing to listen on 0.0.0.0 without authentication"),
        ({}, ["--host", "10.1.2.3"], "refusing to listen on 10.1.2.3 without authentication"),
        ({"NAIVE_AUTH_TOKENS": '["t0ken-for-test"]'}, ["--host", "0.0.0.0"], "needs NAIVE_ALLOWED_HOSTS"),
    ],
)
def test_refuses_to_listen_beyond_loopback_without_auth(
    env: dict[str, str], args: list[str], says: str
) -> None:
    completed = subprocess.run(
        [str(NAIVE_MCP), "--transport", "streamable-http", *args],
        env={"PATH": "/usr/bin:/bin", "NAIVE_STORE": "memory", **env},
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )
    assert completed.returncode == 2
    assert says in completed.stderr
    assert "t0ken-for-test" not in completed.stderr


async def test_binds_loopback_and_rejects_foreign_hosts_origins_and_big_bodies(
    sandbox: RunningSandbox, api_key: str, tmp_path: Path
) -> None:
    env = upstream(sandbox, api_key, NAIVE_MAX_REQUEST_BYTES="4096")
    with http_server(tmp_path, env) as server:
        port = server.base.rsplit(":", 1)[1]
        rebinding = post(server, {"Host": f"evil.example:{port}"})
        cross_site = post(server, {"Origin": "https://evil.example"})
        huge = post(server, body=b"x" * 5000)
        assert "on http://127.0.0.1:" in server.logs()
    assert rebinding.status_code == 421
    assert cross_site.status_code == 403
    assert huge.status_code == 413


# --- authentication -----------------------------------------------------------------------------


async def test_configured_tokens_are_required_and_never_logged(
    sandbox: RunningSandbox, api_key: str, tmp_path: Path
) -> None:
    token = f"team-token-{uuid.uuid4().hex}"
    env = upstream(sandbox, api_key, NAIVE_AUTH_TOKENS=json.dumps([token]), NAIVE_LOG_LEVEL="DEBUG")
    with http_server(tmp_path, env) as server:
        assert post(server).status_code == 401
        assert post(server, {"Authorization": "Bearer not-the-token"}).status_code == 401
        assert post(server, {"Authorization": f"Bearer {token}", "Host": "evil.example"}).status_code == 421
        result = await chat(server, token, "authorised")
        logs = server.logs()
    assert not result.is_error
    assert token not in logs and api_key not in logs


async def test_each_client_can_bring_its_own_naive_key(sandbox: RunningSandbox, tmp_path: Path) -> None:
    alice, bob = (f"nv_sk_test_{name}_{uuid.uuid4().hex}" for name in ("alice", "bob"))
    env = upstream(sandbox, None, NAIVE_CLIENT_KEYS="true", NAIVE_LOG_LEVEL="DEBUG")
    with http_server(tmp_path, env) as server:
        assert post(server, {"Authorization": "Bearer not-a-naive-key"}).status_code == 401
        first = await chat(server, alice, "from alice")
        second = await chat(server, bob, "from bob")
        logs = server.logs()
    assert not first.is_error and not second.is_error
    for key, prompt in ((alice, "from alice"), (bob, "from bob")):
        requests = sandbox.sandbox.ledger.requests(key)
        assert [r.path for r in requests] == ["/v1/llm/models", "/v1/llm/chat/completions"], "checked once"
        assert requests[1].body["messages"][-1]["content"] == prompt
    assert alice not in logs and bob not in logs


async def test_a_pinned_token_makes_every_call_per_tenant(
    sandbox: RunningSandbox, api_key: str, tmp_path: Path
) -> None:
    pinned, free = f"pin-{uuid.uuid4().hex}", f"free-{uuid.uuid4().hex}"
    tokens = {
        pinned: {"user_id": "usr_alice", "project_id": "prj_a"},
        free: {"may_name": ["user_id", "project_id"]},
    }
    env = upstream(sandbox, api_key, NAIVE_AUTH_TOKENS=json.dumps(tokens))
    with http_server(tmp_path, env) as server:
        implicit = await chat(server, pinned, "as pinned")
        same = await chat(server, pinned, "same user", user_id="usr_alice")
        other = await chat(server, pinned, "other user", user_id="usr_mallory")
        other_project = await chat(server, pinned, "other project", project_id="prj_b")
        unpinned = await chat(server, free, "any user", user_id="usr_bob")
        async with connect(server, pinned) as client:
            alices_view = json.loads((await client.read_resource("naive://usage")).contents[0].text)  # type: ignore[union-attr]
        async with connect(server, free) as client:
            operators_view = json.loads((await client.read_resource("naive://usage")).contents[0].text)  # type: ignore[union-attr]

    assert not implicit.is_error and not same.is_error and not unpinned.is_error
    for refused, field in ((other, "user_id"), (other_project, "project_id")):
        assert refused.is_error
        assert f"- {field}: this connection's token is pinned to another Naive" in text_of(refused)
    assert set(alices_view["by_tenant"]) == {"usr_alice"} and alices_view["total"]["calls"] == 2
    assert set(operators_view["by_tenant"]) == {"usr_alice", "usr_bob"}
    seen = [(r.user_id, r.project_id) for r in sandbox.sandbox.ledger.requests(api_key)]
    assert seen == [("usr_alice", "prj_a"), ("usr_alice", "prj_a"), ("usr_bob", None)]


# --- many clients at once -----------------------------------------------------------------------


async def test_many_clients_at_once_never_mix_results_keys_or_tenants(
    sandbox: RunningSandbox, tmp_path: Path
) -> None:
    server_key = f"nv_sk_test_server_{uuid.uuid4().hex}"
    tenants = {f"tenant-token-{n}-{uuid.uuid4().hex}": f"usr_{n}" for n in range(8)}
    keys = [f"nv_sk_test_client{n}_{uuid.uuid4().hex}" for n in range(12)]
    env = upstream(
        sandbox,
        server_key,
        NAIVE_CLIENT_KEYS="true",
        NAIVE_AUTH_TOKENS=json.dumps({token: {"user_id": user} for token, user in tenants.items()}),
    )
    results: dict[str, list[str]] = {}
    # Each client says who it is by a label: a token or key in the prompt would come back [redacted].
    labels = {token: f"client-{n}" for n, token in enumerate([*tenants, *keys])}
    by_label = {label: token for token, label in labels.items()}

    async def client(token: str) -> None:
        async with connect(server, token) as session:
            for turn in range(3):
                result = await session.call_tool("naive_llm_chat", {"prompt": f"{labels[token]}#{turn}"})
                assert not result.is_error, text_of(result)
                results.setdefault(token, []).append(text_of(result))

    with http_server(tmp_path, env) as server:
        with anyio.fail_after(60):
            async with anyio.create_task_group() as group:
                for token in [*tenants, *keys]:
                    group.start_soon(client, token)

    for token, answers in results.items():
        assert answers == [f"Sandbox reply from {DEFAULT_MODEL}: {labels[token]}#{turn}" for turn in range(3)]
    ledger = sandbox.sandbox.ledger
    chats_of = {
        key: [r for r in ledger.requests(key) if r.path.endswith("/chat/completions")] for key in keys
    }
    for key, chats in chats_of.items():
        assert [r.body["messages"][-1]["content"] for r in chats] == [f"{labels[key]}#{t}" for t in range(3)]
        assert {r.user_id for r in chats} == {None}
    by_server_key = ledger.requests(server_key)
    assert len(by_server_key) == 3 * len(tenants)
    for record in by_server_key:
        token = by_label[record.body["messages"][-1]["content"].split("#")[0]]
        assert record.user_id == tenants[token]
    # One connection pool for all of them: 60 calls, far fewer upstream connections.
    ports = {r.client_port for r in [*by_server_key, *(r for chats in chats_of.values() for r in chats)]}
    assert len(ports) < 3 * (len(tenants) + len(keys)) / 2


# --- shutdown -----------------------------------------------------------------------------------


async def sigterm_mid_call(
    server: HttpServer, wait_for_exit: bool
) -> tuple[CallToolResult | BaseException, int]:
    """Start a slow chat, send SIGTERM once it is streaming; the call's outcome and the exit code."""
    outcome: list[CallToolResult | BaseException] = []
    code: int | None = None
    try:
        async with connect(server, terminate_on_close=False) as client:
            # The client validates results with the tools' output schemas: list them now, not
            # (by a new request) after the server has stopped accepting connections.
            await client.list_tools()
            heard = anyio.Event()

            async def on_progress(progress: float, total: float | None, message: str | None) -> None:
                heard.set()

            async def call() -> None:
                try:
                    arguments = {"prompt": "x", "model": "sandbox/slow"}
                    outcome.append(
                        await client.call_tool("naive_llm_chat", arguments, progress_callback=on_progress)
                    )
                except Exception as failure:  # the server went away mid-call
                    outcome.append(failure)

            async with anyio.create_task_group() as group:
                group.start_soon(call)
                with anyio.fail_after(10):
                    await heard.wait()
                server.process.send_signal(signal.SIGTERM)
                if wait_for_exit:  # while the call is still waiting
                    code = await anyio.to_thread.run_sync(server.process.wait, 15)
    except* httpx2.TransportError:
        pass  # the client's own goodbye, after the server has gone
    if code is None:
        code = server.process.wait(15)
    return outcome[0], code


async def test_sigterm_lets_a_call_in_flight_finish(api_key: str, tmp_path: Path) -> None:
    with (
        serve_in_thread(SandboxConfig(slow_chunk_delay=0.01, slow_words=150)) as paced,
        http_server(tmp_path, upstream(paced, api_key, NAIVE_SHUTDOWN_GRACE="10")) as server,
    ):
        outcome, code = await sigterm_mid_call(server, wait_for_exit=False)
        record = paced.sandbox.ledger.requests(api_key)[0]
    assert isinstance(outcome, CallToolResult) and not outcome.is_error
    assert text_of(outcome).endswith("word150")
    assert record.disconnected_at is None
    assert code == 0
    assert "usage: 1 chat calls" in server.logs(), "the usage ledger is logged at shutdown"
    assert "naive-mcp stopped" in server.logs()


async def test_sigterm_cancels_calls_past_the_grace_and_closes_their_upstream(
    api_key: str, tmp_path: Path
) -> None:
    with (
        serve_in_thread(SandboxConfig(slow_chunk_delay=0.05, slow_words=3000)) as paced,
        http_server(tmp_path, upstream(paced, api_key, NAIVE_SHUTDOWN_GRACE="1")) as server,
    ):
        outcome, code = await sigterm_mid_call(server, wait_for_exit=True)
        record = paced.sandbox.ledger.requests(api_key)[0]
        assert await anyio.to_thread.run_sync(record.stream_ended.wait, 10)
    assert isinstance(outcome, BaseException), "the call did not finish: it was cancelled"
    assert code == 0
    assert record.disconnected_at is not None, "the upstream connection was closed"
    assert "naive-mcp stopped" in server.logs()
