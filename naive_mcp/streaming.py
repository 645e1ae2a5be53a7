"""ChatStream: a streamed chat completion, assembled event by event into the non-streamed shape.
A text completion streams the same way, its text in `choices[0].text`, and is assembled alike.

Events are the SSE `data` of OpenRouter's `chat.completion.chunk` objects (naive-api.md): deltas
of `content`, `reasoning`, `tool_calls` (arguments split across chunks, joined by `index`) and
`images` (each whole in one chunk), token `logprobs` beside the delta, a chunk with the
`finish_reason`, a last chunk with `usage` and `choices: []`, then `[DONE]`.
Blank data and unknown fields are ignored, and so is a field of an unexpected type: a finished
answer is never thrown away for a malformed detail. A chunk with a top-level `error` (status 200,
`finish_reason: "error"`), or data that is not JSON, ends the answer with an `IncompleteAnswer`
that keeps what arrived.

Memory: everything an answer makes the server hold counts against `max_bytes`
(NAIVE_MAX_RESPONSE_BYTES) — text, reasoning, each tool call's id, name and arguments, each
image's URL, the logprobs kept (`LOGPROBS_KEPT_BYTES` at most), the top-level strings, and a fixed
cost per tool call and per image — and there are at most `MAX_TOOL_CALLS` tool calls and
`MAX_IMAGES` images. Pieces are kept as UTF-8 in one buffer per part, so what is held is what is counted
(a list of small strings would cost ~60 bytes a piece, 30 times a 2-byte piece).

Secrets: the answer, its progress tail and the partial text of a broken answer pass through the
stream's `Redactor` (the configured secrets and the caller's key, replaced exactly).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from naive_mcp.errors import IncompleteAnswer, kind_from_code
from naive_mcp.redaction import Redactor
from naive_mcp.wire import MAX_IMAGES, ChatCompletion, LogprobsKept, Usage, output_image_url

logger = logging.getLogger(__name__)

# How much of the answer a progress notification carries: its newest part, not all of it.
PROGRESS_TAIL_CHARS = 400
# Tool calls one answer may hold. Far above any real answer (OpenAI allows 128 tools in a request,
# and a model calls a handful at once); an upstream inventing new indexes without end stops here.
MAX_TOOL_CALLS = 1024
# What a tool call costs to hold beyond its strings: its entry, its object and two empty buffers
# (~430 bytes measured with tracemalloc on CPython 3.11), counted against max_bytes.
TOOL_CALL_OVERHEAD_BYTES = 512
# What an image costs to hold beyond its URL: its entry in the list and the string's header.
IMAGE_OVERHEAD_BYTES = 128

# Top-level fields of a chunk worth keeping, with the types they must have.
_TOP_FIELDS: dict[str, type | tuple[type, ...]] = {
    "id": str,
    "model": str,
    "provider": str,
    "credits_used": (int, float),
    "credits_remaining": (int, float),
    "truncated": bool,
}


class _Pieces:
    """Text that arrives in pieces, kept as UTF-8 in one buffer: one byte per ASCII character and
    no cost per piece. Lone surrogates (which JSON can carry) round-trip."""

    __slots__ = ("_utf8", "chars")

    @property
    def utf8(self) -> bytearray:
        return self._utf8

    def __init__(self) -> None:
        self._utf8 = bytearray()
        self.chars = 0

    def add(self, piece: str) -> int:
        """Append `piece`; returns the bytes it added."""
        data = piece.encode("utf-8", "surrogatepass")
        self._utf8 += data
        self.chars += len(piece)
        return len(data)

    def text(self) -> str:
        return self._utf8.decode("utf-8", "surrogatepass")

    def tail(self, chars: int) -> str:
        """The last `chars` characters, reading at most 4 bytes for each."""
        if self.chars <= chars:
            return self.text()
        data = self._utf8[-4 * chars :]
        start = 0
        while start < len(data) and data[start] & 0xC0 == 0x80:  # inside a character: skip to its end
            start += 1
        return data[start:].decode("utf-8", "surrogatepass")[-chars:]


@dataclass(slots=True)
class _ToolCallParts:
    id: str | None = None
    name: _Pieces = field(default_factory=_Pieces)
    arguments: _Pieces = field(default_factory=_Pieces)


class ChatStream:
    """The answer so far. Feed it each event's data with `feed`; finish with `finish()`."""

    def __init__(self, max_bytes: int | None = None, redact: Redactor | None = None) -> None:
        self._max_bytes = max_bytes
        self._redact = redact or Redactor()
        self._bytes = 0
        self.output_pieces = 0  # non-empty text, reasoning and tool-argument pieces so far
        self._output_bytes = 0
        self._text = _Pieces()
        self._reasoning = _Pieces()
        self._tool_calls: dict[int, _ToolCallParts] = {}
        self._images: list[str] = []  # their URLs (a data: URL holds the image)
        self._logprobs = LogprobsKept()
        self._top: dict[str, Any] = {}
        self._usage: Usage | None = None
        self.finish_reason: str | None = None
        self.done = False  # `[DONE]` arrived
        self.chunks = 0
        # The upstream accepted the call (a 200): from here a failure may have been billed, so it
        # is an incomplete answer, never retried.
        self.started = False

    @property
    def generation_id(self) -> str | None:
        """The upstream's id for this generation, once a chunk has named it."""
        value = self._top.get("id")
        return value if isinstance(value, str) else None

    @property
    def output_bytes(self) -> int:
        """UTF-8 bytes of text, reasoning and tool arguments so far (what the model generated)."""
        return self._output_bytes

    @property
    def text(self) -> str:
        """The text so far, as it arrived (unredacted: for the server's own use)."""
        return self._text.text()

    @property
    def text_bytes(self) -> int:
        """UTF-8 bytes of the text so far: an offset for `text_since`."""
        return len(self._text.utf8)

    def text_since(self, offset: int) -> str:
        """The text that arrived after `offset` (a `text_bytes` of earlier), unredacted: pieces
        are added whole, so an offset taken between chunks never splits a character."""
        return self._text.utf8[offset:].decode("utf-8", "surrogatepass")

    def feed(self, data: str) -> None:
        """Take one SSE event's data. Raises `IncompleteAnswer` for an in-stream error or data
        that is not JSON."""
        if data == "[DONE]":
            self.done = True
            return
        if not data.strip():
            return
        try:
            chunk = json.loads(data)
        except ValueError:
            raise self.broken("bad_response", f"a streamed chunk is not JSON: {data[:80]!r}") from None
        if not isinstance(chunk, dict):
            raise self.broken("bad_response", f"a streamed chunk is not a JSON object: {data[:80]!r}")
        self._add(chunk)

    def _add(self, chunk: dict[str, Any]) -> None:
        self.chunks += 1
        for key, kind in _TOP_FIELDS.items():
            if isinstance(chunk.get(key), kind):
                self._count_bytes(_size(chunk[key]) - _size(self._top.get(key)))
                self._top[key] = chunk[key]
        if isinstance(chunk.get("usage"), dict):
            self._usage = _usage(chunk["usage"])
        choices = chunk.get("choices")
        choice = _object(choices[0] if isinstance(choices, list) and choices else None)
        delta = _object(choice.get("delta"))
        if isinstance(delta.get("content"), str) and delta["content"]:
            self._count_output(self._text.add(delta["content"]))
        elif isinstance(choice.get("text"), str) and choice["text"]:  # a text completion's chunk
            self._count_output(self._text.add(choice["text"]))
        if isinstance(delta.get("reasoning"), str) and delta["reasoning"]:
            self._count_output(self._reasoning.add(delta["reasoning"]))
        calls = delta.get("tool_calls")
        for call in calls if isinstance(calls, list) else []:
            if isinstance(call, dict):
                self._add_tool_call(call)
        images = delta.get("images")
        for image in images if isinstance(images, list) else []:
            self._add_image(image)
        self._count_bytes(self._logprobs.add(_object(choice.get("logprobs")).get("content")))
        error = chunk.get("error")
        if isinstance(error, dict) or choice.get("finish_reason") == "error":
            details = _object(error)
            message = details.get("message") or "the upstream reported an error mid-answer"
            raise self.broken(kind_from_code(details.get("code")), f"the answer broke off: {message}")
        if isinstance(choice.get("finish_reason"), str):
            self.finish_reason = choice["finish_reason"]

    def finish(self) -> ChatCompletion:
        """The whole answer, in the non-streamed shape; `IncompleteAnswer` if it was cut off."""
        if self.finish_reason is None and not self.done:
            raise self.broken(
                "connection_error",
                "the stream ended before the answer finished (no finish_reason, no [DONE])",
            )
        message: dict[str, Any] = {"role": "assistant", "content": self.text}
        if self._reasoning.chars:
            message["reasoning"] = self._reasoning.text()
        if self._tool_calls:
            message["tool_calls"] = [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name.text(), "arguments": call.arguments.text()},
                }
                for _, call in sorted(self._tool_calls.items())
            ]
        if self._images:
            message["images"] = [{"type": "image_url", "image_url": {"url": url}} for url in self._images]
        choice: dict[str, Any] = {"index": 0, "finish_reason": self.finish_reason, "message": message}
        if self._logprobs.entries or self._logprobs.left_out:
            entries = [entry.model_dump(exclude_none=True) for entry in self._logprobs.entries]
            choice["logprobs"] = {"content": entries, "left_out": self._logprobs.left_out}
        answer = self._redact.json({**self._top, "choices": [choice]})
        return ChatCompletion.model_validate({**answer, "usage": self._usage})

    def broken(self, kind: str, message: str) -> IncompleteAnswer:
        """The error for an answer that stops here, keeping what arrived (its end is a cut: a
        secret's beginning there is held back too)."""
        partial = self._redact.fragment(self.text, cut_before=False)
        return IncompleteAnswer(self._redact.exact(message), kind=kind, partial=partial)

    def answer_so_far(self) -> str:
        """The text so far, with no secret in it, whole or in part (a call run in the background
        keeps it as its partial answer)."""
        return self._redact.fragment(self.text, cut_before=False)

    def progress_message(self) -> str:
        """What a progress notification says: the newest part of the answer, with no secret in
        it, whole or in part (`Redactor.fragment`). Costs only the length of that part, however
        long the answer has grown."""
        if self._text.chars:
            return _tail(self._text, self._redact)
        if self._tool_calls:
            return "Preparing tool calls: " + _names(self._tool_calls.values(), self._redact)
        if self._reasoning.chars:
            return "Reasoning: " + _tail(self._reasoning, self._redact)
        return "Waiting for the model"

    def _add_tool_call(self, call: dict[str, Any]) -> None:
        index = call.get("index")
        key = index if isinstance(index, int) else len(self._tool_calls)
        parts = self._tool_calls.get(key)
        if parts is None:
            if len(self._tool_calls) >= MAX_TOOL_CALLS:
                raise self.broken(
                    "bad_response",
                    f"the answer has more than {MAX_TOOL_CALLS} tool calls, the most naive-mcp holds for "
                    "one answer; ask for fewer at once (e.g. parallel_tool_calls: false)",
                )
            self._count_bytes(TOOL_CALL_OVERHEAD_BYTES)
            parts = self._tool_calls[key] = _ToolCallParts()
        if isinstance(call.get("id"), str):
            self._count_bytes(_size(call["id"]) - _size(parts.id))
            parts.id = call["id"]
        function = _object(call.get("function"))
        if isinstance(function.get("name"), str):
            self._count_bytes(parts.name.add(function["name"]))
        if isinstance(function.get("arguments"), str):
            self._count_output(parts.arguments.add(function["arguments"]))

    def _add_image(self, image: object) -> None:
        url = output_image_url(image)
        if url is None:
            return
        if len(self._images) >= MAX_IMAGES:
            raise self.broken(
                "bad_response",
                f"the answer has more than {MAX_IMAGES} images, the most naive-mcp holds for one answer",
            )
        self._count_bytes(IMAGE_OVERHEAD_BYTES + _size(url))
        self._images.append(url)

    def _count_output(self, size: int) -> None:
        """A piece the model generated: counted as output (for the spend guard) and as held bytes."""
        self.output_pieces += 1 if size else 0
        self._output_bytes += size
        self._count_bytes(size)

    def _count_bytes(self, size: int) -> None:
        """Everything the answer holds together may not pass NAIVE_MAX_RESPONSE_BYTES."""
        self._bytes += size
        if self._max_bytes is not None and self._bytes > self._max_bytes:
            raise self.broken(
                "bad_response", f"the answer is larger than NAIVE_MAX_RESPONSE_BYTES ({self._max_bytes})"
            )


def _usage(value: dict[str, Any]) -> Usage | None:
    try:
        return Usage.model_validate(value)
    except ValidationError as exc:
        # The answer is whole and paid for: keep it, say the usage is unknown.
        logger.warning("ignoring a malformed usage chunk: %s", exc.errors(include_input=False)[:1])
        return None


def _object(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _size(value: object) -> int:
    """The bytes a held string costs; 0 for anything else."""
    return len(value.encode("utf-8", "surrogatepass")) if isinstance(value, str) else 0


def _tail(pieces: _Pieces, redact: Redactor) -> str:
    """The last PROGRESS_TAIL_CHARS characters, "…" first if that is not all of it."""
    cut = pieces.chars > PROGRESS_TAIL_CHARS
    text = redact.fragment(pieces.tail(PROGRESS_TAIL_CHARS), cut_before=cut)
    return "…" + text if cut else text


def _names(calls: Iterable[_ToolCallParts], redact: Redactor) -> str:
    """The tool calls' names so far, as many as fit in PROGRESS_TAIL_CHARS."""
    names: list[str] = []
    length = 0
    for call in calls:
        if not call.name.chars:
            continue
        if length + call.name.chars > PROGRESS_TAIL_CHARS:
            names.append("…")
            break
        names.append(redact.fragment(call.name.text(), cut_before=False))
        length += call.name.chars + 2
    return ", ".join(names)
