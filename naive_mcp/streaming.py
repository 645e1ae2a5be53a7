"""ChatStream: a streamed chat completion, assembled event by event into the non-streamed shape.

Events are the SSE `data` of OpenRouter's `chat.completion.chunk` objects (naive-api.md): deltas
of `content`, `reasoning` and `tool_calls` (arguments split across chunks, joined by `index`), a
chunk with the `finish_reason`, a last chunk with `usage` and `choices: []`, then `[DONE]`.
Blank data and unknown fields are ignored, and so is a field of an unexpected type: a finished
answer is never thrown away for a malformed detail. A chunk with a top-level `error` (status 200,
`finish_reason: "error"`), or data that is not JSON, ends the answer with an `IncompleteAnswer`
that keeps what arrived.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from naive_mcp.errors import IncompleteAnswer, kind_from_code
from naive_mcp.wire import ChatCompletion, Usage

logger = logging.getLogger(__name__)

# How much of the answer a progress notification carries: its newest part, not all of it.
PROGRESS_TAIL_CHARS = 400

# Top-level fields of a chunk worth keeping, with the types they must have.
_TOP_FIELDS: dict[str, type | tuple[type, ...]] = {
    "id": str,
    "model": str,
    "provider": str,
    "credits_used": (int, float),
    "credits_remaining": (int, float),
    "truncated": bool,
}


@dataclass
class _ToolCallParts:
    id: str | None = None
    name: str = ""
    arguments: list[str] = field(default_factory=list)


class ChatStream:
    """The answer so far. Feed it each event's data with `feed`; finish with `finish()`."""

    def __init__(self, max_bytes: int | None = None) -> None:
        self._max_bytes = max_bytes
        self._bytes = 0
        self.output_pieces = 0  # non-empty text, reasoning and tool-argument pieces so far
        self._text: list[str] = []
        self._chars = 0
        self._reasoning: list[str] = []
        self._reasoning_chars = 0
        self._tool_calls: dict[int, _ToolCallParts] = {}
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
        """UTF-8 bytes of text, reasoning and tool arguments so far."""
        return self._bytes

    @property
    def text(self) -> str:
        return "".join(self._text)

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
                self._top[key] = chunk[key]
        if isinstance(chunk.get("usage"), dict):
            self._usage = _usage(chunk["usage"])
        choices = chunk.get("choices")
        choice = _object(choices[0] if isinstance(choices, list) and choices else None)
        delta = _object(choice.get("delta"))
        if isinstance(delta.get("content"), str) and delta["content"]:
            self._text.append(delta["content"])
            self._chars += len(delta["content"])
            self._count_bytes(delta["content"])
        if isinstance(delta.get("reasoning"), str) and delta["reasoning"]:
            self._reasoning.append(delta["reasoning"])
            self._reasoning_chars += len(delta["reasoning"])
            self._count_bytes(delta["reasoning"])
        calls = delta.get("tool_calls")
        for call in calls if isinstance(calls, list) else []:
            if isinstance(call, dict):
                self._add_tool_call(call)
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
        if self._reasoning:
            message["reasoning"] = "".join(self._reasoning)
        if self._tool_calls:
            message["tool_calls"] = [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": "".join(call.arguments)},
                }
                for _, call in sorted(self._tool_calls.items())
            ]
        choice = {"index": 0, "finish_reason": self.finish_reason, "message": message}
        return ChatCompletion.model_validate({**self._top, "usage": self._usage, "choices": [choice]})

    def broken(self, kind: str, message: str) -> IncompleteAnswer:
        """The error for an answer that stops here, keeping what arrived."""
        return IncompleteAnswer(message, kind=kind, partial=self.text)

    def progress_message(self) -> str:
        """What a progress notification says: the newest part of the answer. Costs only the
        length of that part, however long the answer has grown."""
        if self._chars:
            return _tail(self._text, self._chars)
        if self._tool_calls:
            names = ", ".join(call.name for call in self._tool_calls.values() if call.name)
            return f"Preparing tool calls: {names}"
        if self._reasoning_chars:
            return "Reasoning: " + _tail(self._reasoning, self._reasoning_chars)
        return "Waiting for the model"

    def _add_tool_call(self, call: dict[str, Any]) -> None:
        index = call.get("index")
        parts = self._tool_calls.setdefault(
            index if isinstance(index, int) else len(self._tool_calls), _ToolCallParts()
        )
        if isinstance(call.get("id"), str):
            parts.id = call["id"]
        function = _object(call.get("function"))
        if isinstance(function.get("name"), str):
            parts.name += function["name"]
        if isinstance(function.get("arguments"), str):
            parts.arguments.append(function["arguments"])
            self._count_bytes(function["arguments"])

    def _count_bytes(self, piece: str) -> None:
        """Text, reasoning and tool arguments together may not pass NAIVE_MAX_RESPONSE_BYTES."""
        self._bytes += len(piece.encode())
        self.output_pieces += 1 if piece else 0
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


def _tail(parts: list[str], total: int) -> str:
    """The last PROGRESS_TAIL_CHARS characters of "".join(parts), reading only the parts needed."""
    newest: list[str] = []
    length = 0
    for part in reversed(parts):
        newest.append(part)
        length += len(part)
        if length >= PROGRESS_TAIL_CHARS:
            break
    text = "".join(reversed(newest))
    return text if total <= PROGRESS_TAIL_CHARS else "…" + text[-PROGRESS_TAIL_CHARS:]
