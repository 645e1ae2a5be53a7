"""Settings: environment first, flags mirror it, a bad setting is a clear startup error."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic_settings import CliApp

from naive_mcp.cli import split_command
from naive_mcp.settings import Settings


def test_environment_configures_the_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NAIVE_API_KEY", "nv_sk_test_env")
    monkeypatch.setenv("NAIVE_BASE_URL", "http://127.0.0.1:9/")
    monkeypatch.setenv("NAIVE_DEFAULT_MODEL", "openai/gpt-5.2")
    monkeypatch.setenv("NAIVE_DEFAULT_USER_ID", "usr_env")
    monkeypatch.setenv("NAIVE_READ_TIMEOUT", "42")

    settings = CliApp.run(Settings, cli_args=[])

    assert settings.secrets() == ["nv_sk_test_env"]
    assert settings.base_url == "http://127.0.0.1:9"
    assert (settings.default_model, settings.default_user_id, settings.read_timeout) == (
        "openai/gpt-5.2",
        "usr_env",
        42,
    )


def test_flags_mirror_the_environment_and_win_over_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NAIVE_DEFAULT_MODEL", "openai/gpt-5.2")
    settings = CliApp.run(
        Settings,
        cli_args=[
            "--default-model",
            "google/gemini-2.5-pro",
            "--sandbox",
            "--models-cache-ttl",
            "5",
            "--log-level",
            "DEBUG",
        ],
    )
    assert (settings.default_model, settings.sandbox, settings.models_cache_ttl) == (
        "google/gemini-2.5-pro",
        True,
        5,
    )
    assert settings.log_level == "DEBUG"


@pytest.mark.slow
def test_help_lists_the_flags_but_not_the_key() -> None:
    help_text = subprocess.run(
        [sys.executable, "-m", "naive_mcp", "--help"], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    for flag in ("--base-url", "--default-model", "--default-user-id", "--read-timeout", "--sandbox"):
        assert flag in help_text
    assert "--api-key" not in help_text


@pytest.mark.slow
@pytest.mark.parametrize(
    ("env", "args", "expected"),
    [
        (
            {"NAIVE_BASE_URL": "api.usenaive.ai"},
            [],
            "NAIVE_BASE_URL: must start with http:// or https://; e.g. NAIVE_BASE_URL=https://api.usenaive.ai",
        ),
        (
            {},
            ["--read-timeout", "-1"],
            "NAIVE_READ_TIMEOUT: should be greater than 0; e.g. NAIVE_READ_TIMEOUT=600",
        ),
        ({"NAIVE_DEFAULT_USER_ID": "a b"}, [], "NAIVE_DEFAULT_USER_ID: should be a Naive id such as usr_123"),
        ({}, ["--api-key", "nv_sk_test_on_the_command_line"], "api_key is read from the environment only"),
        ({}, ["--api-key=nv_sk_test_on_the_command_line"], "api_key is read from the environment only"),
        (
            {"NAIVE_STORE": "mysql://naive:nv_sk_test_on_the_command_line@db/naive"},
            [],
            "NAIVE_STORE: NAIVE_STORE names an unknown kind of store (mysql://): use a file path",
        ),
        (
            {"NAIVE_STORE": "postgresql://naive:nv_sk_test_on_the_command_line@db:port/naive"},
            [],
            "NAIVE_STORE: NAIVE_STORE is not a valid PostgreSQL URL",
        ),
        (
            {"NAIVE_CAP_WAIT": "-1"},
            [],
            "NAIVE_CAP_WAIT: should be greater than or equal to 0; e.g. NAIVE_CAP_WAIT=10",
        ),
        ({"NAIVE_STORE_LEASE": "0"}, [], "NAIVE_STORE_LEASE: should be greater than or equal to 1"),
        (
            {},
            ["--max-tenant-credits-per-day", "0"],
            "NAIVE_MAX_TENANT_CREDITS_PER_DAY: should be greater than 0; e.g. NAIVE_MAX_TENANT_CREDITS_PER_DAY=10",
        ),
    ],
)
def test_a_bad_setting_stops_startup_with_a_clear_message(
    env: dict[str, str], args: list[str], expected: str
) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "naive_mcp", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", **env},
        stdin=subprocess.DEVNULL,
    )
    assert completed.returncode == 2
    assert completed.stdout == ""
    assert completed.stderr.startswith("naive-mcp: bad setting: ")
    assert expected in completed.stderr
    assert "nv_sk_test_on_the_command_line" not in completed.stderr


@pytest.mark.parametrize("placeholder", ["", "   "])
def test_a_blank_key_is_no_key(monkeypatch: pytest.MonkeyPatch, placeholder: str) -> None:
    monkeypatch.setenv("NAIVE_API_KEY", placeholder)
    settings = CliApp.run(Settings, cli_args=[])
    assert settings.api_key is None
    assert settings.secrets() == []


def test_the_log_level_takes_any_case(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NAIVE_LOG_LEVEL", "debug")
    assert CliApp.run(Settings, cli_args=[]).log_level == "DEBUG"


@pytest.mark.parametrize(
    ("args", "command", "rest"),
    [
        (["chat", "hi"], "chat", ["hi"]),
        (["--log-level", "DEBUG", "chat", "hi"], "chat", ["--log-level", "DEBUG", "hi"]),
        (
            ["--sandbox", "--store=memory", "usage", "--json"],
            "usage",
            ["--sandbox", "--store=memory", "--json"],
        ),
        (["--no-sandbox", "models", "claude"], "models", ["--no-sandbox", "claude"]),
        (["--store", "usage"], None, ["--store", "usage"]),  # a file named usage: serving
        (["--transport", "http"], None, ["--transport", "http"]),
        ([], None, []),
        (["serve-me", "chat"], None, ["serve-me", "chat"]),  # not a flag: the flags parser refuses it
    ],
)
def test_settings_flags_may_come_before_the_command(
    args: list[str], command: str | None, rest: list[str]
) -> None:
    assert split_command(args) == (command, rest)
