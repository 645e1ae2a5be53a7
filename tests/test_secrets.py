"""The API key never appears in any output, log line or error — nor a key or token an upstream
echoes in an answer, a listing or a progress notification."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp.types import TextContent
from pydantic import SecretStr

from naive_mcp.logs import configure_logging
from naive_mcp.redaction import Redactor
from naive_mcp.sandbox import RunningSandbox, SandboxConfig, serve_in_thread
from naive_mcp.server import create_server
from naive_mcp.settings import Settings
from naive_mcp.streaming import PROGRESS_TAIL_CHARS, ChatStream
from tests.conftest import TOOL_NAMES, make_settings, upstream_env
from tests.remote import connect, free_port, http_server

pytestmark = pytest.mark.anyio


async def test_no_output_or_log_line_carries_the_key(
    sandbox: RunningSandbox, caplog: pytest.LogCaptureFixture
) -> None:
    # The sandbox echoes a rejected key in its 401 message, as some real services do.
    key = f"nv_sk_test_revoked_{uuid.uuid4().hex}"
    caplog.set_level(logging.DEBUG)
    said: list[str] = []
    async with Client(create_server(make_settings(sandbox, key))) as client:
        said.append((await client.list_tools()).model_dump_json())
        for tool, arguments in (
            ("naive_llm_chat", {"prompt": "hi"}),
            ("naive_llm_chat", {"prompt": "hi", "model": "sandbox/fail-unauthorized"}),
            ("naive_llm_models", {}),
            ("naive_llm_generation", {"id": "gen-x"}),
            ("naive_run_primitive", {"primitive": "llm", "method": "chat", "arguments": {"prompt": "x"}}),
            ("naive_llm_chat", {"prompt": "hi", "temperature": key}),
        ):
            result = await client.call_tool(tool, arguments)
            assert result.is_error
            said.append(result.model_dump_json(by_alias=True))

    assert any("Invalid API key: [redacted]" in text for text in said)
    assert sandbox.sandbox.ledger.requests(key), "the calls did reach the upstream with the key"
    for text in [*said, caplog.text]:
        assert key not in text
        assert key[len("nv_sk_test_") :] not in text


def test_logs_are_redacted_whoever_writes_them(capsys: pytest.CaptureFixture[str]) -> None:
    key = "nv_sk_live_" + uuid.uuid4().hex
    other_client_key = "nv_sess_" + uuid.uuid4().hex
    configure_logging("DEBUG", Redactor([key]))
    try:
        logging.getLogger("httpx2").warning("GET with Authorization: Bearer %s", key)
        logging.getLogger("naive_mcp.x").info("a message mentioning %s and %s", key, other_client_key)
        try:
            raise RuntimeError(f"failed with {key}")
        except RuntimeError:
            logging.getLogger("naive_mcp.y").exception("boom")
    finally:
        logging.getLogger().handlers.clear()

    captured = capsys.readouterr()
    assert captured.out == "", "stdout belongs to the protocol"
    assert "Authorization: Bearer [redacted]" in captured.err
    assert "boom" in captured.err and "RuntimeError: failed with [redacted]" in captured.err
    assert key not in captured.err and other_client_key not in captured.err


def test_settings_never_show_the_key() -> None:
    key = "nv_sk_live_" + uuid.uuid4().hex
    settings = Settings(api_key=SecretStr(key))
    assert key not in repr(settings) and key not in str(settings.model_dump())
    assert settings.secrets() == [key]


async def test_a_call_without_a_key_explains_how_to_set_one_and_sends_nothing(
    sandbox: RunningSandbox,
) -> None:
    seen_before = len(sandbox.sandbox.ledger.requests())
    async with Client(create_server(make_settings(sandbox, None))) as client:
        tools = await client.list_tools()
        results = [
            await client.call_tool("naive_llm_chat", {"prompt": "hi"}),
            await client.call_tool("naive_llm_models", {}),
            await client.call_tool("naive_llm_generation", {"id": "gen-1"}),
        ]

    assert len(tools.tools) == len(TOOL_NAMES)
    for result in results:
        assert result.is_error
        block = result.content[0]
        assert isinstance(block, TextContent)
        assert block.text.startswith("no_api_key: no Naive API key is configured, so no call was sent.")
        assert "Set NAIVE_API_KEY" in block.text and "--sandbox" in block.text
    assert len(sandbox.sandbox.ledger.requests()) == seen_before


def test_redaction_keeps_the_text_around_a_bearer_token() -> None:
    redact = Redactor(["   "])
    assert redact("header 'Bearer abc.def' sent") == "header 'Bearer [redacted]' sent"
    assert redact("three   spaces stay") == "three   spaces stay"


async def test_credentials_in_the_base_url_are_never_shown(sandbox: RunningSandbox, api_key: str) -> None:
    port = free_port()  # nothing listens there
    settings = make_settings(sandbox, api_key, base_url=f"http://gateway:s3cret-proxy-pass@127.0.0.1:{port}")
    async with Client(create_server(settings)) as client:
        result = await client.call_tool("naive_llm_models", {})
    block = result.content[0]
    assert isinstance(block, TextContent)
    assert f"could not reach http://127.0.0.1:{port}" in block.text
    assert "s3cret-proxy-pass" not in block.text and "gateway" not in block.text


def test_dotted_session_tokens_are_redacted_whole() -> None:
    assert Redactor()("token nv_sess_aaa.bbb.ccc used") == "token [redacted] used"


# --- secrets an upstream echoes inside a successful answer (issue 11, hole 8) -------------------


def leaks(text: str, secret: str, unique_from: int = 0, window: int = 6) -> list[str]:
    """Every `window`-character piece of `secret`'s unique part (after `unique_from`) found in `text`."""
    unique = secret[unique_from:]
    return [
        unique[at : at + window] for at in range(len(unique) - window + 1) if unique[at : at + window] in text
    ]


@pytest.fixture(scope="module")
def echoing() -> Iterator[RunningSandbox]:
    """An upstream that repeats the caller's key in everything it answers, text cut across
    5-character chunks a few milliseconds apart (so progress catches it half-sent)."""
    with serve_in_thread(SandboxConfig(echo_key=True, chunk_delay=0.002)) as running:
        yield running


@dataclass
class Heard:
    messages: list[str] = field(default_factory=list)

    async def __call__(self, progress: float, total: float | None, message: str | None) -> None:
        self.messages.append(message or "")


async def said_by_an_echoing_upstream(client: Client, prompt: str) -> tuple[list[str], Heard]:
    """Every result of the calls that carry text back (chat with reasoning, with a tool call, one
    that breaks off midway; the model list), as JSON, and the progress heard."""
    heard = Heard()
    lookup = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    calls: list[tuple[str, dict[str, Any]]] = [
        ("naive_llm_chat", {"prompt": prompt, "reasoning": {"effort": "low"}}),
        ("naive_llm_chat", {"prompt": prompt, "tools": lookup}),
        ("naive_llm_chat", {"prompt": prompt, "model": "sandbox/fail-midstream-error"}),
        ("naive_llm_models", {"search": "claude"}),
        ("naive_run_primitive", {"primitive": "llm", "method": "chat", "arguments": {"prompt": prompt}}),
    ]
    said = []
    for tool, arguments in calls:
        result = await client.call_tool(tool, arguments, progress_callback=heard)
        said.append(result.model_dump_json(by_alias=True))
    return said, heard


def assert_echoed_and_redacted(said: list[str], heard: Heard, secrets: list[tuple[str, int]]) -> None:
    chat, with_tool, broken, listing, generic = (json.loads(text) for text in said)
    assert "Your key is [redacted], as sent." in chat["structuredContent"]["text"]
    assert "The caller's key is [redacted]." in chat["structuredContent"]["reasoning"]
    assert '"key": "[redacted]"' in with_tool["structuredContent"]["tool_calls"][0]["arguments"]
    assert broken["isError"] and "characters that arrived before it broke off" in broken["content"][0]["text"]
    assert all("(for [redacted])" in model["name"] for model in listing["structuredContent"]["models"])
    assert "Your key is [redacted], as sent." in generic["content"][0]["text"]
    assert len(heard.messages) > 20, "progress heard the answer as it grew"
    for secret, unique_from in secrets:
        for text in [*said, *heard.messages]:
            assert secret not in text
            assert not leaks(text, secret, unique_from), (leaks(text, secret, unique_from), text)


async def test_a_key_or_token_the_upstream_echoes_never_reaches_the_client(echoing: RunningSandbox) -> None:
    key, token = f"nv_sk_test_{uuid.uuid4().hex}", f"tok-{uuid.uuid4().hex}"
    settings = make_settings(echoing, key, auth_tokens={token: {}}, progress_interval=0)
    async with Client(create_server(settings)) as client:
        # The model repeats the prompt too, so a token the client wrote comes back as well.
        said, heard = await said_by_an_echoing_upstream(client, f"my token is {token}")

    assert_echoed_and_redacted(said, heard, [(key, len("nv_sk_test_")), (token, len("tok-"))])
    assert any("my token is [redacted]" in text for text in said)


async def test_logprob_tokens_never_spell_a_key_the_upstream_echoes(echoing: RunningSandbox) -> None:
    key = f"nv_sk_test_{uuid.uuid4().hex}"
    async with Client(create_server(make_settings(echoing, key))) as client:
        result = await client.call_tool("naive_llm_chat", {"prompt": "hi", "top_logprobs": 2})

    assert result.structured_content is not None
    tokens = result.structured_content["logprobs"]["content"]
    # The text comes in 5-character pieces, a logprob entry each: the key is in no one of them.
    assert "[redacted]" in [token["token"] for token in tokens]
    spelled = "".join(token["token"] for token in tokens)
    assert spelled.startswith("Sandbox reply from ") and spelled.endswith(" sent.")
    assert not leaks(spelled, key, len("nv_sk_test_")), spelled
    assert key not in result.model_dump_json()


def test_pieces_that_spell_a_secret_are_found_wherever_it_is_cut() -> None:
    redact = Redactor(["s3cret"])
    assert redact.spelling_a_secret(["a s", "3c", "", "ret", " b"]) == {0, 1, 2, 3}
    assert redact.spelling_a_secret(["s3cret", "s3", "cret!"]) == {0, 1, 2}
    assert redact.spelling_a_secret(["s3cre", "t"]) == {0, 1}
    assert redact.spelling_a_secret(["no ", "secret ", "here"]) == set()
    assert Redactor().spelling_a_secret(["s3cret"]) == set()


@pytest.mark.slow
async def test_in_client_keys_mode_the_clients_own_key_never_comes_back(
    echoing: RunningSandbox, tmp_path: Path
) -> None:
    own_key = f"nv_sk_test_own_{uuid.uuid4().hex}"
    env = {**upstream_env(echoing, None), "NAIVE_CLIENT_KEYS": "true", "NAIVE_PROGRESS_INTERVAL": "0"}
    with http_server(tmp_path, env) as server:
        async with connect(server, own_key) as client:
            said, heard = await said_by_an_echoing_upstream(client, "hello")
    assert echoing.sandbox.ledger.requests(own_key), "the calls went upstream with the client's key"
    assert_echoed_and_redacted(said, heard, [(own_key, len("nv_sk_test_own_"))])


async def test_an_answer_about_credentials_is_left_as_it_is(client: Client) -> None:
    prompt = (
        "Send Authorization: Bearer YOUR_TOKEN to https://user:pass@example.com, "
        "with a key like nv_sk_test_example1234"
    )
    result = await client.call_tool("naive_llm_chat", {"prompt": prompt})
    block = result.content[0]
    assert isinstance(block, TextContent)
    assert block.text.endswith(prompt)


def test_progress_never_shows_part_of_a_secret_however_the_window_cuts_it() -> None:
    """The tail slides over the key as it arrives: its beginning at the end (the rest to come),
    whole inside, its end at the start of the 400-character window."""
    key = f"nv_sk_test_{uuid.uuid4().hex}"
    stream = ChatStream(redact=Redactor([key]))
    text = "z " * 250 + key + " z" * 250
    shown = []
    for at in range(0, len(text), 3):
        stream.feed(json.dumps({"choices": [{"index": 0, "delta": {"content": text[at : at + 3]}}]}))
        shown.append(stream.progress_message())
        partial = stream.broken("connection_error", "cut").partial
        assert not leaks(partial, key, len("nv_sk_test_"), window=4), partial[-40:]
        assert not leaks(shown[-1], key, len("nv_sk_test_"), window=4), shown[-1]
    assert any("[redacted]" in message for message in shown)
    assert shown[-1] == "…" + text[-PROGRESS_TAIL_CHARS:]


def test_a_cut_secret_is_held_back_at_either_edge_and_nothing_else_is() -> None:
    secret = "s3cret-Value-42"
    redact = Redactor([secret])
    for cut in range(1, len(secret)):
        assert redact.fragment("abc " + secret[:cut], cut_before=False) == "abc "
        assert redact.fragment(secret[cut:] + " abc", cut_before=True) == " abc"
        assert redact.fragment(secret[cut:] + " abc", cut_before=False) == secret[cut:] + " abc"
    assert redact.fragment(f"x {secret} y", cut_before=True) == "x [redacted] y"
    assert redact.fragment("plain text", cut_before=True) == "plain text"
    assert Redactor().fragment("anything", cut_before=True) == "anything"


def test_answers_are_redacted_exactly_logs_by_shape_too() -> None:
    key = f"nv_sk_test_{uuid.uuid4().hex}"
    redact = Redactor([key]).including("client-own-key-123")
    answer = f"use Bearer YOUR_TOKEN, not {key} or client-own-key-123; nv_sk_test_example stays"
    assert redact.exact(answer) == (
        "use Bearer YOUR_TOKEN, not [redacted] or [redacted]; nv_sk_test_example stays"
    )
    assert redact(answer) == "use Bearer [redacted] not [redacted] or [redacted]; [redacted] stays"
    assert redact.json({"a": [key, 1, {"b": f"x{key}"}], key: None}) == {
        "a": ["[redacted]", 1, {"b": "x[redacted]"}],
        "[redacted]": None,
    }
