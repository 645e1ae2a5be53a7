"""What a model makes besides text: images (as MCP image blocks after the text, within
NAIVE_MAX_IMAGE_BYTES) and token logprobs (in the structured result), streamed and in one piece."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx2
import pytest
from mcp import Client
from mcp.types import CallToolResult, ImageContent, TextContent
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from naive_mcp.sandbox import RunningSandbox
from naive_mcp.sandbox.responder import SANDBOX_PNG
from naive_mcp.sandbox.server import serve_app_in_thread
from naive_mcp.server import create_server
from naive_mcp.streaming import ChatStream
from naive_mcp.wire import LOGPROBS_KEPT_BYTES, ChatCompletion
from tests.conftest import make_settings

pytestmark = pytest.mark.anyio

CHAT = "naive_llm_chat"
IMAGE_MODEL = "google/gemini-2.5-flash-image"
DRAW = {"prompt": "a blue square", "model": IMAGE_MODEL, "modalities": ["image", "text"]}


def structured(result: CallToolResult) -> dict[str, Any]:
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return result.structured_content


@contextmanager
def in_one_piece(sandbox: RunningSandbox) -> Iterator[str]:
    """An upstream that answers each chat in one piece, as a server that ignores `stream` does: it
    asks the sandbox with `stream: false` and passes its JSON answer on."""

    async def chat(request: Request) -> Response:
        body = {**json.loads(await request.body()), "stream": False}
        headers = {"authorization": request.headers["authorization"]}
        async with httpx2.AsyncClient() as http:
            answer = await http.post(f"{sandbox.url}/v1/llm/chat/completions", json=body, headers=headers)
        return Response(answer.content, status_code=answer.status_code, media_type="application/json")

    with serve_app_in_thread(
        Starlette(routes=[Route("/v1/llm/chat/completions", chat, methods=["POST"])])
    ) as url:
        yield url


@pytest.fixture(params=["streamed", "in one piece"])
async def either(request: pytest.FixtureRequest, sandbox: RunningSandbox, api_key: str) -> Any:
    """A client whose upstream streams its answers (the sandbox), or answers in one piece."""
    if request.param == "streamed":
        async with Client(create_server(make_settings(sandbox, api_key))) as client:
            yield client
        return
    with in_one_piece(sandbox) as url:
        async with Client(create_server(make_settings(sandbox, api_key, base_url=url))) as client:
            yield client


# --- images ----------------------------------------------------------------------------------------


async def test_an_image_the_model_made_comes_as_an_image_block_after_the_text(
    either: Client, sandbox: RunningSandbox, api_key: str
) -> None:
    result = await either.call_tool(CHAT, DRAW)

    data = structured(result)
    text, image, summary = result.content
    assert isinstance(text, TextContent) and text.text == data["text"]
    assert isinstance(image, ImageContent) and image.mime_type == "image/png"
    assert base64.b64decode(image.data) == SANDBOX_PNG
    assert isinstance(summary, TextContent) and "images 1" in summary.text
    assert data["images"] == [{"mime_type": "image/png", "size_bytes": len(SANDBOX_PNG)}]
    assert image.data not in json.dumps(data), "the structured content describes images, without their data"
    (request,) = sandbox.sandbox.ledger.requests(api_key)
    assert request.body["modalities"] == ["image", "text"]


async def test_the_generic_tool_gives_the_same_image_block(client: Client) -> None:
    run = await client.call_tool(
        "naive_run_primitive", {"primitive": "llm", "method": "chat", "arguments": DRAW}
    )

    images = [block for block in run.content if isinstance(block, ImageContent)]
    assert [base64.b64decode(image.data) for image in images] == [SANDBOX_PNG]
    assert isinstance(run.content[1], ImageContent)


async def test_a_text_model_asked_for_images_answers_in_text(client: Client) -> None:
    result = await client.call_tool(CHAT, {**DRAW, "model": "anthropic/claude-sonnet-4.6"})

    assert structured(result)["images"] == []
    assert all(isinstance(block, TextContent) for block in result.content)


async def test_an_image_past_the_limit_is_left_out_and_the_result_says_why(
    sandbox: RunningSandbox, api_key: str
) -> None:
    settings = make_settings(sandbox, api_key, max_image_bytes=len(SANDBOX_PNG) - 1)
    async with Client(create_server(settings)) as client:
        result = await client.call_tool(CHAT, DRAW)

    data = structured(result)
    assert not any(isinstance(block, ImageContent) for block in result.content)
    _, note, summary = (block.text for block in result.content if isinstance(block, TextContent))
    size = len(SANDBOX_PNG)
    assert note == (
        f"Image 1 (image/png, {size} bytes) was left out: with it the result's images would be {size} "
        f"bytes, past NAIVE_MAX_IMAGE_BYTES ({size - 1}); the operator may raise it"
    )
    assert "images 1 (1 left out)" in summary
    (image,) = data["images"]
    assert image["left_out"].startswith("with it the result's images would be")
    assert image["size_bytes"] == size


# --- logprobs --------------------------------------------------------------------------------------


async def test_logprobs_come_back_in_the_structured_result(either: Client) -> None:
    result = await either.call_tool(CHAT, {"prompt": "Say something short.", "top_logprobs": 3})

    data = structured(result)
    tokens = data["logprobs"]["content"]
    assert "".join(token["token"] for token in tokens) == data["text"]
    assert data["logprobs"]["left_out"] == 0
    for token in tokens:
        assert token["logprob"] < 0 and "bytes" not in token, "null bytes are left out"
        assert len(token["top_logprobs"]) == 3 and token["top_logprobs"][0]["token"] == token["token"]
    summary = result.content[-1]
    assert isinstance(summary, TextContent)
    assert f"logprobs of {len(tokens)} tokens in the structured result" in summary.text


async def test_streamed_and_whole_answers_have_the_same_logprobs(
    sandbox: RunningSandbox, api_key: str
) -> None:
    arguments = {"prompt": "the same question", "logprobs": True}
    async with Client(create_server(make_settings(sandbox, api_key))) as client:
        streamed = structured(await client.call_tool(CHAT, arguments))
    with in_one_piece(sandbox) as url:
        async with Client(create_server(make_settings(sandbox, api_key, base_url=url))) as client:
            whole = structured(await client.call_tool(CHAT, arguments))

    assert streamed["logprobs"] == whole["logprobs"]
    assert all(token["top_logprobs"] == [] for token in whole["logprobs"]["content"])


async def test_without_logprobs_asked_none_come_back(client: Client) -> None:
    data = structured(await client.call_tool(CHAT, {"prompt": "hi"}))
    assert "logprobs" not in data


def logprob(token: str, alternatives: int = 20) -> dict[str, Any]:
    top = [{"token": f"{token}{n}", "logprob": -1.0 - n, "bytes": [65]} for n in range(alternatives)]
    return {"token": token, "logprob": -0.5, "bytes": [65], "top_logprobs": top}


def test_a_streamed_answer_keeps_the_first_logprobs_within_their_bound_and_counts_the_rest() -> None:
    stream = ChatStream(max_bytes=32 * 1024 * 1024)
    pieces = 2000
    for _ in range(pieces):
        stream.feed(
            json.dumps(
                {
                    "choices": [
                        {"index": 0, "delta": {"content": "A"}, "logprobs": {"content": [logprob("A")]}}
                    ]
                }
            )
        )
    stream.feed(json.dumps({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}))

    logprobs = stream.finish().choices[0].logprobs
    assert logprobs is not None
    kept = len(logprobs.content)
    assert 0 < kept < pieces and kept + logprobs.left_out == pieces
    size = sum(len(entry.model_dump_json(exclude_none=True)) for entry in logprobs.content)
    assert LOGPROBS_KEPT_BYTES - 2_000 < size <= LOGPROBS_KEPT_BYTES


def test_a_whole_answer_keeps_the_same_and_drops_malformed_entries() -> None:
    entries = [logprob("A")] * 2000
    broken = [{"token": 5}, {"token": "x", "logprob": "-Infinity"}, "x", {"token": "y", "logprob": True}]
    answer = {
        "choices": [
            {
                "message": {"content": "A" * 2000},
                "logprobs": {"content": broken + entries},
                "finish_reason": "stop",
            }
        ]
    }
    logprobs = ChatCompletion.model_validate(answer).choices[0].logprobs
    assert logprobs is not None
    assert len(logprobs.content) + logprobs.left_out == 2000
    assert all(entry.token == "A" for entry in logprobs.content)
