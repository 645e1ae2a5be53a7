"""Every input a client can send, with a bad value: a clear error that names the field and the fix,
no upstream call, no credits spent, the server still up.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from mcp import Client

from naive_mcp.primitives.llm.chat import ChatArguments
from naive_mcp.sandbox import RunningSandbox
from naive_mcp.server import create_server
from tests.conftest import make_settings
from tests.helpers import text_of

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    """One event loop for the module, so that its ~200 cases share one server (`shared`)."""
    return "asyncio"


@pytest.fixture(scope="module")
async def shared(sandbox: RunningSandbox) -> AsyncIterator[tuple[Client, str]]:
    """One server and one fresh account for every bad-value case: each leaves nothing behind
    (no call upstream but the free model listing, nothing spent), which each case checks."""
    key = f"nv_sk_test_{uuid.uuid4().hex}"
    async with Client(create_server(make_settings(sandbox, key))) as client:
        yield client, key


CHAT, MODELS, GENERATION = "naive_llm_chat", "naive_llm_models", "naive_llm_generation"
SEARCH, RUN = "naive_search_primitives", "naive_run_primitive"
NOTHING_SENT = "Nothing was sent upstream and no credits were spent."
FIX = "Fix the arguments named above and call again."
INITIAL_CREDITS = 100.0
SONNET, HAIKU = "anthropic/claude-sonnet-4.6", "anthropic/claude-haiku-4.5"
TOOLS = [{"type": "function", "function": {"name": "lookup"}}]


def bad(tool: str, arguments: dict[str, Any], path: str, says: str = "") -> Any:
    """A call whose error must have a line `- {path}: …{says}…`."""
    name = f"{tool.removeprefix('naive_')}:{json.dumps(arguments, separators=(',', ':'))[:70]}"
    return pytest.param(tool, arguments, path, says, id=name)


def chat(path: str, says: str = "", **arguments: Any) -> Any:
    """naive_llm_chat with `arguments`, plus a valid prompt unless messages or prompt are given."""
    base = {} if {"messages", "prompt"} & arguments.keys() else {"prompt": "hi"}
    return bad(CHAT, {**base, **arguments}, path, says)


def message(path: str, says: str = "", **fields: Any) -> Any:
    """naive_llm_chat with one message: a valid user message, changed by `fields`."""
    return chat(path, says, messages=[{"role": "user", "content": "hi", **fields}])


def part(path: str, content_part: dict[str, Any], says: str = "") -> Any:
    return message(f"messages[0].content[0]{path}", says, content=[content_part])


def run(path: str, says: str = "", **arguments: Any) -> Any:
    """naive_run_primitive llm.chat with nested `arguments`; paths are prefixed `arguments.`."""
    return bad(RUN, {"primitive": "llm", "method": "chat", "arguments": arguments}, path, says)


def image(url: str, **extra: Any) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url, **extra}}


def audio(data: str, audio_format: str) -> dict[str, Any]:
    return {"type": "input_audio", "input_audio": {"data": data, "format": audio_format}}


def file(filename: str, file_data: str) -> dict[str, Any]:
    return {"type": "file", "file": {"filename": filename, "file_data": file_data}}


def video(url: str) -> dict[str, Any]:
    return {"type": "video_url", "video_url": {"url": url}}


def cached(cache_control: Any) -> dict[str, Any]:
    return {"type": "text", "text": "a long document", "cache_control": cache_control}


CASES = [
    # --- naive_llm_chat: prompt / messages -------------------------------------------------------
    chat("prompt", "String should have at least 1 character", prompt=""),
    chat("prompt", "should be a valid string", prompt={"a": 1}),
    bad(CHAT, {}, "arguments", "give exactly one of `messages` or `prompt`"),
    chat("arguments", "give exactly one of", prompt="x", messages=[{"role": "user", "content": "hi"}]),
    chat("messages", "List should have at least 1 item", messages=[]),
    chat("messages", "should be a valid list", messages=5),
    chat("messages[0]", "should be an object", messages=["hi"]),
    chat("messages[0].role", "should be 'system'", messages='[{"role":"bot","content":"hi"}]'),
    message("messages[0].role", "should be 'system', 'developer', 'user', 'assistant'", role="bot"),
    message("messages[0].content", "should be a valid string", content=5),
    message("messages[0]", "content is required", content=None),
    message("messages[0].name", "should be a valid string", name=5),
    message("messages[0].colour", "unknown argument", colour="red"),
    part("", {"type": "video"}, "Input tag 'video' found using 'type' does not match"),
    part(".text", {"type": "text"}, "required"),
    part(".txt", {"type": "text", "text": "a", "txt": "b"}, "unknown argument"),
    part(".image_url.url", image("ftp://x/a.png"), "should be an https:// URL or a data:image/... URL"),
    part(".image_url.url", image("file:///etc/passwd"), "should be an https:// URL"),
    part(".image_url.detail", image("https://x/a.png", detail="max"), "should be"),
    part(".input_audio.data", audio("", "wav"), "String should have at least 1"),
    part(".input_audio.format", audio("AAAA", "WAV!"), "should be an audio format such as wav or mp3"),
    part(".file.filename", file("", "data:application/pdf;base64,AA"), "String should have"),
    part(
        ".file.file_data", file("a.pdf", "/etc/passwd"), "should be a data: URL (base64) or an https:// URL"
    ),
    part(".video_url.url", video("ftp://x/a.mp4"), "should be an https:// URL or a data:video/... URL"),
    part(".video_url.url", video("data:image/png;base64,AA"), "should be an https:// URL or a data:video/"),
    part(".video_url", {"type": "video_url"}, "required"),
    part(".cache_control.type", cached({"type": "persistent"}), "should be 'ephemeral'"),
    part(".cache_control.ttl", cached({"type": "ephemeral", "ttl": "2h"}), "should be '5m' or '1h'"),
    part(".cache_control", cached("ephemeral"), "should be an object"),
    part(".cache_control.type", {**image("https://x/a.png"), "cache_control": {}}, "required"),
    # tool_calls / tool_call_id rules
    message("messages[0]", "tool_calls belong on role 'assistant' messages only", tool_calls=[]),
    message(
        "messages[0].tool_calls[0].function.arguments",
        "required",
        role="assistant",
        content=None,
        tool_calls=[{"id": "call_1", "function": {"name": "lookup"}}],
    ),
    message(
        "messages[0].tool_calls[0].type",
        "should be 'function'",
        role="assistant",
        tool_calls=[{"id": "call_1", "type": "code", "function": {"name": "f", "arguments": "{}"}}],
    ),
    message("messages[0].tool_calls", "should be a valid list", role="assistant", tool_calls=5),
    message("messages[0]", "a tool message needs tool_call_id", role="tool"),
    message("messages[0]", "a tool message needs tool_call_id", role="tool", tool_call_id=""),
    message("messages[0]", "tool_call_id belongs on role 'tool' messages only", tool_call_id="call_1"),
    chat("system", "should be a valid string", system=["be brief"]),
    # --- model / models -------------------------------------------------------------------------
    chat("model", "should be a provider-prefixed model id such as anthropic/claude-sonnet-4.6", model="gpt4"),
    chat("model", "(see naive_llm_models)", model="open ai/gpt 4"),
    chat("model", "String should have at most 200 characters", model="a/" + "b" * 200),
    chat("models", "List should have at least 1 item", models=[]),
    chat("models", "List should have at most 10 items", models=["a/b"] * 11),
    chat("models[1]", "should be a provider-prefixed model id", models=["a/b", "no-slash"]),
    # --- provider -------------------------------------------------------------------------------
    chat("provider", "should be an object", provider="fast"),
    chat("provider.sort", "should be 'price', 'throughput' or 'latency'", provider={"sort": "cheap"}),
    chat("provider.data_collection", "should be 'allow' or 'deny'", provider={"data_collection": "x"}),
    chat("provider.max_price.prompt", "greater than or equal to 0", provider={"max_price": {"prompt": -1}}),
    chat("provider.max_price.completion", "greater than", provider={"max_price": {"completion": -0.5}}),
    chat("provider.max_price.request", "greater than", provider={"max_price": {"request": -1}}),
    chat("provider.max_price.image", "greater than", provider={"max_price": {"image": -1}}),
    chat("provider.max_price.tokens", "unknown argument", provider={"max_price": {"tokens": 1}}),
    chat("provider.quantizations[0]", "should be 'int4'", provider={"quantizations": ["int3"]}),
    chat("provider.quantizations", "should be a valid list", provider={"quantizations": "fp8"}),
    chat(
        "provider.order[0]", "should be a provider slug such as anthropic", provider={"order": ["bad slug"]}
    ),
    chat("provider.only[0]", "should be a provider slug", provider={"only": ["-x"]}),
    chat("provider.ignore[0]", "should be a valid string", provider={"ignore": [5]}),
    chat("provider.allow_fallbacks", "should be a valid boolean", provider={"allow_fallbacks": "sure"}),
    chat("provider.require_parameters", "valid boolean", provider={"require_parameters": "sure"}),
    chat("provider.zdr", "should be a valid boolean", provider={"zdr": "sure"}),
    chat("provider.sortt", "unknown argument; did you mean 'sort'?", provider={"sortt": "price"}),
    chat("provider.max_price.promt", "did you mean 'prompt'?", provider={"max_price": {"promt": 1}}),
    chat(
        "provider.max_price.prompt", "should be a number, not true", provider={"max_price": {"prompt": True}}
    ),
    chat("reasoning.max_tokens", "should be a number, not false", reasoning={"max_tokens": False}),
    # --- sampling ranges ------------------------------------------------------------------------
    chat("temperature", "greater than or equal to 0", temperature=-0.1),
    chat("temperature", "less than or equal to 2", temperature=2.1),
    chat("temperature", "should be a valid number", temperature="hot"),
    chat("temperature", "should be a valid number", temperature=[1]),
    chat("temperature", "should be a number, not true", temperature=True),
    chat("top_p", "greater than 0", top_p=0),
    chat("top_p", "less than or equal to 1", top_p=1.5),
    chat("top_k", "greater than or equal to 1", top_k=0),
    chat("top_k", "should be a valid integer", top_k=1.5),
    chat("min_p", "greater than or equal to 0", min_p=-0.1),
    chat("min_p", "less than or equal to 1", min_p=1.1),
    chat("top_a", "greater than or equal to 0", top_a=-0.1),
    chat("top_a", "less than or equal to 1", top_a=1.1),
    chat("frequency_penalty", "greater than or equal to -2", frequency_penalty=-2.1),
    chat("frequency_penalty", "less than or equal to 2", frequency_penalty=2.1),
    chat("presence_penalty", "greater than or equal to -2", presence_penalty=-2.1),
    chat("presence_penalty", "less than or equal to 2", presence_penalty=2.1),
    chat("repetition_penalty", "greater than 0", repetition_penalty=0),
    chat("repetition_penalty", "less than or equal to 2", repetition_penalty=2.1),
    chat("max_tokens", "greater than or equal to 1", max_tokens=0),
    chat("max_tokens", "should be a valid integer", max_tokens="lots"),
    chat("max_tokens", "should be a number, not true", max_tokens=True),
    chat("seed", "should be less than 9223372036854775808", seed=2**63),
    chat("seed", "greater than or equal to -9223372036854775808", seed=-(2**63) - 1),
    chat("seed", "should be a valid integer", seed=1.5),
    chat("top_logprobs", "greater than or equal to 0", top_logprobs=-1),
    chat("top_logprobs", "less than or equal to 20", top_logprobs=21),
    chat("logit_bias.50256", "less than or equal to 100", logit_bias={"50256": 101}),
    chat("logit_bias.50256", "greater than or equal to -100", logit_bias={"50256": -101}),
    chat("logit_bias", "should be an object", logit_bias=[1]),
    chat("logit_bias.50256", "should be a number, not true", logit_bias={"50256": True}),
    chat("stop", "List should have at most 16 items", stop=["x"] * 17),
    chat("stop", "List should have at least 1 item", stop=[]),
    chat("stop", "should be a valid string", stop=5),
    chat("parallel_tool_calls", "should be a valid boolean", parallel_tool_calls="maybe"),
    # --- response_format / reasoning ------------------------------------------------------------
    chat("response_format", "Input tag 'xml' found using 'type'", response_format={"type": "xml"}),
    chat("response_format", "Unable to extract tag using discriminator 'type'", response_format={}),
    chat(
        "response_format.json_schema.name",
        "required",
        response_format={"type": "json_schema", "json_schema": {"schema": {}}},
    ),
    chat(
        "response_format.json_schema.schema",
        "required",
        response_format={"type": "json_schema", "json_schema": {"name": "answer"}},
    ),
    chat("reasoning.effort", "should be 'xhigh', 'high'", reasoning={"effort": "max"}),
    chat("reasoning", "give effort or max_tokens, not both", reasoning={"effort": "high", "max_tokens": 9}),
    chat("reasoning.max_tokens", "greater than or equal to 1", reasoning={"max_tokens": 0}),
    chat("reasoning.exclude", "should be a valid boolean", reasoning={"exclude": "sure"}),
    chat("reasoning.enabled", "should be a valid boolean", reasoning={"enabled": "sure"}),
    # --- tools / tool_choice --------------------------------------------------------------------
    chat("tools", "List should have at least 1 item", tools=[]),
    chat("tools", "List should have at most 128 items", tools=TOOLS * 129),
    chat(
        "tools[0].function.name",
        "should be 1 to 64 letters, digits, _ or -",
        tools=[{"function": {"name": "bad name"}}],
    ),
    chat("tools[0].function", "required", tools=[{"type": "function"}]),
    chat("tools[0].type", "should be 'function'", tools=[{"type": "web", "function": {"name": "f"}}]),
    chat("tool_choice", "should be 'none', 'auto' or 'required'", tool_choice="always", tools=TOOLS),
    chat(
        "tool_choice",
        "names 'other', which is not one of the tools: lookup",
        tool_choice={"type": "function", "function": {"name": "other"}},
        tools=TOOLS,
    ),
    chat("tool_choice", "needs tools", tool_choice="required"),
    # --- the rest of OpenRouter's body -----------------------------------------------------------
    chat("transforms", "should be a valid list", transforms="middle-out"),
    chat("transforms[0]", "should be a transform name such as middle-out", transforms=["Middle Out"]),
    chat("transforms", "List should have at most 8 items", transforms=["middle-out"] * 9),
    chat("usage.include", "should be a valid boolean", usage={"include": "sure"}),
    chat("usage.include", "required", usage={}),
    chat("usage.inclde", "unknown argument; did you mean 'include'?", usage={"inclde": True}),
    chat("user", "String should have at most 256 characters", user="u" * 257),
    chat("user", "String should have at least 1 character", user=""),
    chat("user", "should be a valid string", user=5),
    chat("logprobs", "should be a valid boolean", logprobs="sure"),
    chat("top_logprobs", "needs logprobs: leave logprobs out", logprobs=False, top_logprobs=3),
    chat("plugins", "should be a valid list", plugins={"id": "web"}),
    chat("plugins[0].id", "should be a plugin id such as web, file-parser", plugins=[{"id": "Web Search"}]),
    chat("plugins[0].id", "required", plugins=[{"max_results": 3}]),
    chat("plugins[0].max_results", "greater than or equal to 1", plugins=[{"id": "web", "max_results": 0}]),
    chat(
        "plugins[0].max_results", "should be a number, not true", plugins=[{"id": "web", "max_results": True}]
    ),
    chat("plugins[0].enabled", "should be a valid boolean", plugins=[{"id": "web", "enabled": "sure"}]),
    chat("plugins", "gives plugin 'web' more than once", plugins=[{"id": "web"}, {"id": "web"}]),
    chat("plugins", "List should have at most 16 items", plugins=[{"id": f"p{n}"} for n in range(17)]),
    chat("modalities[0]", "should be 'text' or 'image'", modalities=["audio"]),
    chat("modalities", "List should have at least 1 item", modalities=[]),
    chat("modalities", "gives a modality more than once", modalities=["text", "text"]),
    chat("modalities", "should be a valid list", modalities="image"),
    chat("prediction.type", "should be 'content'", prediction={"type": "text", "content": "x"}),
    chat("prediction.content", "required", prediction={"type": "content"}),
    chat("prediction", "should be an object", prediction="the old text"),
    chat("extra", "should be an object", extra=["verbosity"]),
    chat(
        "extra",
        "'temperature' is an argument of its own: give it as `temperature`, where it is checked",
        extra={"temperature": 9},
    ),
    chat("extra", "'max_tokens' is an argument of its own", extra={"max_tokens": 10**6}),
    chat("extra", "'model' is an argument of its own", extra={"model": "openai/gpt-5.2"}),
    chat("extra", "'messages' is an argument of its own", extra={"messages": []}),
    chat("extra", "'user_id' is an argument of its own", extra={"user_id": "usr_2"}),
    chat("extra", "'plugins' is an argument of its own", extra={"verbosity": "low", "plugins": []}),
    chat("extra", "'stream' is the server's to set: it always streams", extra={"stream": False}),
    chat("extra", "'stream_options' is the server's to set", extra={"stream_options": {}}),
    chat(
        "extra",
        "'max_completion_tokens' is the server's to set: give max_tokens, which spending caps fit",
        extra={"max_completion_tokens": 10**6},
    ),
    # --- tenancy (sent as headers) --------------------------------------------------------------
    chat("user_id", "should be a Naive id such as usr_123", user_id="usr 1"),
    chat("user_id", "no spaces", user_id="usr_1\n"),
    chat("user_id", "String should have at least 1 character", user_id=""),
    chat("user_id", "String should have at most 128 characters", user_id="u" * 129),
    chat("project_id", "should be a Naive id", project_id="prj_1\r\nX-Naive-User-Id: usr_2"),
    # --- unknown names and wrong types ----------------------------------------------------------
    chat("temprature", "unknown argument; did you mean 'temperature'?", temprature=1),
    chat("maxtokens", "unknown argument; did you mean 'max_tokens'?", maxtokens=5),
    chat("zzz", "unknown argument; allowed: messages, prompt, system, thread_id, files", zzz=1),
    bad(
        CHAT, {"prompt": "hi", "max-tokens": 5}, "max-tokens", "unknown argument; did you mean 'max_tokens'?"
    ),
    # --- naive_llm_models -----------------------------------------------------------------------
    bad(MODELS, {"search": "x" * 101}, "search", "String should have at most 100 characters"),
    bad(
        MODELS, {"author": "anthropic/claude"}, "author", "should be the part of a model id before the slash"
    ),
    bad(MODELS, {"min_context": 0}, "min_context", "greater than or equal to 1"),
    bad(MODELS, {"max_prompt_price": -1}, "max_prompt_price", "greater than or equal to 0"),
    bad(MODELS, {"max_completion_price": -0.01}, "max_completion_price", "greater than or equal to 0"),
    bad(MODELS, {"sort": "bogus"}, "sort", "should be 'id', 'price'"),
    bad(MODELS, {"limit": 0}, "limit", "greater than or equal to 1"),
    bad(MODELS, {"limit": 101}, "limit", "less than or equal to 100"),
    bad(MODELS, {"offset": -1}, "offset", "greater than or equal to 0"),
    bad(MODELS, {"user_id": "usr 1"}, "user_id", "should be a Naive id such as usr_123"),
    bad(MODELS, {"project_id": "prj\n"}, "project_id", "should be a Naive id"),
    bad(MODELS, {"limt": 5}, "limt", "unknown argument; did you mean 'limit'?"),
    bad(
        MODELS,
        {"input_modality": "picture"},
        "input_modality",
        "should be 'text', 'image', 'audio', 'file' or 'video'",
    ),
    bad(MODELS, {"input_modality": ["image"]}, "input_modality", "should be 'text', 'image'"),
    bad(
        MODELS,
        {"output_modality": "file"},
        "output_modality",
        "should be 'text', 'image', 'audio' or 'embeddings'",
    ),
    bad(
        MODELS,
        {"supported_parameter": "Tools!"},
        "supported_parameter",
        "should be a request parameter's name",
    ),
    bad(MODELS, {"supported_parameter": "t" * 61}, "supported_parameter", "at most 60 characters"),
    bad(
        MODELS,
        {"supported_parameters": "tools"},
        "supported_parameters",
        "did you mean 'supported_parameter'?",
    ),
    bad(MODELS, {"free": "maybe"}, "free", "should be a valid boolean"),
    # --- naive_llm_generation -------------------------------------------------------------------
    bad(GENERATION, {}, "id", "required"),
    bad(
        GENERATION, {"id": "gen 1"}, "id", "should be a generation id from a chat result, such as gen-abc123"
    ),
    bad(GENERATION, {"id": ""}, "id", "String should have at least 1 character"),
    bad(GENERATION, {"id": "g" * 201}, "id", "String should have at most 200 characters"),
    bad(GENERATION, {"id": "gen-1", "user_id": "a b"}, "user_id", "should be a Naive id"),
    bad(GENERATION, {"id": "gen-1", "project_id": "a\nb"}, "project_id", "should be a Naive id"),
    bad(GENERATION, {"id": "gen-1", "ids": "x"}, "ids", "unknown argument; did you mean 'id'?"),
    # --- naive_search_primitives ----------------------------------------------------------------
    bad(SEARCH, {"query": "x" * 101}, "query", "String should have at most 100 characters"),
    bad(SEARCH, {"query": 5}, "query", "should be a valid string"),
    bad(SEARCH, {"querry": "chat"}, "querry", "unknown argument; did you mean 'query'?"),
    # --- naive_run_primitive --------------------------------------------------------------------
    bad(RUN, {"method": "chat"}, "primitive", "required"),
    bad(RUN, {"primitive": "llm"}, "method", "required"),
    bad(RUN, {"primitive": "", "method": "chat"}, "primitive", "String should have at least 1 character"),
    bad(RUN, {"primitive": "llm", "method": "c" * 61}, "method", "String should have at most 60"),
    bad(RUN, {"primitive": "llm", "method": "chat", "arguments": "nope"}, "arguments", "should be an object"),
    bad(RUN, {"primitive": "llm", "method": "chat", "arguments": [1]}, "arguments", "should be an object"),
    bad(RUN, {"primitive": "llm", "method": "chat", "argument": {}}, "argument", "did you mean 'arguments'?"),
    run("arguments.temperature", "less than or equal to 2", prompt="x", temperature=9),
    run("arguments.temprature", "unknown argument; did you mean 'temperature'?", prompt="x", temprature=1),
    run("arguments.provider.sort", "should be 'price'", prompt="x", provider={"sort": "cheap"}),
    run("arguments", "give exactly one of `messages` or `prompt`"),
    bad(RUN, {"primitive": "llm", "method": "models", "arguments": {"limit": 0}}, "arguments.limit"),
    bad(RUN, {"primitive": "llm", "method": "generation"}, "arguments.id", "required"),
]


async def assert_untouched_and_still_up(client: Client, sandbox: RunningSandbox, api_key: str) -> None:
    ledger = sandbox.sandbox.ledger
    assert [r.path for r in ledger.requests(api_key) if not r.path.endswith("/models")] == []
    assert ledger.balance(api_key) == INITIAL_CREDITS
    after = await client.call_tool(MODELS, {})
    assert not after.is_error, text_of(after)


@pytest.mark.parametrize(("tool", "arguments", "path", "says"), CASES)
async def test_bad_value_gets_a_clear_error_and_nothing_goes_upstream(
    shared: tuple[Client, str],
    sandbox: RunningSandbox,
    tool: str,
    arguments: dict[str, Any],
    path: str,
    says: str,
) -> None:
    client, api_key = shared
    result = await client.call_tool(tool, arguments)

    text = text_of(result)
    assert result.is_error, text
    assert text.startswith(f"Invalid arguments for {tool}"), text
    assert text.endswith(f"{NOTHING_SENT} {FIX}"), text
    await assert_untouched_and_still_up(client, sandbox, api_key)
    assert any(row.startswith(f"- {path}: ") and says in row for row in text.splitlines()), text


@pytest.mark.parametrize("primitive", ["llm", "img"])
async def test_unknown_method_names_the_methods_that_exist(
    client: Client, sandbox: RunningSandbox, api_key: str, primitive: str
) -> None:
    result = await client.call_tool(RUN, {"primitive": primitive, "method": "nope"})

    text = text_of(result)
    assert result.is_error
    assert text.startswith(f"Unknown Naive primitive method: '{primitive}.nope'"), text
    assert all(name in text for name in ("llm.chat", "llm.models", "llm.generation")), text
    assert NOTHING_SENT in text
    await assert_untouched_and_still_up(client, sandbox, api_key)


async def test_unknown_method_points_to_the_search_tool_not_to_a_retry(client: Client) -> None:
    text = text_of(await client.call_tool(RUN, {"primitive": "llm", "method": "nope"}))

    assert "upstream failed" not in text and "retry" not in text, text
    assert text.endswith("Call naive_search_primitives to see every method and its arguments."), text


# --- JSON-encoded strings ------------------------------------------------------------------------


def sent_body(sandbox: RunningSandbox, api_key: str) -> dict[str, Any]:
    (request,) = sandbox.sandbox.ledger.requests(api_key)
    assert isinstance(request.body, dict)
    return request.body


@pytest.mark.parametrize(
    ("arguments", "field", "value"),
    [
        pytest.param(
            {"messages": '[{"role":"user","content":"hi"}]'},
            "messages",
            [{"role": "user", "content": "hi"}],
            id="messages",
        ),
        pytest.param({"provider": '{"sort": "price"}'}, "provider", {"sort": "price"}, id="provider"),
        pytest.param({"models": f'["{SONNET}", "{HAIKU}"]'}, "models", [SONNET, HAIKU], id="models"),
        pytest.param({"logit_bias": '{"7": 5}'}, "logit_bias", {"7": 5.0}, id="logit_bias"),
        pytest.param({"reasoning": '{"effort": "low"}'}, "reasoning", {"effort": "low"}, id="reasoning"),
    ],
)
async def test_json_string_for_an_object_or_list_is_accepted(
    client: Client, sandbox: RunningSandbox, api_key: str, arguments: dict[str, Any], field: str, value: Any
) -> None:
    base = {} if "messages" in arguments else {"prompt": "hi"}
    result = await client.call_tool(CHAT, {**base, **arguments})

    assert not result.is_error, text_of(result)
    assert sent_body(sandbox, api_key)[field] == value


async def test_json_string_for_run_primitive_arguments_is_accepted(
    client: Client, sandbox: RunningSandbox, api_key: str
) -> None:
    result = await client.call_tool(
        RUN, {"primitive": "llm", "method": "chat", "arguments": '{"prompt": "hi", "top_k": 3}'}
    )

    assert not result.is_error, text_of(result)
    assert sent_body(sandbox, api_key)["top_k"] == 3


@pytest.mark.parametrize("field", ["prompt", "system"])
async def test_a_string_field_holding_json_text_stays_a_string(
    client: Client, sandbox: RunningSandbox, api_key: str, field: str
) -> None:
    result = await client.call_tool(CHAT, {"prompt": "hi", field: '{"a": 1}'})

    assert not result.is_error, text_of(result)
    messages = sent_body(sandbox, api_key)["messages"]
    assert messages[0]["content"] == '{"a": 1}'


# --- property: random JSON at the numeric fields and as extra keys ---------------------------------

# Each numeric field of ChatArguments, and what may be forwarded for it.
IN_RANGE: dict[str, Callable[[Any], bool]] = {
    "temperature": lambda v: 0 <= v <= 2,
    "top_p": lambda v: 0 < v <= 1,
    "top_k": lambda v: isinstance(v, int) and v >= 1,
    "min_p": lambda v: 0 <= v <= 1,
    "top_a": lambda v: 0 <= v <= 1,
    "frequency_penalty": lambda v: -2 <= v <= 2,
    "presence_penalty": lambda v: -2 <= v <= 2,
    "repetition_penalty": lambda v: 0 < v <= 2,
    "max_tokens": lambda v: isinstance(v, int) and v >= 1,
    "seed": lambda v: isinstance(v, int) and -(2**63) <= v < 2**63,
    "top_logprobs": lambda v: isinstance(v, int) and 0 <= v <= 20,
}

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)
near_bounds = (
    st.floats(min_value=-2.5, max_value=2.5)
    | st.integers(min_value=-3, max_value=25)
    | st.sampled_from([0, 1, 2, 20, 21, -2, 2**63 - 1, 2**63, -(2**63), "0.5", "1", "1e3", "inf"])
)
numeric_fields = st.dictionaries(st.sampled_from(sorted(IN_RANGE)), near_bounds | json_values, max_size=4)
extra_keys = st.dictionaries(
    st.text(min_size=1, max_size=12).filter(lambda key: key not in ChatArguments.model_fields),
    json_values,
    max_size=2,
)


@settings(
    max_examples=100,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(fields=numeric_fields, extra=st.just({}) | extra_keys)
async def test_random_values_get_a_result_or_an_argument_error_never_a_crash(
    client: Client, sandbox: RunningSandbox, api_key: str, fields: dict[str, Any], extra: dict[str, Any]
) -> None:
    ledger = sandbox.sandbox.ledger
    ledger.set_balance(api_key, 1e9)  # valid examples do spend; this test is about the invalid ones
    before = len(ledger.requests(api_key))

    result = await client.call_tool(CHAT, {"prompt": "hi", **fields, **extra})

    text = text_of(result)
    sent = ledger.requests(api_key)[before:]
    event("refused" if result.is_error else "accepted")
    if result.is_error:
        assert text.startswith("Invalid arguments for naive_llm_chat:"), text
        assert sent == []
    else:
        assert not extra, text
        (request,) = sent
        forwarded = {name: request.body[name] for name in fields if fields[name] is not None}
        assert all(IN_RANGE[name](value) for name, value in forwarded.items()), forwarded
