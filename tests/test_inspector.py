"""The stdio server as the official MCP Inspector CLI sees it: a client this project did not write.

The Inspector is installed by `scripts/bootstrap --dev` into tests/interop/node_modules. Each
test runs it once, with the `naive-mcp` console script as its stdio target and the settings
passed with `-e`; HOME is a temporary directory so the Inspector's own files land there.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from subprocess import CompletedProcess
from typing import Any

import pytest

from naive_mcp.sandbox import RunningSandbox
from tests.conftest import DEFAULT_MODEL, NAIVE_MCP, TOOL_NAMES, upstream_env
from tests.outside_clients import EXIT_TOOL_ERROR, result_of, run_inspector

pytestmark = [pytest.mark.interop, pytest.mark.slow]

Inspect = Callable[..., CompletedProcess[str]]


@pytest.fixture
def inspect(sandbox: RunningSandbox, api_key: str, tmp_path: Path) -> Inspect:
    """Run the Inspector CLI against `naive-mcp` on stdio, pointed at the sandbox with a fresh key."""
    settings = upstream_env(sandbox, api_key)
    env = [option for name, value in settings.items() for option in ("-e", f"{name}={value}")]

    def run(*options: str) -> CompletedProcess[str]:
        return run_inspector(tmp_path, *env, *options, str(NAIVE_MCP))

    return run


def call_tool(inspect: Inspect, tool: str, arguments: dict[str, Any]) -> CompletedProcess[str]:
    return inspect("--method", "tools/call", "--tool-name", tool, "--tool-args-json", json.dumps(arguments))


def test_strict_tools_list_has_the_five_tools_and_no_portability_findings(inspect: Inspect) -> None:
    run = inspect("--method", "tools/list", "--strict")

    result = result_of(run)
    assert {tool["name"] for tool in result["tools"]} == TOOL_NAMES
    assert len(result["tools"]) == len(TOOL_NAMES)
    assert "schemaFindings" not in json.loads(run.stdout)
    assert "portability" not in run.stderr.lower()
    assert "Error: tool" not in run.stderr
    assert "Warning: tool" not in run.stderr


def test_chat_call_returns_reply_text_and_structured_content(
    inspect: Inspect, sandbox: RunningSandbox, api_key: str
) -> None:
    result = result_of(call_tool(inspect, "naive_llm_chat", {"prompt": "hi"}))

    assert result["isError"] is False
    assert result["content"][0] == {
        "type": "text",
        "text": f"Sandbox reply from {DEFAULT_MODEL}: hi",
    }
    structured = result["structuredContent"]
    assert structured["text"] == result["content"][0]["text"]
    assert structured["id"].startswith("gen-")
    assert structured["usage"]["cost"] > 0
    assert [record.path for record in sandbox.sandbox.ledger.requests(api_key)] == [
        "/v1/llm/chat/completions"
    ]


def test_failing_call_exits_with_tool_error_code_and_names_the_error_kind(inspect: Inspect) -> None:
    run = call_tool(inspect, "naive_llm_chat", {"prompt": "hi", "model": "sandbox/fail-insufficient-credits"})

    result = result_of(run, exit_code=EXIT_TOOL_ERROR)
    assert result["isError"] is True
    assert "insufficient_credits (HTTP 402)" in result["content"][0]["text"]
    assert "tool_is_error" in run.stderr


def test_run_primitive_runs_llm_models(inspect: Inspect) -> None:
    run = call_tool(inspect, "naive_run_primitive", {"primitive": "llm", "method": "models"})

    result = result_of(run)
    assert result["isError"] is False
    assert result["content"][0]["text"].startswith("Models 1-")
    assert "sandbox test models left out" in result["content"][0]["text"]
    models = [model["id"] for model in result["structuredContent"]["models"]]
    assert DEFAULT_MODEL in models


def test_chat_through_openrouters_api_reports_the_cost_in_usd(
    sandbox: RunningSandbox, openrouter_key: str, tmp_path: Path
) -> None:
    """The same client against the server on an OpenRouter-style backend (the sandbox's /api/v1)."""
    settings = {**upstream_env(sandbox, openrouter_key), "NAIVE_BASE_URL": f"{sandbox.url}/api/v1"}
    env = [option for name, value in settings.items() for option in ("-e", f"{name}={value}")]
    arguments = json.dumps({"prompt": "hi"})
    run = run_inspector(
        tmp_path, *env, "--method", "tools/call", "--tool-name", "naive_llm_chat", "--tool-args-json", arguments,
        str(NAIVE_MCP),
    )  # fmt: skip

    result = result_of(run)
    assert result["isError"] is False
    assert result["content"][0]["text"] == f"Sandbox reply from {DEFAULT_MODEL}: hi"
    structured = result["structuredContent"]
    assert structured["usage"]["cost"] > 0 and "credits_used" not in structured
    assert "credits unknown" in result["content"][-1]["text"]
    assert [record.path for record in sandbox.sandbox.ledger.requests(openrouter_key)] == [
        "/api/v1/chat/completions"
    ]
