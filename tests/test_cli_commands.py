"""The terminal face: `naive-mcp chat|models|generation|usage`, run as a user would, as a subprocess
against the sandbox, with the tools' own validation, errors and results."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import select
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp.types import TextContent

from naive_mcp import __version__
from naive_mcp.redaction import Redactor
from naive_mcp.sandbox import RunningSandbox
from naive_mcp.sandbox.responder import SANDBOX_PNG
from naive_mcp.streaming import ChatStream
from naive_mcp.terminal import _Echo
from tests.conftest import NAIVE_MCP, SESSION_TIMEOUT, TOOL_NAMES, naive_mcp, upstream_env
from tests.mcp_wire import last_chat

pytestmark = [pytest.mark.anyio, pytest.mark.slow]  # subprocesses, each with a sandbox


def run(env: dict[str, str], *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(NAIVE_MCP), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=SESSION_TIMEOUT,
        env={"PATH": os.environ["PATH"], **env},
    )


@pytest.fixture
def env(sandbox: RunningSandbox, api_key: str) -> dict[str, str]:
    return upstream_env(sandbox, api_key)


async def tool_error(client: Client, tool: str, arguments: dict[str, Any]) -> str:
    result = await client.call_tool(tool, arguments)
    assert result.is_error
    assert isinstance(result.content[0], TextContent)
    return result.content[0].text


def test_chat_prints_the_answer_on_stdout_and_the_summary_on_stderr(env: dict[str, str]) -> None:
    done = run(env, "chat", "-m", "anthropic/claude-haiku-4.5", "--system", "be brief", "hello there")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "Sandbox reply from anthropic/claude-haiku-4.5: hello there\n"
    summary = done.stderr.strip()
    assert summary.startswith("[model anthropic/claude-haiku-4.5 via Anthropic · finish stop · tokens ")
    assert "credits " in summary and " left" in summary and "id gen-" in summary


def test_a_command_does_not_load_the_mcp_sdk(env: dict[str, str]) -> None:
    """A command runs the tools' methods, not a server: the SDK's transports (0.35 s to import)
    stay unloaded, so `naive-mcp chat` in a pipe starts fast. The wire types come from mcp_types."""
    probe = (
        "import sys\n"
        "from naive_mcp.cli import main\n"
        "try:\n"
        "    main(['chat', 'hello'])\n"
        "finally:\n"
        "    print('mcp loaded' if 'mcp' in sys.modules else 'mcp not loaded', file=sys.stderr)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        timeout=SESSION_TIMEOUT,
        env={"PATH": os.environ["PATH"], **env},
    )
    assert done.returncode == 0 and done.stdout.startswith("Sandbox reply"), done.stderr
    assert done.stderr.strip().endswith("mcp not loaded"), done.stderr


def test_chat_json_is_the_tools_structured_result_and_the_prompt_may_come_from_stdin(
    env: dict[str, str],
) -> None:
    done = run(env, "chat", "--json", "-", stdin="a piped prompt")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["text"].endswith(": a piped prompt")
    assert result["model"] == "anthropic/claude-sonnet-4.6"  # NAIVE_DEFAULT_MODEL
    assert result["id"].startswith("gen-")
    assert result["usage"]["completion_tokens"] > 0
    assert result["credits_used"] > 0 and result["credits_remaining"] < 100
    assert done.stderr == ""


def test_chat_continues_a_thread_by_its_id_and_prints_a_long_answer_whole(
    env: dict[str, str], tmp_path: Path
) -> None:
    env = {**env, "NAIVE_STORE": str(tmp_path / "naive.sqlite"), "NAIVE_MAX_RESULT_CHARS": "1000"}
    first = run(env, "chat", "remember 42")
    [thread_id] = re.findall(r"thread_id (thr_[\w-]+)", first.stderr)
    long = "y" * 3000

    again = run(env, "chat", "-t", thread_id, "-m", "openai/gpt-5.2", long)

    assert again.returncode == 0, again.stderr
    assert again.stdout == f"Sandbox reply from openai/gpt-5.2: {long}\n", "whole: a terminal has no limit"
    assert f"thread_id {thread_id}" in again.stderr


def test_chat_falls_back_along_the_chain(env: dict[str, str]) -> None:
    done = run(env, "chat", "-m", "sandbox/fail-overloaded", "--fallback", "anthropic/claude-haiku-4.5", "hi")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "Sandbox reply from anthropic/claude-haiku-4.5: hi\n"
    assert done.stderr.startswith("[model anthropic/claude-haiku-4.5 ")


@pytest.mark.parametrize(
    ("model", "stdout", "headline"),
    [
        ("sandbox/fail-forbidden", "", "forbidden (HTTP 403): "),
        # What streamed before the answer broke off stays on stdout, its line ended.
        ("sandbox/fail-midstream-error", "Sandbox reply from \n", "provider_error: the answer broke off"),
    ],
)
async def test_a_failed_call_exits_1_with_the_tools_error_text(
    env: dict[str, str], client: Client, model: str, stdout: str, headline: str
) -> None:
    done = run(env, "chat", "-m", model, "hi")
    assert done.returncode == 1
    assert done.stdout == stdout
    expected = await tool_error(client, "naive_llm_chat", {"prompt": "hi", "model": model})
    assert done.stderr == expected + "\n"
    assert done.stderr.startswith(headline)


@pytest.mark.parametrize(
    ("args", "arguments", "field"),
    [
        (["--temperature", "5", "hi"], {"prompt": "hi", "temperature": "5"}, "- temperature: "),
        ([""], {"prompt": ""}, "- prompt: "),
    ],
)
async def test_invalid_arguments_exit_2_naming_the_field_as_the_tool_does(
    env: dict[str, str], client: Client, args: list[str], arguments: dict[str, Any], field: str
) -> None:
    done = run(env, "chat", *args)
    assert done.returncode == 2
    assert field in done.stderr
    assert done.stderr == await tool_error(client, "naive_llm_chat", arguments) + "\n"


def test_bad_usage_and_settings_exit_2_and_no_secret_is_echoed(env: dict[str, str]) -> None:
    bare = run(env, "chat")
    assert (bare.returncode, bare.stdout) == (2, "")
    assert "give a prompt, or - to read it from stdin" in bare.stderr
    bad = run(env, "chat", "--read-timeout", "-1", "hi")
    assert (bad.returncode, bad.stdout) == (2, "")
    assert "NAIVE_READ_TIMEOUT: should be greater than 0; e.g. NAIVE_READ_TIMEOUT=600" in bad.stderr
    key = run(env, "chat", "--api-key", "nv_sk_test_on_the_command_line", "hi")
    assert key.returncode == 2
    assert "api_key is read from the environment only" in key.stderr
    assert "nv_sk_test_on_the_command_line" not in key.stderr


def test_ctrl_c_stops_the_upstream_and_exits_130(
    env: dict[str, str], sandbox: RunningSandbox, api_key: str
) -> None:
    process = subprocess.Popen(
        [str(NAIVE_MCP), "chat", "-m", "sandbox/slow", "go on"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={"PATH": os.environ["PATH"], **env},
        # Whoever started the test may ignore SIGINT (a background job does): the child must not.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], SESSION_TIMEOUT)
        assert ready, "no text arrived"
        first = os.read(process.stdout.fileno(), 4096)  # the answer is streaming
        assert first.startswith(b"Sandbox reply from ")
        process.send_signal(signal.SIGINT)
        _, error = process.communicate(timeout=SESSION_TIMEOUT)
    finally:
        process.kill()
    assert process.returncode == 130
    assert b"interrupted" in error
    record = last_chat(sandbox, api_key)
    assert record.stream_ended.wait(SESSION_TIMEOUT), "the upstream stream never ended"
    assert record.disconnected_at is not None, "the upstream saw the call go away"


def test_a_reader_that_goes_away_stops_the_upstream_quietly(
    env: dict[str, str], sandbox: RunningSandbox, api_key: str
) -> None:
    """`naive-mcp chat … | head -c 30`: the call stops once its reader has gone, with no traceback."""
    process = subprocess.Popen(
        [str(NAIVE_MCP), "chat", "-m", "sandbox/slow", "go on"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={"PATH": os.environ["PATH"], **env},
    )
    try:
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], SESSION_TIMEOUT)
        assert ready, "no text arrived"
        process.stdout.close()
        _, error = process.communicate(timeout=SESSION_TIMEOUT)
    finally:
        process.kill()
    assert process.returncode == 141
    assert error == b""
    record = last_chat(sandbox, api_key)
    assert record.stream_ended.wait(SESSION_TIMEOUT), "the upstream stream never ended"
    assert record.disconnected_at is not None, "the upstream saw the call go away"


def test_compare_prints_the_numbered_answers_and_the_synthesis_and_the_summary_on_stderr(
    env: dict[str, str],
) -> None:
    models = ["-m", "openai/gpt-5.2", "-m", "sandbox/fail-overloaded"]
    done = run({**env, "NAIVE_MAX_RETRIES": "0"}, "compare", *models, "--judge", "openai/gpt-5-mini", "hi")
    assert done.returncode == 0, done.stderr
    first, failed, synthesis = done.stdout.split("\n\n", 2)
    assert first.startswith("[1] openai/gpt-5.2 · finish stop · ")
    assert first.endswith("\nSandbox reply from openai/gpt-5.2: hi")
    assert failed.startswith("[2] sandbox/fail-overloaded failed:\noverloaded (HTTP 529)")
    assert synthesis.startswith("Synthesis by openai/gpt-5-mini:\n")
    assert done.stderr.startswith("[1 of 2 models answered · tokens ")

    as_json = run(env, "compare", "-m", "openai/gpt-5.2", "-m", "openai/gpt-5-mini", "--json", "hi")
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout)["totals"]["answered"] == 2
    alone = run(env, "compare", "-m", "openai/gpt-5.2", "hi")
    assert alone.returncode == 2 and "- models: List should have at least 2 items" in alone.stderr
    every = run(env, "compare", "-m", "sandbox/fail-forbidden", "-m", "sandbox/fail-not-found", "hi")
    assert every.returncode == 1 and every.stderr.startswith("all_models_failed: every model failed")


def test_models_searches_sorts_and_limits(env: dict[str, str]) -> None:
    done = run(env, "models", "claude", "--limit", "1", "--sort", "price")
    assert done.returncode == 0, done.stderr
    head, *rows = done.stdout.strip().splitlines()
    assert head.startswith("Models 1-1 of ")
    assert rows[0].startswith("anthropic/claude-haiku-4.5 | ")  # the cheapest
    assert rows[-1] == "More: offset=1"
    listed = json.loads(run(env, "models", "--author", "anthropic", "--limit", "3", "--json").stdout)
    assert 0 < len(listed["models"]) <= 3
    assert all(model["id"].startswith("anthropic/") for model in listed["models"])
    bad = run(env, "models", "--sort", "colour")
    assert bad.returncode == 2 and "- sort: " in bad.stderr


def test_models_filters_by_modality_parameter_and_cost(
    env: dict[str, str], sandbox: RunningSandbox, api_key: str
) -> None:
    proxy = {**env, "NAIVE_BASE_URL": f"{sandbox.url}/v1/proxy/openrouter"}  # OpenRouter's list shape
    done = run(proxy, "models", "--input-modality", "audio", "--supported-parameter", "reasoning")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[1:] == [
        "google/gemini-2.5-pro | 1049K ctx | $1.25/$10 | in text+image+audio+file -> out text"
    ]
    free = json.loads(run(env, "models", "--free", "--json").stdout)
    assert [model["id"] for model in free["models"]] == ["meta-llama/llama-3.3-70b-instruct:free"]
    priced = run(env, "models", "--no-free", "--author", "meta-llama", "--max-prompt-price", "0.2")
    assert priced.stdout.splitlines()[1:] == ["meta-llama/llama-3.3-70b-instruct | 131K ctx | $0.13/$0.4"]
    tests = json.loads(
        run(proxy, "models", "--author", "sandbox", "--output-modality", "text", "--json").stdout
    )
    assert tests["models"] and all(model["id"].startswith("sandbox/") for model in tests["models"])

    sent = len(sandbox.sandbox.ledger.requests(api_key))
    bad = run(env, "models", "--input-modality", "picture")
    assert bad.returncode == 2 and "- input_modality: should be 'text', 'image'" in bad.stderr
    assert len(sandbox.sandbox.ledger.requests(api_key)) == sent  # nothing sent
    unlisted = run(env, "models", "--supported-parameter", "tools")
    assert unlisted.returncode == 1
    assert unlisted.stderr.startswith("unsupported_filter: this backend's model list does not give")


def test_generation_and_usage_read_what_a_chat_left_in_the_store(env: dict[str, str], tmp_path: Path) -> None:
    env = {**env, "NAIVE_STORE": str(tmp_path / "naive.sqlite")}
    made = json.loads(run(env, "chat", "--json", "hi").stdout)

    stats = run(env, "generation", made["id"])
    assert stats.returncode == 0, stats.stderr
    assert stats.stdout.startswith(f"{made['id']}: anthropic/claude-sonnet-4.6 via Anthropic · cost $")
    assert json.loads(run(env, "generation", "--json", made["id"]).stdout)["tokens_completion"] > 0

    usage = run(env, "usage")
    assert usage.returncode == 0, usage.stderr
    lines = usage.stdout.splitlines()
    for period, line in zip(("all time:", "today:", "this month:"), lines, strict=False):
        assert line.startswith(period) and " 1 calls, " in line
    assert "store: sqlite" in lines
    figures = json.loads(run(env, "usage", "--json").stdout)
    assert figures["total"]["calls"] == figures["today"]["total"]["calls"] == 1
    assert figures["total"]["credits"] == pytest.approx(made["credits_used"])


def test_version_and_the_commands_in_help() -> None:
    done = run({}, "--version")
    assert (done.returncode, done.stdout) == (0, f"naive-mcp {__version__}\n")
    help_text = run({}, "--help").stdout
    for command in ("chat", "compare", "models", "generation", "usage", "serve", "--sandbox", "--base-url"):
        assert command in help_text


def test_the_built_in_sandbox_answers_a_chat_with_no_key_and_no_settings() -> None:
    done = run({}, "chat", "--sandbox", "hi")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "Sandbox reply from anthropic/claude-sonnet-4.6: hi\n"


async def test_serve_is_the_server_as_with_no_command(errlog: Any) -> None:
    async with naive_mcp(errlog, {}, "serve", "--sandbox") as client:
        assert {tool.name for tool in (await client.list_tools()).tools} == TOOL_NAMES
        result = await client.call_tool("naive_llm_chat", {"prompt": "hi"})
    assert not result.is_error


def test_the_streamed_text_never_shows_a_secret_even_split_across_chunks() -> None:
    secret = "nv_sk_test_the_servers_own_key"
    redact = Redactor([secret])
    out = io.StringIO()
    echo = _Echo(out, redact)
    stream = ChatStream(redact=redact)
    shown: list[str] = []
    for piece in ["the key is nv_sk_", "test_the_servers", "_own_key, and ", "that is all"]:
        stream.feed(json.dumps({"id": "gen-1", "choices": [{"index": 0, "delta": {"content": piece}}]}))
        echo(stream)
        shown.append(out.getvalue())
    stream.feed(json.dumps({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}))
    echo.finish(stream.finish().choices[0].message.content or "")
    assert shown[0] == "the key is "  # the secret's beginning waits for the rest
    assert out.getvalue() == "the key is [redacted], and that is all\n"
    ends_its_line = _Echo(out := io.StringIO(), redact)
    ends_its_line.finish("a last line\n")
    assert out.getvalue() == "a last line\n"  # no blank line after it
    assert all("nv_sk" not in text for text in shown)


def test_the_servers_caps_and_settings_hold_for_a_command(
    env: dict[str, str], sandbox: RunningSandbox, api_key: str
) -> None:
    capped = run({**env, "NAIVE_MAX_CALL_CREDITS": "0.00001"}, "chat", "hi")
    assert capped.returncode == 1
    assert capped.stderr.startswith("spending_cap: this call could cost up to ")
    allowed = run(env, "chat", "--allowed-models", "openai/gpt-5.2", "hi")  # a server flag, as given
    assert allowed.returncode == 1
    assert allowed.stderr.startswith("model_not_allowed: model 'anthropic/claude-sonnet-4.6' is not allowed")
    assert not [r for r in sandbox.sandbox.ledger.requests(api_key) if r.path.endswith("/chat/completions")]


def test_more_arguments_reach_the_upstream_as_the_tool_sends_them(
    env: dict[str, str], sandbox: RunningSandbox, api_key: str
) -> None:
    # Settings may come before the command, as with any CLI's global options.
    done = run(
        env,
        "--log-level",
        "WARNING",
        "chat",
        "--reasoning-effort",
        "low",
        "--arguments",
        '{"response_format": {"type": "json_object"}, "provider": {"sort": "price"}}',
        "hi",
    )
    assert done.returncode == 0, done.stderr
    sent = last_chat(sandbox, api_key).body
    assert sent["reasoning"] == {"effort": "low"}
    assert sent["response_format"] == {"type": "json_object"}
    assert sent["provider"]["sort"] == "price"
    refused = run(env, "chat", "--arguments", '{"provider": {"sort": "fastest"}}', "hi")
    assert refused.returncode == 2
    assert "- provider.sort: " in refused.stderr
    not_json = run(env, "chat", "--arguments", "{tools: []}", "hi")
    assert (not_json.returncode, not_json.stdout) == (2, "")
    assert "--arguments is not valid JSON (line 1, column 2)" in not_json.stderr


def test_chat_at_a_terminal_says_images_came_and_json_carries_their_data(env: dict[str, str]) -> None:
    draw = ["chat", "-m", "google/gemini-2.5-flash-image", "--arguments", '{"modalities": ["image", "text"]}']
    done = run(env, *draw, "a blue square")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "Sandbox reply from google/gemini-2.5-flash-image: a blue square\n"
    png = base64.b64encode(SANDBOX_PNG).decode()
    assert png not in done.stdout + done.stderr
    assert done.stderr.splitlines()[-1] == (
        f"1 image(s) came with the answer (image/png {len(SANDBOX_PNG)} bytes); --json has their data"
    )

    as_json = run(env, *draw, "--json", "a blue square")
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout)["images"] == [
        {"mime_type": "image/png", "size_bytes": len(SANDBOX_PNG), "data": png}
    ]


def test_no_key_tells_a_person_at_a_terminal_what_to_do() -> None:
    done = run({"HOME": "/nonexistent"}, "chat", "hi")
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.startswith("no_api_key: no Naive API key is configured, so no call was sent.\n")
    assert "export NAIVE_API_KEY=" in done.stderr and "--sandbox" in done.stderr
    assert "MCP client's config" not in done.stderr  # that is the server's advice


@pytest.mark.parametrize(("style", "route"), [("proxy", "/v1/proxy/openrouter"), ("openrouter", "/api/v1")])
def test_the_built_in_sandbox_speaks_each_backend(style: str, route: str) -> None:
    done = run({}, "chat", "--sandbox", "--api-style", style, "--log-level", "INFO", "hi")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "Sandbox reply from anthropic/claude-sonnet-4.6: hi\n"
    assert "sandbox upstream on http://127.0.0.1:" in done.stderr and f"{route} (no network" in done.stderr
    assert "credits unknown" in done.stderr  # the summary: these backends report USD only
