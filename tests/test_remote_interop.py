"""The HTTP server as clients this project did not write see it: the official MCP Inspector CLI
over streamable HTTP (both protocol eras) and over SSE, and the TypeScript SDK's client."""

from __future__ import annotations

import json
from pathlib import Path
from subprocess import CompletedProcess

import pytest

from naive_mcp.sandbox import RunningSandbox
from tests.conftest import DEFAULT_MODEL, TOOL_NAMES, upstream_env
from tests.outside_clients import EXIT_TOOL_ERROR, result_of, run_inspector, run_ts_client
from tests.remote import http_server

pytestmark = [pytest.mark.interop, pytest.mark.slow]

TOKEN = "interop-team-token"


def env(sandbox: RunningSandbox, api_key: str) -> dict[str, str]:
    return {**upstream_env(sandbox, api_key), "NAIVE_AUTH_TOKENS": json.dumps([TOKEN])}


def call(home: Path, connection: list[str], arguments: dict[str, str]) -> CompletedProcess[str]:
    """The Inspector calling naive_llm_chat over `connection` (transport, URL, headers)."""
    return run_inspector(
        home,
        *connection,
        *("--method", "tools/call", "--tool-name", "naive_llm_chat"),
        *("--tool-args-json", json.dumps(arguments)),
    )


@pytest.mark.parametrize("era", ["legacy", "modern"])
def test_inspector_over_streamable_http_in_both_protocol_eras(
    sandbox: RunningSandbox, api_key: str, tmp_path: Path, era: str
) -> None:
    with http_server(tmp_path, env(sandbox, api_key)) as server:
        anonymous = ["--transport", "http", "--server-url", server.url, "--protocol-era", era]
        connection = [*anonymous, "--header", f"Authorization: Bearer {TOKEN}"]
        listing = result_of(run_inspector(tmp_path, *connection, "--method", "tools/list", "--strict"))
        chat = result_of(call(tmp_path, connection, {"prompt": f"via {era}"}))
        failing = call(tmp_path, connection, {"prompt": "x", "model": "sandbox/fail-rate-limited"})
        refused = run_inspector(tmp_path, *anonymous, "--method", "tools/list")

    assert {tool["name"] for tool in listing["tools"]} == TOOL_NAMES
    assert chat["content"][0]["text"] == f"Sandbox reply from {DEFAULT_MODEL}: via {era}"
    assert "rate_limited (HTTP 429)" in result_of(failing, exit_code=EXIT_TOOL_ERROR)["content"][0]["text"]
    assert refused.returncode != 0, "no token, no service"


def test_inspector_over_sse(sandbox: RunningSandbox, api_key: str, tmp_path: Path) -> None:
    with http_server(tmp_path, env(sandbox, api_key), transport="sse") as server:
        connection = [
            "--transport",
            "sse",
            "--server-url",
            server.url,
            "--header",
            f"Authorization: Bearer {TOKEN}",
        ]
        listing = result_of(run_inspector(tmp_path, *connection, "--method", "tools/list", "--strict"))
        chat = result_of(call(tmp_path, connection, {"prompt": "via sse"}))
    assert {tool["name"] for tool in listing["tools"]} == TOOL_NAMES
    assert chat["content"][0]["text"] == f"Sandbox reply from {DEFAULT_MODEL}: via sse"


@pytest.mark.parametrize("transport", ["streamable-http", "sse"])
def test_typescript_sdk_client(sandbox: RunningSandbox, api_key: str, tmp_path: Path, transport: str) -> None:
    kind = "sse" if transport == "sse" else "http"
    with http_server(tmp_path, env(sandbox, api_key), transport=transport) as server:
        run = run_ts_client(
            tmp_path,
            server.url,
            kind,
            TOKEN,
            "naive_llm_chat",
            json.dumps({"prompt": f"from ts over {kind}"}),
        )
        refused = run_ts_client(tmp_path, server.url, kind, "-", "naive_llm_models", "{}")

    assert run.returncode == 0, run.stderr
    output = json.loads(run.stdout.strip().splitlines()[-1])
    assert set(output["tools"]) == TOOL_NAMES
    assert (
        output["result"]["content"][0]["text"] == f"Sandbox reply from {DEFAULT_MODEL}: from ts over {kind}"
    )
    assert output["result"]["structuredContent"]["model"] == DEFAULT_MODEL
    assert refused.returncode != 0, "no token, no service"
