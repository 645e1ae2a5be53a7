"""Which API the upstream speaks: recognised from NAIVE_BASE_URL, forced by NAIVE_API_STYLE,
OpenRouter when only OPENROUTER_API_KEY is set; and what a backend without tenants or credits
refuses at start."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from pydantic_settings import CliApp

from naive_mcp.backend import ApiStyle, Backend
from naive_mcp.settings import Settings


@pytest.mark.parametrize(
    ("base_url", "style", "base"),
    [
        ("https://api.usenaive.ai", ApiStyle.NAIVE, "https://api.usenaive.ai"),
        ("https://api.usenaive.ai/", ApiStyle.NAIVE, "https://api.usenaive.ai"),
        ("http://127.0.0.1:8080", ApiStyle.NAIVE, "http://127.0.0.1:8080"),
        (
            "https://api.usenaive.ai/v1/proxy/openrouter",
            ApiStyle.PROXY,
            "https://api.usenaive.ai/v1/proxy/openrouter",
        ),
        ("https://openrouter.ai/api/v1", ApiStyle.OPENROUTER, "https://openrouter.ai/api/v1"),
        ("https://openrouter.ai", ApiStyle.OPENROUTER, "https://openrouter.ai/api/v1"),  # as typed by hand
        ("https://openrouter.ai/api/", ApiStyle.OPENROUTER, "https://openrouter.ai/api/v1"),
        ("https://gateway.internal/llm/v1", ApiStyle.OPENROUTER, "https://gateway.internal/llm/v1"),
    ],
)
def test_the_style_is_recognised_from_the_url(base_url: str, style: ApiStyle, base: str) -> None:
    backend = Backend.of(base_url)
    assert (backend.style, backend.base_url) == (style, base)


def test_each_route_joins_the_path_under_the_base() -> None:
    typed = Backend.of("https://api.usenaive.ai")
    assert typed.url("chat") == "https://api.usenaive.ai/v1/llm/chat/completions"
    assert typed.url("models") == "https://api.usenaive.ai/v1/llm/models"
    assert not typed.has("completions") and not typed.has("key")
    openrouter = Backend.of("https://openrouter.ai/api/v1")
    assert openrouter.url("chat") == "https://openrouter.ai/api/v1/chat/completions"
    assert openrouter.url("completions") == "https://openrouter.ai/api/v1/completions"
    assert openrouter.url("key") == "https://openrouter.ai/api/v1/key"
    assert (typed.unit, openrouter.unit) == ("credits", "USD")
    forced = Backend.of("https://gateway.internal", "openrouter")  # a root that speaks OpenRouter's API
    assert forced.url("chat") == "https://gateway.internal/chat/completions"


def test_an_openrouter_key_alone_means_openrouter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENROUTER_API_KEY", "sk-or-v1-only")
    settings = CliApp.run(Settings, cli_args=[])
    assert settings.base_url == "https://openrouter.ai/api/v1"
    assert settings.backend.style is ApiStyle.OPENROUTER
    assert settings.api_key is not None and settings.api_key.get_secret_value() == "sk-or-v1-only"
    assert "sk-or-v1-only" in settings.secrets()
    # A Naive key wins, and keeps Naive's root; a named base is kept.
    monkeypatch.setenv("NAIVE_API_KEY", "nv_sk_test_naive")
    both = CliApp.run(Settings, cli_args=[])
    assert (both.base_url, both.api_key.get_secret_value() if both.api_key else None) == (
        "https://api.usenaive.ai",
        "nv_sk_test_naive",
    )
    assert set(both.secrets()) == {"nv_sk_test_naive", "sk-or-v1-only"}
    monkeypatch.delenv("NAIVE_API_KEY")
    monkeypatch.setenv("NAIVE_BASE_URL", "https://gateway.internal/v1")
    assert CliApp.run(Settings, cli_args=[]).base_url == "https://gateway.internal/v1"


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"NAIVE_DEFAULT_USER_ID": "usr_1"}, "NAIVE_DEFAULT_USER_ID names a Naive tenant"),
        (
            {"NAIVE_AUTH_TOKENS": '{"tok": {"user_id": "usr_1"}}'},
            "NAIVE_AUTH_TOKENS pins or lets clients name",
        ),
        (
            {"NAIVE_MAX_CALL_CREDITS": "1"},
            "NAIVE_MAX_CALL_CREDITS: an OpenRouter-compatible API reports no credits",
        ),
        ({"NAIVE_MIN_CREDITS_REMAINING": "1"}, "NAIVE_MIN_CREDITS_REMAINING: an OpenRouter-compatible API"),
    ],
)
def test_what_only_naives_typed_routes_have_is_refused_at_start_elsewhere(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], named: str
) -> None:
    monkeypatch.setenv("NAIVE_BASE_URL", "https://openrouter.ai/api/v1")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as refused:
        CliApp.run(Settings, cli_args=[])
    assert named in str(refused.value)


def test_caps_in_usd_are_taken_on_every_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NAIVE_MAX_CALL_USD", "0.5")
    monkeypatch.setenv("NAIVE_MIN_USD_REMAINING", "1")
    assert CliApp.run(Settings, cli_args=[]).max_call_usd == 0.5
    monkeypatch.setenv("NAIVE_BASE_URL", "https://openrouter.ai/api/v1")
    assert CliApp.run(Settings, cli_args=[]).min_usd_remaining == 1


def test_the_sandbox_mounts_each_style_where_the_server_looks_for_it() -> None:
    """The sandbox stands for the outside world and imports none of the server's backend code:
    this says its mounts and `STYLE_PATHS` (what `--sandbox --api-style` reaches) agree."""
    from naive_mcp.backend import STYLE_PATHS
    from naive_mcp.sandbox.app import _MOUNTS, Style

    mounted = {prefix: style for prefix, style in _MOUNTS}
    assert mounted[STYLE_PATHS[ApiStyle.PROXY]] is Style.PROXY
    assert mounted[STYLE_PATHS[ApiStyle.OPENROUTER]] is Style.OPENROUTER
    assert mounted[STYLE_PATHS[ApiStyle.NAIVE] + "/v1/llm"] is Style.TYPED
