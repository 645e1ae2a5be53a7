"""ChatStream: a streamed chat completion, assembled chunk by chunk into the non-streamed shape.

Chunks are OpenRouter's `chat.completion.chunk` objects (naive-api.md): deltas of `content`,
`reasoning` and `tool_calls` (arguments split across chunks, joined by `index`), a chunk with
the `finish_reason`, a last chunk with `usage` and `choices: []`, then `[DONE]`. Unknown fields
are ignored. A chunk with a top-level `error` (status 200, `finish_reason: "error"`) ends the
answer with an `IncompleteAnswer` that keeps what arrived.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from naive_mcp.errors import IncompleteAnswer, kind_from_code
from naive_mcp.wire import ChatCompletion

# How much of the answer a progress notification carries: its newest part, not all of it.
PROGRESS_TAIL_CHARS = 400


@dataclass
class _ToolCallParts:
    id: str | None = None
    name: str = ""
    arguments: list[str] = field(default_factory=list)


class ChatStream:
    """The answer so far. Feed it chunks with `add`; finish with `completion()`."""

    def __init__(self) -> None:
        self._text: list[str] = []
        self._reasoning: list[str] = []
        self._tool_calls: dict[int, _ToolCallParts] = {}
        self._top: dict[str, Any] = {}  # id, model, provider, usage, credits, truncated
        self.finish_reason: str | None = None
        self.done = False  # `[DONE]` arrived
        self.chunks = 0

    @property
    def text(self) -> str:
        return "".join(self._text)

    def add(self, chunk: object) -> None:
        """Take one parsed chunk. Raises `IncompleteAnswer` for an in-stream error."""
        if not isinstance(chunk, dict):
            raise self.broken("bad_response", f"a streamed chunk is not a JSON object: {_preview(chunk)}")
        self.chunks += 1
        for key in ("id", "model", "provider", "usage", "credits_used", "credits_remaining", "truncated"):
            if chunk.get(key) is not None:
                self._top[key] = chunk[key]
        choices = chunk.get("choices")
        choice = _object(choices[0] if isinstance(choices, list) and choices else None)
        delta = _object(choice.get("delta"))
        if isinstance(delta.get("content"), str):
            self._text.append(delta["content"])
        if isinstance(delta.get("reasoning"), str):
            self._reasoning.append(delta["reasoning"])
        for call in delta.get("tool_calls") or []:
            if isinstance(call, dict):
                self._add_tool_call(call)
        error = chunk.get("error")
        if isinstance(error, dict) or choice.get("finish_reason") == "error":
            details = error if isinstance(error, dict) else {}
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
        return ChatCompletion.model_validate(
            {**self._top, "choices": [{"index": 0, "finish_reason": self.finish_reason, "message": message}]}
        )

    def broken(self, kind: str, message: str) -> IncompleteAnswer:
        """The error for an answer that stops here, keeping what arrived."""
        return IncompleteAnswer(message, kind=kind, partial=self.text)

    def progress_message(self) -> str:
        """What a progress notification says: the newest part of the answer."""
        if self._text:
            return _tail(self.text)
        if self._tool_calls:
            names = ", ".join(call.name for call in self._tool_calls.values() if call.name)
            return f"Preparing tool calls: {names}"
        if self._reasoning:
            return "Reasoning: " + _tail("".join(self._reasoning))
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


def _object(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _tail(text: str) -> str:
    return text if len(text) <= PROGRESS_TAIL_CHARS else "…" + text[-PROGRESS_TAIL_CHARS:]


def _preview(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
