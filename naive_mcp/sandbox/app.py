"""The sandbox upstream: an ASGI app that speaks the Naive API of naive-api.md.

Chat (JSON and SSE), models (both list shapes), generation (with the brief 404 right after a
completion), Bearer auth, tenancy headers and path mounts, a credits ledger that goes down,
and every error kind on purpose (`faults.py`). Deterministic: the same request gets the same
answer, tokens and cost.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, Literal

import anyio
import anyio.lowlevel
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from naive_mcp.sandbox.catalogue import BY_ID, MODELS, SandboxModel, find_model
from naive_mcp.sandbox.faults import Fault, fault_for, flaky_fault
from naive_mcp.sandbox.ledger import GenerationRecord, Ledger, RequestRecord
from naive_mcp.sandbox.responder import CHARS_PER_TOKEN, Reply, ToolCall, respond, token_logprobs

_KEY_PREFIXES = ("nv_sk_live_", "nv_sk_test_", "nv_sess_")
# Faults a fallback chain routes around, as OpenRouter does; the rest end the call.
_FALLBACK_STATUSES = frozenset({408, 429, 502, 503, 524, 529})


@dataclass(frozen=True, slots=True)
class SandboxConfig:
    initial_credits: float = 100.0
    generation_delay: float = 0.5  # seconds before a generation's stats exist
    latency: float = 0.0  # seconds before any answer
    chunk_delay: float = 0.0  # seconds between streamed chunks
    # `sandbox/slow` drips a long answer; `sandbox/think` is silent but for keep-alives, then answers.
    slow_chunk_delay: float = 0.25
    slow_words: int = 400
    # `sandbox/runaway` answers this many extra words whatever max_tokens says, a chunk every
    # `runaway_chunk_delay` seconds (a token per chunk, as OpenAI streams).
    runaway_words: int = 400
    runaway_chunk_delay: float = 0.002
    think_seconds: float = 30.0
    keepalive_interval: float = 2.0
    hang_seconds: float = 300.0
    models_shape: Literal["naive", "openrouter"] = "naive"  # of /v1/llm/models
    # A careless upstream: every answer repeats the caller's key — in the text (cut across chunks
    # of a few characters), the reasoning, each tool call's arguments, and each listed model's name.
    echo_key: bool = False


class ApiError(Exception):
    def __init__(
        self, status: int, code: str | int, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        return JSONResponse(
            {"error": {"code": self.code, "message": self.message}},
            status_code=self.status,
            headers=self.headers,
        )


@dataclass(frozen=True, slots=True)
class Caller:
    key: str
    user_id: str | None
    project_id: str | None
    record: RequestRecord


class Sandbox:
    """One sandbox upstream: its config, its ledger and its ASGI app."""

    def __init__(self, config: SandboxConfig | None = None) -> None:
        self.config = config or SandboxConfig()
        self.ledger = Ledger(self.config.initial_credits)
        routes = [Route("/health", self._health)]
        for prefix in ("/v1/llm", "/v1/users/{user_id}/llm", "/v1/proxy/openrouter"):
            routes += [
                Route(f"{prefix}/chat/completions", self._endpoint(self._chat), methods=["POST"]),
                Route(f"{prefix}/models", self._endpoint(self._models), methods=["GET"]),
                Route(f"{prefix}/generation", self._endpoint(self._generation), methods=["GET"]),
            ]
        self.app = Starlette(routes=routes)
        self._tried: set[tuple[str, str]] = set()
        self._tried_lock = threading.Lock()

    def _first_try(self, key: str, model: str) -> bool:
        """Whether this is the key's first call to a flaky model (which then fails)."""
        with self._tried_lock:
            first = (key, model) not in self._tried
            self._tried.add((key, model))
            return first

    # --- plumbing -----------------------------------------------------------------------------

    async def _health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    def _endpoint(
        self, handler: Callable[[Request, Caller], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            try:
                caller = await self._caller(request)
                if self.config.latency:
                    await anyio.sleep(self.config.latency)
                return await handler(request, caller)
            except ApiError as error:
                return error.response()

        return endpoint

    async def _caller(self, request: Request) -> Caller:
        body: Any = None
        if request.method == "POST":
            raw = await request.body()
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw.decode("utf-8", "replace")
        key = _bearer(request.headers.get("authorization"))
        user_id = request.path_params.get("user_id") or request.headers.get("x-naive-user-id")
        if user_id in ("default", "me"):
            user_id = None
        project_id = request.headers.get("x-naive-project-id")
        port = request.client.port if request.client else None
        record = self.ledger.record_request(
            RequestRecord(request.method, request.url.path, key, user_id, project_id, body, client_port=port)
        )
        if key is None:
            raise ApiError(401, "unauthorized", "Missing Authorization: Bearer <Naive API key>")
        if not key.startswith(_KEY_PREFIXES) or "revoked" in key or self.ledger.revoked(key):
            # Real services sometimes echo what they were sent; naive-mcp must never pass it on.
            raise ApiError(401, "unauthorized", f"Invalid API key: {key}")
        if request.url.path.startswith("/v1/proxy/") and user_id is not None:
            raise ApiError(400, "invalid_input", "The proxy is not per-tenant; use /v1/llm routes")
        if user_id is not None and user_id.startswith("unknown"):
            raise ApiError(404, "not_found", f"User {user_id} not found")
        if user_id is not None and user_id.startswith("foreign"):
            raise ApiError(403, "key_subject_mismatch", "This key is sealed to another user")
        return Caller(key, user_id, project_id, record)

    # --- endpoints ----------------------------------------------------------------------------

    async def _models(self, request: Request, caller: Caller) -> Response:
        search = (request.query_params.get("search") or "").lower()
        chosen = [model for model in MODELS if search in model.id.lower() or search in model.name.lower()]
        if self.config.echo_key:
            chosen = [replace(model, name=f"{model.name} (for {caller.key})") for model in chosen]
        if request.url.path.startswith("/v1/proxy/") or self.config.models_shape == "openrouter":
            return JSONResponse({"data": [model.openrouter_shape() for model in chosen]})
        return JSONResponse({"count": len(chosen), "models": [model.naive_shape() for model in chosen]})

    async def _generation(self, request: Request, caller: Caller) -> Response:
        generation_id = request.query_params.get("id")
        if not generation_id:
            raise ApiError(400, "invalid_input", "Query parameter id is required")
        record = self.ledger.generation(generation_id)
        visible = record is not None and time.monotonic() - record.created >= self.config.generation_delay
        if record is None or not visible or record.key != caller.key:
            raise ApiError(404, "not_found", f"Generation {generation_id} not found")
        return JSONResponse({"data": record.as_openrouter()})

    async def _chat(self, request: Request, caller: Caller) -> Response:
        body = caller.record.body
        if not isinstance(body, dict):
            raise ApiError(400, "invalid_input", "The body must be a JSON object")
        if not body.get("messages") and not body.get("prompt"):
            raise ApiError(400, "invalid_input", "Provide messages or prompt")
        flaky = flaky_fault(body.get("model"))
        if flaky is not None and self._first_try(caller.key, str(body["model"])):
            return await self._fault_response(request, flaky)
        model, fault = self._route(body)
        if fault is not None and fault.midstream is None:
            return await self._fault_response(request, fault)
        if self.ledger.balance(caller.key) <= 0:
            raise ApiError(402, "insufficient_credits", "Not enough credits")
        extra_words = {"slow": self.config.slow_words, "runaway": self.config.runaway_words}
        reply = respond(body, model, extra_words=extra_words.get(model.pace, 0))
        if self.config.echo_key:
            reply = _echoing(reply, caller.key)
        generation = GenerationRecord(
            id=self.ledger.new_generation_id(),
            key=caller.key,
            user_id=caller.user_id,
            project_id=caller.project_id,
            model=model.id,
            provider=model.provider,
            total_cost=reply.cost(model),
            tokens_prompt=reply.prompt_tokens,
            tokens_completion=reply.completion_tokens,
            reasoning_tokens=reply.reasoning_tokens,
            finish_reason=reply.finish_reason,
            streamed=bool(body.get("stream")),
        )
        if body.get("stream"):
            return StreamingResponse(
                self._stream(caller, generation, reply, model, fault), media_type="text/event-stream"
            )
        if fault is not None:
            return _dropped_or_failed(fault)
        if model.pace != "normal":
            await anyio.sleep(self._pace_seconds(model, reply))
        credits_used, credits_remaining = self.ledger.charge(caller.key, generation.total_cost)
        self.ledger.record_generation(generation)
        return JSONResponse(
            {
                "id": generation.id,
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model.id,
                "provider": model.provider,
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": reply.finish_reason,
                        "native_finish_reason": reply.finish_reason,
                        "message": {
                            "role": "assistant",
                            "content": reply.content,
                            "tool_calls": _tool_calls(reply) or None,
                            "reasoning": reply.reasoning,
                            **({"images": _images(reply)} if reply.output_images else {}),
                        },
                        "logprobs": _logprobs(reply, self._deltas(reply, model)),
                    }
                ],
                "usage": _usage(reply, generation.total_cost),
                **({"truncated": True} if reply.truncated else {}),
                "credits_used": credits_used,
                "credits_remaining": credits_remaining,
            }
        )

    def _route(self, body: dict[str, Any]) -> tuple[SandboxModel, Fault | None]:
        """The model that answers: the first of `model`, then `models`, that can (OpenRouter's fallback)."""
        chain = [body.get("model"), *(body.get("models") or [])]
        candidates = [name for name in dict.fromkeys(chain) if isinstance(name, str)]
        if not candidates:
            raise ApiError(400, "invalid_input", "model is required")
        provider: dict[str, Any] = body["provider"] if isinstance(body.get("provider"), dict) else {}
        last_error: ApiError | None = None
        for index, name in enumerate(candidates):
            fault = fault_for(name)
            is_last = index == len(candidates) - 1
            if fault is not None and fault.midstream is None:
                if is_last or fault.status not in _FALLBACK_STATUSES:
                    return BY_ID[name], fault
                continue
            model = find_model(name)
            if model is None:
                last_error = ApiError(400, "invalid_input", f"{name} is not a valid model ID")
                continue
            if not _provider_allowed(model, provider):
                last_error = ApiError(
                    400,
                    "invalid_input",
                    f"No allowed providers are available for the selected model ({name})",
                )
                continue
            return model, fault
        assert last_error is not None
        raise last_error

    async def _fault_response(self, request: Request, fault: Fault) -> Response:
        if fault.hang:
            deadline = time.monotonic() + self.config.hang_seconds
            while time.monotonic() < deadline and not await request.is_disconnected():  # noqa: ASYNC110
                await anyio.sleep(0.05)
            return Response(status_code=504)
        if fault.body is not None:
            return Response(fault.body, status_code=fault.status, headers=fault.headers)
        error: dict[str, Any] = {"code": fault.code, "message": fault.message, **fault.extra}
        return JSONResponse({"error": error}, status_code=fault.status, headers=fault.headers)

    def _pace_seconds(self, model: SandboxModel, reply: Reply) -> float:
        """How long a slow or thinking model takes to answer in one piece."""
        if model.pace == "think":
            return self.config.think_seconds
        if model.pace == "runaway":
            return self.config.runaway_chunk_delay * len(_deltas(reply, token_pieces=True))
        return self.config.slow_chunk_delay * len(_deltas(reply, echo=self.config.echo_key))

    def _deltas(self, reply: Reply, model: SandboxModel) -> list[dict[str, Any]]:
        """The answer in the pieces it streams in (the same, streamed or not, for its logprobs)."""
        return _deltas(reply, token_pieces=model.pace == "runaway", echo=self.config.echo_key)

    async def _stream(
        self,
        caller: Caller,
        generation: GenerationRecord,
        reply: Reply,
        model: SandboxModel,
        fault: Fault | None,
    ) -> AsyncIterator[str]:
        """The answer as SSE. Charged at the end, or for the part sent when the client goes away."""
        base = {"id": generation.id, "object": "chat.completion.chunk", "model": generation.model}
        deltas = self._deltas(reply, model)
        cut_at = len(deltas) // 2 + 1 if fault is not None and fault.midstream else None
        delays = {"slow": self.config.slow_chunk_delay, "runaway": self.config.runaway_chunk_delay}
        delay = delays.get(model.pace, self.config.chunk_delay)
        sent, outcome = 0, "disconnected"
        try:
            yield ": OPENROUTER PROCESSING\n\n"
            if fault is not None and fault.midstream == "tool-call-flood":
                async for event in _tool_call_flood(base):
                    yield event
            if model.pace == "think":
                deadline = time.monotonic() + self.config.think_seconds
                while time.monotonic() < deadline:
                    await anyio.sleep(
                        min(self.config.keepalive_interval, max(deadline - time.monotonic(), 0))
                    )
                    yield ": OPENROUTER PROCESSING\n\n"
            for delta in deltas:
                if sent == cut_at and fault is not None:
                    if fault.midstream == "drop":
                        outcome = "dropped"
                        raise ConnectionAbortedError("sandbox: connection dropped on purpose")
                    outcome = "failed"
                    error = {"code": 502, "message": fault.message}
                    finish = [{"index": 0, "delta": {}, "finish_reason": "error"}]
                    yield _event({**base, "error": error, "choices": finish})
                    return
                if delay:
                    await anyio.sleep(delay)
                if caller.record.first_chunk_at is None:
                    caller.record.first_chunk_at = time.monotonic()
                choice = {
                    "index": 0,
                    "delta": delta,
                    "finish_reason": None,
                    "logprobs": _logprobs(reply, [delta]),
                }
                yield _event({**base, "choices": [choice]})
                sent += 1
            finish = [{"index": 0, "delta": {}, "finish_reason": reply.finish_reason}]
            yield _event({**base, "choices": finish})
            credits_used, credits_remaining = self.ledger.charge(caller.key, generation.total_cost)
            usage_chunk: dict[str, Any] = {
                **base,
                "provider": generation.provider,
                "choices": [],
                "usage": _usage(reply, generation.total_cost),
                "credits_used": credits_used,
                "credits_remaining": credits_remaining,
            }
            if reply.truncated:
                usage_chunk["truncated"] = True
            yield _event(usage_chunk)
            yield "data: [DONE]\n\n"
            outcome = "finished"
        finally:
            if outcome != "finished":
                # Providers bill what they generated before the connection went away.
                generation.total_cost = round(generation.total_cost * sent / max(len(deltas), 1), 10)
                generation.cancelled = True
                self.ledger.charge(caller.key, generation.total_cost)
            if outcome == "disconnected":
                caller.record.disconnected_at = time.monotonic()
            self.ledger.record_generation(generation)
            caller.record.stream_ended.set()


def create_app(config: SandboxConfig | None = None) -> Starlette:
    return Sandbox(config).app


def _bearer(header: str | None) -> str | None:
    if not header or not header.lower().startswith("bearer "):
        return None
    return header[7:].strip() or None


def _provider_allowed(model: SandboxModel, provider: dict[str, Any]) -> bool:
    slug = model.provider.lower()
    only = [str(name).lower() for name in provider.get("only") or []]
    ignore = [str(name).lower() for name in provider.get("ignore") or []]
    return (not only or slug in only) and slug not in ignore


def _tool_calls(reply: Reply) -> list[dict[str, Any]]:
    return [
        {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}
        for call in reply.tool_calls
    ]


def _images(reply: Reply) -> list[dict[str, Any]]:
    return [{"type": "image_url", "image_url": {"url": url}} for url in reply.output_images]


def _logprobs(reply: Reply, deltas: list[dict[str, Any]]) -> dict[str, Any] | None:
    """`choices[0].logprobs` for the text of `deltas`, when the call asked for logprobs."""
    if reply.logprobs is None:
        return None
    pieces = [delta["content"] for delta in deltas if delta.get("content")]
    return {"content": [token_logprobs(piece, reply.logprobs) for piece in pieces]}


def _usage(reply: Reply, cost: float) -> dict[str, Any]:
    completion = reply.completion_tokens + reply.reasoning_tokens
    return {
        "prompt_tokens": reply.prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": reply.prompt_tokens + completion,
        "cost": cost,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": reply.reasoning_tokens},
    }


def _echoing(reply: Reply, key: str) -> Reply:
    """`reply`, repeating `key` wherever an answer can carry text."""
    calls = [
        ToolCall(call.id, call.name, json.dumps({**json.loads(call.arguments), "key": key}))
        for call in reply.tool_calls
    ]
    return replace(
        reply,
        content=f"{reply.content} Your key is {key}, as sent." if reply.content else reply.content,
        reasoning=f"{reply.reasoning or ''} The caller's key is {key}.",
        tool_calls=calls,
    )


async def _tool_call_flood(base: dict[str, Any]) -> AsyncIterator[str]:
    """Tool-call deltas without end: each chunk opens a call at a new index and adds a 1 KB name
    fragment to each of the 8 newest calls. Ends only when the client goes away."""
    index = 0
    while True:
        calls: list[dict[str, Any]] = [
            {"index": index, "id": f"call_{index}", "type": "function", "function": {"name": "f"}}
        ]
        calls += [{"index": old, "function": {"name": "n" * 1024}} for old in range(max(0, index - 8), index)]
        delta = {"tool_calls": calls}
        yield _event({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]})
        index += 1
        if index % 64 == 0:
            await anyio.lowlevel.checkpoint()  # let the rest of the sandbox run


def _deltas(reply: Reply, *, token_pieces: bool = False, echo: bool = False) -> list[dict[str, Any]]:
    """The answer as a stream of deltas: reasoning, then text in pieces (of three words, or of
    one token each), then tool calls in pieces. `echo`: the text in pieces of 5 characters, so
    that a key in it is cut across chunks."""
    pieces = _token_pieces if token_pieces else _pieces
    deltas: list[dict[str, Any]] = [{"role": "assistant", "content": ""}]
    if reply.reasoning:
        deltas += [{"reasoning": piece} for piece in pieces(reply.reasoning)]
    if echo:
        deltas += [{"content": reply.content[at : at + 5]} for at in range(0, len(reply.content), 5)]
    else:
        deltas += [{"content": piece} for piece in pieces(reply.content)]
    for index, call in enumerate(reply.tool_calls):
        head, tail = call.arguments[: len(call.arguments) // 2], call.arguments[len(call.arguments) // 2 :]
        deltas.append(
            {
                "tool_calls": [
                    {
                        "index": index,
                        "id": call.id,
                        "type": "function",
                        "function": {"name": call.name, "arguments": head},
                    }
                ]
            }
        )
        deltas.append({"tool_calls": [{"index": index, "function": {"arguments": tail}}]})
    if reply.output_images:
        deltas.append({"images": _images(reply)})
    return deltas


def _pieces(text: str, words_per_piece: int = 3) -> list[str]:
    words = text.split(" ")
    return [
        " ".join(words[start : start + words_per_piece])
        + (" " if start + words_per_piece < len(words) else "")
        for start in range(0, len(words), words_per_piece)
        if text
    ]


def _token_pieces(text: str) -> list[str]:
    return [text[start : start + CHARS_PER_TOKEN] for start in range(0, len(text), CHARS_PER_TOKEN)]


def _event(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n"


def _dropped_or_failed(fault: Fault) -> Response:
    if fault.midstream == "error":
        return JSONResponse({"error": {"code": "provider_error", "message": fault.message}}, status_code=502)

    async def cut() -> AsyncIterator[bytes]:
        yield b'{"id": "gen-cut", "choices": [{"message": {"content": "Half an ans'
        raise ConnectionAbortedError("sandbox: connection dropped on purpose")

    return StreamingResponse(cut(), media_type="application/json")
