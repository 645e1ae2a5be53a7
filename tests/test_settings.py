"""Settings that forgive: list settings as JSON or comma-separated, and a bad setting named with
what is wrong and a good value, never the value given."""

from __future__ import annotations

import subprocess
import sys
from typing import TextIO

import anyio
import pytest
from mcp.types import TextContent
from pydantic import ValidationError
from pydantic_settings import CliApp

from naive_mcp.settings import Settings, setting_problems
from tests.conftest import SESSION_TIMEOUT, naive_mcp

SECRET = "nv_sk_test_never_printed_0123"


@pytest.mark.parametrize(
    "value",
    ["anthropic/*,openai/*", " anthropic/* , openai/* ,", '["anthropic/*", "openai/*"]'],
)
def test_a_list_setting_is_json_or_comma_separated(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    for name in ("ALLOWED_MODELS", "FREE_MODELS", "ALLOWED_HOSTS", "ALLOWED_ORIGINS"):
        monkeypatch.setenv(f"NAIVE_{name}", value)
    settings = CliApp.run(Settings, cli_args=[])
    expected = ["anthropic/*", "openai/*"]
    assert settings.allowed_models == settings.free_models == expected
    assert settings.allowed_hosts == settings.allowed_origins == expected


def test_one_json_string_is_one_item_commas_and_all(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NAIVE_ALLOWED_MODELS", '"vendor/model,v2"')
    assert CliApp.run(Settings, cli_args=[]).allowed_models == ["vendor/model,v2"]


def test_a_blank_list_setting_is_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NAIVE_ALLOWED_MODELS", "")
    assert CliApp.run(Settings, cli_args=[]).allowed_models == []


def test_the_flag_takes_a_comma_list_too() -> None:
    settings = CliApp.run(Settings, cli_args=["--allowed-models", "anthropic/*,openai/*"])
    assert settings.allowed_models == ["anthropic/*", "openai/*"]


@pytest.mark.parametrize(
    ("value", "tokens"),
    [
        ("tok-one,tok-two", {"tok-one": {}, "tok-two": {}}),
        ('["tok-one"]', {"tok-one": {}}),
        ('"tok,with,commas"', {"tok,with,commas": {}}),  # one JSON string is one token
        ('{"tok-one": {"user_id": "usr_1"}}', {"tok-one": {"user_id": "usr_1"}}),
    ],
)
def test_auth_tokens_are_a_comma_list_or_json(
    monkeypatch: pytest.MonkeyPatch, value: str, tokens: dict[str, dict[str, str]]
) -> None:
    monkeypatch.setenv("NAIVE_AUTH_TOKENS", value)
    settings = CliApp.run(Settings, cli_args=[])
    assert {
        token: grant.model_dump(exclude_defaults=True) for token, grant in settings.auth_tokens.items()
    } == (tokens)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            {"NAIVE_AUTH_TOKENS": f'{{"{SECRET}": {{"user_id": "a b"}}'},
            "NAIVE_AUTH_TOKENS: is not valid JSON (line 1, column 53); "
            'e.g. NAIVE_AUTH_TOKENS={"a-long-random-token": {"user_id": "usr_123"}}',
        ),
        (
            {"NAIVE_AUTH_TOKENS": f'{{"{SECRET}": {{"user_id": "a b"}}}}'},
            "NAIVE_AUTH_TOKENS: a token's user_id: should be a Naive id such as usr_123",
        ),
        (
            {"NAIVE_AUTH_TOKENS": f'["{SECRET}", {{"user_id": "usr_1"}}]'},
            "NAIVE_AUTH_TOKENS: a list of tokens holds strings only; e.g. NAIVE_AUTH_TOKENS=",
        ),
        (
            {"NAIVE_AUTH_TOKENS": f'{{"{SECRET}": 5}}'},
            "NAIVE_AUTH_TOKENS: a token's grant: should be an object; e.g. NAIVE_AUTH_TOKENS=",
        ),
        (
            {"NAIVE_ALLOWED_MODELS": '["anthropic/*", 3]'},
            "NAIVE_ALLOWED_MODELS: [1]: should be a valid string; e.g. NAIVE_ALLOWED_MODELS=anthropic/*,openai/*",
        ),
        (
            {"NAIVE_TRANSPORT": "tcp"},
            "NAIVE_TRANSPORT: should be 'stdio', 'streamable-http' or 'sse'; e.g. NAIVE_TRANSPORT=stdio",
        ),
        (
            {"NAIVE_MAX_CALL_CREDITS": "none"},
            "NAIVE_MAX_CALL_CREDITS: should be a valid number",
        ),
        (
            {"NAIVE_TASK_ANSWER_WAIT": "61"},
            "NAIVE_TASK_ANSWER_WAIT: should be less than or equal to 60; e.g. NAIVE_TASK_ANSWER_WAIT=1",
        ),
        (
            {"NAIVE_DEFAULT_PROJECT_ID": "my project"},
            "NAIVE_DEFAULT_PROJECT_ID: should be a Naive id such as usr_123: letters, digits and _ . : @ -, "
            "no spaces; e.g. NAIVE_DEFAULT_PROJECT_ID=prj_123",
        ),
    ],
)
def test_a_bad_setting_is_named_with_a_good_example(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as raised:
        CliApp.run(Settings, cli_args=[])
    problems = setting_problems(raised.value)
    assert expected in problems
    assert SECRET not in problems


def run_server(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "naive_mcp", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", **env},
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.slow
def test_a_server_with_a_bad_list_setting_exits_2_naming_it() -> None:
    completed = run_server({"NAIVE_ALLOWED_HOSTS": '["a", ', "NAIVE_API_KEY": SECRET})
    assert completed.returncode == 2
    assert completed.stderr == (
        "naive-mcp: bad setting: NAIVE_ALLOWED_HOSTS: is not valid JSON (line 1, column 6); "
        "e.g. NAIVE_ALLOWED_HOSTS=mcp.example.com,mcp.example.com:*\n"
    )


@pytest.mark.anyio
@pytest.mark.slow
async def test_a_server_reads_a_comma_list_of_allowed_models_from_its_environment(errlog: TextIO) -> None:
    async with naive_mcp(errlog, {"NAIVE_ALLOWED_MODELS": "anthropic/*,openai/*"}, "--sandbox") as client:
        with anyio.fail_after(SESSION_TIMEOUT):
            allowed = await client.call_tool("naive_llm_chat", {"prompt": "hi", "model": "openai/gpt-5.2"})
            refused = await client.call_tool(
                "naive_llm_chat", {"prompt": "hi", "model": "google/gemini-2.5-pro"}
            )
    assert not allowed.is_error
    assert refused.is_error
    text = refused.content[0]
    assert isinstance(text, TextContent)
    assert "NAIVE_ALLOWED_MODELS: anthropic/*, openai/*" in text.text
