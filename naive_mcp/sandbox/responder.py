"""The sandbox's "model": a deterministic answer to a chat request, with token counts.

It honours what changes the shape of an answer: tools and tool_choice, response_format,
reasoning, max_tokens (truncation; but for a runaway model), stop sequences, image output
(`modalities` with "image", from a model that makes images) and `logprobs`. It bills what
providers bill as input: the messages, and the tool schemas and response format sent with them.
"""

from __future__ import annotations

import base64
import json
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any

from naive_mcp.sandbox.catalogue import SandboxModel

CHARS_PER_TOKEN = 4
# What a made image is billed as, in completion tokens (Gemini counts 1,290 for one).
IMAGE_OUTPUT_TOKENS = 1290
# Request fields billed as input besides the messages, as providers do.
_INPUT_FIELDS = ("tools", "tool_choice", "response_format")


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class Reply:
    content: str
    reasoning: str | None
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish_reason: str = "stop"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0
    images: int = 0  # input images
    output_images: tuple[str, ...] = ()  # data: URLs of the images the model made
    logprobs: int | None = None  # alternatives per token in `logprobs`; None: not asked for

    @property
    def truncated(self) -> bool:
        return self.finish_reason == "length"

    def cost(self, model: SandboxModel) -> float:
        prompt_price, completion_price = model.billed_prices
        return round(
            self.prompt_tokens * prompt_price
            + (self.completion_tokens + self.reasoning_tokens) * completion_price
            + self.images * model.image_price
            + model.request_price,
            10,
        )


def respond(body: dict[str, Any], model: SandboxModel, *, extra_words: int = 0) -> Reply:
    """The answer to `body`; `extra_words` lengthens it (a slow model's long answer)."""
    messages = _messages(body)
    question = _last_user_text(messages)
    prompt_tokens = sum(_tokens(_text_of(message.get("content"))) for message in messages)
    prompt_tokens += sum(_tokens(json.dumps(body[name])) for name in _INPUT_FIELDS if body.get(name))
    images = sum(_images(message.get("content")) for message in messages)
    reasoning = _reasoning(body, model, question)
    reasoning_tokens = _tokens(reasoning) if reasoning else 0

    tool = _chosen_tool(body)
    if tool is not None:
        call = ToolCall(id="call_sandbox_1", name=tool, arguments=json.dumps({"query": question}))
        return Reply(
            content="",
            reasoning=reasoning,
            tool_calls=[call],
            finish_reason="tool_calls",
            prompt_tokens=prompt_tokens,
            completion_tokens=_tokens(call.arguments),
            reasoning_tokens=reasoning_tokens,
            images=images,
        )

    made = (IMAGE_DATA_URL,) if _makes_images(body, model) else ()
    answer = f"Sandbox reply from {model.id}: {question}" if question else f"Sandbox reply from {model.id}."
    if extra_words:
        answer += "".join(f" word{index}" for index in range(1, extra_words + 1))
    response_format = body.get("response_format") or {}
    if response_format.get("type") in ("json_object", "json_schema"):
        answer = json.dumps({"answer": answer})

    finish_reason = "stop"
    for stop in _stops(body):
        if stop and stop in answer:
            answer = answer[: answer.index(stop)]
    max_tokens = body.get("max_tokens")
    if isinstance(max_tokens, int) and _tokens(answer) > max_tokens and model.pace != "runaway":
        answer = answer[: max_tokens * CHARS_PER_TOKEN]
        finish_reason = "length"
    return Reply(
        content=answer,
        reasoning=reasoning,
        finish_reason=finish_reason,
        prompt_tokens=prompt_tokens,
        completion_tokens=_tokens(answer) + len(made) * IMAGE_OUTPUT_TOKENS,
        reasoning_tokens=reasoning_tokens,
        images=images,
        output_images=made,
        logprobs=_alternatives(body),
    )


def token_logprobs(piece: str, alternatives: int) -> dict[str, Any]:
    """A `logprobs.content` entry for one piece of the answer (a streamed chunk's text): the piece
    itself, likeliest, then made-up alternatives, `alternatives` in all. The figures follow from
    the piece alone, so an answer has the same logprobs streamed or not."""
    logprob = -0.05 * (1 + len(piece) % 5)
    top = [{"token": piece, "logprob": logprob, "bytes": None}]
    top += [
        {"token": f"{piece}~{rank}", "logprob": logprob - rank, "bytes": None}
        for rank in range(1, alternatives)
    ]
    return {"token": piece, "logprob": logprob, "bytes": None, "top_logprobs": top[:alternatives]}


def _png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A valid PNG of one colour: what a sandbox model draws."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + bytes(rgb) * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


SANDBOX_PNG = _png(8, 8, (64, 128, 192))
IMAGE_DATA_URL = "data:image/png;base64," + base64.b64encode(SANDBOX_PNG).decode("ascii")


def _makes_images(body: dict[str, Any], model: SandboxModel) -> bool:
    modalities = body.get("modalities")
    return isinstance(modalities, list) and "image" in modalities and "image" in model.output_modalities


def _alternatives(body: dict[str, Any]) -> int | None:
    if body.get("logprobs") is not True:
        return None
    top = body.get("top_logprobs")
    return top if isinstance(top, int) and not isinstance(top, bool) and top > 0 else 0


def _messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    messages = body.get("messages")
    if isinstance(messages, list):
        return [message for message in messages if isinstance(message, dict)]
    return [{"role": "user", "content": body.get("prompt", "")}]


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            return _text_of(message.get("content"))
    return ""


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    texts: list[str] = []
    for part in content:
        if not isinstance(part, dict):
            continue
        kind = part.get("type")
        if kind == "text":
            texts.append(str(part.get("text", "")))
        elif kind in ("image_url", "input_audio", "file"):
            texts.append(f"[{kind}]")
    return " ".join(texts)


def _images(content: Any) -> int:
    if not isinstance(content, list):
        return 0
    return sum(1 for part in content if isinstance(part, dict) and part.get("type") == "image_url")


def _tokens(text: str) -> int:
    return (len(text) + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN


def _reasoning(body: dict[str, Any], model: SandboxModel, question: str) -> str | None:
    settings = body.get("reasoning")
    if not model.reasoning or not isinstance(settings, dict):
        return None
    if settings.get("exclude") or settings.get("enabled") is False or settings.get("effort") == "none":
        return None
    return f"The user asks: {question[:80]}. A short, direct answer fits."


def _chosen_tool(body: dict[str, Any]) -> str | None:
    tools = body.get("tools")
    choice = body.get("tool_choice", "auto")
    if not isinstance(tools, list) or not tools or choice == "none":
        return None
    if isinstance(choice, dict):
        return str(choice.get("function", {}).get("name"))
    first = tools[0]
    return str(first.get("function", {}).get("name")) if isinstance(first, dict) else None


def _stops(body: dict[str, Any]) -> list[str]:
    stop = body.get("stop")
    if isinstance(stop, str):
        return [stop]
    return [item for item in stop if isinstance(item, str)] if isinstance(stop, list) else []
