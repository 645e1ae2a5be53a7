"""The API key never appears in any output, log line or error."""

from __future__ import annotations

import logging
import uuid

import pytest
from mcp import Client
from mcp.types import TextContent
from pydantic import SecretStr

from naive_mcp.logs import configure_logging
from naive_mcp.redaction import Redactor
from naive_mcp.sandbox import RunningSandbox
from naive_mcp.server import create_server
from naive_mcp.settings import Settings
from tests.conftest import make_settings
from tests.remote import free_port

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
            said.append(result.model_dump_json())

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

    assert len(tools.tools) == 5
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
