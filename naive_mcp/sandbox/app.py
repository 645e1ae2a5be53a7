"""The sandbox upstream: an ASGI app that speaks the three APIs of naive-api.md.

Naive's typed routes, Naive's proxy and OpenRouter itself (`Style`), each at its own prefix:
chat (JSON and SSE), text completions, models (both list shapes), generation (with the brief
404 right after a completion), `/key` and `/credits`, Bearer auth, tenancy headers and path
mounts, a ledger that goes down, and every error kind on purpose (`faults.py`). Deterministic:
the same request gets the same answer, tokens and cost.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from enum import Enum
from typing import Any, Literal, Protocol

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

_NAIVE_KEY_PREFIXES = ("nv_sk_live_", "nv_sk_test_", "nv_sess_")
_OPENROUTER_KEY_PREFIXES = ("sk-or-v1-",)
# Faults a fallback chain routes around, as OpenRouter does; the rest end the call.
_FALLBACK_STATUSES = frozenset({408, 429, 502, 503, 524, 529})


class Style(Enum):
    """Which of the three APIs a route speaks (naive-api.md, "Three bases, one body")."""

    TYPED = "typed"  # Naive's typed routes: /v1/llm/*, /v1/users/{id}/llm/*
    PROXY = "proxy"  # Naive's drop-in proxy: /v1/proxy/openrouter/* = OpenRouter's paths, Naive keys
    OPENROUTER = "openrouter"  # OpenRouter itself: /api/v1/*, `sk-or-v1-…` keys

    @property
    def openrouter_shapes(self) -> bool:
        """OpenRouter's bodies: errors with an int `code`, the rich model list, no Naive fields
        (credits_used, credits_remaining, truncated) and no tenancy."""
        return self is not Style.TYPED

    @property
    def key_prefixes(self) -> tuple[str, ...]:
        return _OPENROUTER_KEY_PREFIXES if self is Style.OPENROUTER else _NAIVE_KEY_PREFIXES

    @property
    def missing_key(self) -> str:
        if self is Style.OPENROUTER:
            return "No auth credentials found"
        return "Missing Authorization: Bearer <Naive API key>"

    def error(self, status: int, code: str | int, message: str, extra: dict[str, str]) -> dict[str, Any]:
        """The error object: Naive's (`code` its kind, extra fields beside it) or OpenRouter's
        (`code` the HTTP status, extra fields under `metadata`)."""
        if not self.openrouter_shapes:
            return {"code": code, "message": message, **extra}
        return {"code": status, "message": message, **({"metadata": dict(extra)} if extra else {})}


# Where each style is mounted.
_MOUNTS = (
    ("/v1/llm", Style.TYPED),
    ("/v1/users/{user_id}/llm", Style.TYPED),
    ("/v1/proxy/openrouter", Style.PROXY),
    ("/api/v1", Style.OPENROUTER),
)


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


def _within_context(reply: Reply, body: dict[str, Any], model: SandboxModel) -> None:
    """A prompt and max_tokens past the model's context are refused, in OpenRouter's words."""
    asked = body.get("max_tokens")
    output = asked if isinstance(asked, int) else 0
    if reply.prompt_tokens + output > model.context_length:
        raise ApiError(
            400,
            "invalid_input",
            f"This endpoint's maximum context length is {model.context_length} tokens. However, you "
            f"requested about {reply.prompt_tokens + output} tokens ({reply.prompt_tokens} of text input, "
            f'{output} in the output). Please reduce the length of either one, or use the "middle-out" '
            "transform to compress your prompt automatically.",
        )


def _tool_results_answer_calls(body: dict[str, Any]) -> None:
    """A tool result must answer a call of an earlier assistant message, in OpenAI's words (every
    provider refuses one that does not, and OpenRouter passes the refusal on)."""
    messages = body.get("messages")
    called: set[str] = set()
    for message in messages if isinstance(messages, list) else []:
        if not isinstance(message, dict):
            continue
        for call in message.get("tool_calls") or []:
            if isinstance(call, dict) and isinstance(call.get("id"), str):
                called.add(call["id"])
        if message.get("role") == "tool" and message.get("tool_call_id") not in called:
            raise ApiError(
                400,
                "invalid_input",
                "Invalid parameter: messages with role 'tool' must be a response to a preceeding "
                "message with 'tool_calls'.",
            )


class ApiError(Exception):
    """An error answer; `code` is Naive's kind, shown as the route's style has it."""

    def __init__(
        self,
        status: int,
        code: str | int,
        message: str,
        headers: dict[str, str] | None = None,
        extra: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}
        self.extra = extra or {}

    def response(self, style: Style) -> JSONResponse:
        return JSONResponse(
            {"error": style.error(self.status, self.code, self.message, self.extra)},
            status_code=self.status,
            headers=self.headers,
        )


@dataclass(frozen=True, slots=True)
class Caller:
    key: str
    user_id: str | None
    project_id: str | None
    record: RequestRecord
    style: Style


class Sandbox:
    """One sandbox upstream: its config, its ledger and its ASGI app."""

    def __init__(self, config: SandboxConfig | None = None) -> None:
        self.config = config or SandboxConfig()
        self.ledger = Ledger(self.config.initial_credits)
        routes = [Route("/health", self._health)]
        for prefix, style in _MOUNTS:
            routes += self._routes(prefix, style)
        self.app = Starlette(routes=routes)
        self._tried: set[tuple[str, str]] = set()
        self._tried_lock = threading.Lock()

    def _routes(self, prefix: str, style: Style) -> list[Route]:
        endpoints: list[tuple[str, Callable[[Request, Caller], Awaitable[Response]], list[str]]] = [
            ("/chat/completions", self._chat, ["POST"]),
            ("/models", self._models, ["GET"]),
            ("/generation", self._generation, ["GET"]),
        ]
        openrouter_only = [
            ("/completions", self._text_completion, ["POST"]),
            ("/key", self._key, ["GET"]),
            ("/credits", self._credits, ["GET"]),
        ]
        if style.openrouter_shapes:
            endpoints += openrouter_only
        else:
            # Naive's typed API has none of OpenRouter's own routes, and says so in its error shape.
            endpoints += [(path, _no_such_route, ["GET", "POST"]) for path, _, _ in openrouter_only]
        return [
            Route(f"{prefix}{path}", self._endpoint(handler, style), methods=methods)
            for path, handler, methods in endpoints
        ]

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
        self, handler: Callable[[Request, Caller], Awaitable[Response]], style: Style
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            try:
                caller = await self._caller(request, style)
                if self.config.latency:
                    await anyio.sleep(self.config.latency)
                return await handler(request, caller)
            except ApiError as error:
                return error.response(style)

        return endpoint

    async def _caller(self, request: Request, style: Style) -> Caller:
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
            RequestRecord(
                request.method,
                request.url.path,
                key,
                user_id,
                project_id,
                body,
                query=request.url.query,
                client_port=port,
            )
        )
        if key is None:
            raise ApiError(401, "unauthorized", style.missing_key)
        if not key.startswith(style.key_prefixes) or "revoked" in key or self.ledger.revoked(key):
            # Real services sometimes echo what they were sent; naive-mcp must never pass it on.
            raise ApiError(401, "unauthorized", f"Invalid API key: {key}")
        if style.openrouter_shapes and (user_id is not None or project_id is not None):
            raise ApiError(
                400,
                "invalid_input",
                "This API is not per-tenant (no X-Naive-User-Id or X-Naive-Project-Id); "
                "use Naive's /v1/llm routes for a user or a project",
            )
        if user_id is not None and user_id.startswith("unknown"):
            raise ApiError(404, "not_found", f"User {user_id} not found")
        if user_id is not None and user_id.startswith("foreign"):
            raise ApiError(403, "key_subject_mismatch", "This key is sealed to another user")
        return Caller(key, user_id, project_id, record, style)

    # --- endpoints ----------------------------------------------------------------------------

    async def _models(self, request: Request, caller: Caller) -> Response:
        search = (request.query_params.get("search") or "").lower()
        chosen = [model for model in MODELS if search in model.id.lower() or search in model.name.lower()]
        if self.config.echo_key:
            chosen = [replace(model, name=f"{model.name} (for {caller.key})") for model in chosen]
        if caller.style.openrouter_shapes:
            # OpenRouter lists text-output models unless `output_modalities` asks for others (or all).
            wanted = set((request.query_params.get("output_modalities") or "text").split(","))
            if "all" not in wanted:
                chosen = [model for model in chosen if wanted & set(model.output_modalities)]
        if caller.style.openrouter_shapes or self.config.models_shape == "openrouter":
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

    async def _key(self, request: Request, caller: Caller) -> Response:
        balance = self.ledger.usd_balance(caller.key)
        # OpenRouter labels a key by its ends; a careless upstream shows all of it.
        label = caller.key if self.config.echo_key else f"{caller.key[:12]}...{caller.key[-3:]}"
        return JSONResponse(
            {
                "data": {
                    "label": label,
                    "limit": balance.limit,
                    "limit_remaining": balance.remaining,
                    "limit_reset": None,
                    "usage": balance.usage,
                    "is_free_tier": False,
                }
            }
        )

    async def _credits(self, request: Request, caller: Caller) -> Response:
        balance = self.ledger.usd_balance(caller.key)
        return JSONResponse({"data": {"total_credits": balance.limit, "total_usage": balance.usage}})

    async def _chat(self, request: Request, caller: Caller) -> Response:
        return await self._complete(request, caller, CHAT)

    async def _text_completion(self, request: Request, caller: Caller) -> Response:
        return await self._complete(request, caller, TEXT)

    async def _complete(self, request: Request, caller: Caller, form: Form) -> Response:
        """A chat or text completion: routing, faults, balance, the answer (JSON or SSE), billing."""
        if not isinstance(caller.record.body, dict):
            raise ApiError(400, "invalid_input", "The body must be a JSON object")
        body = form.request(caller.record.body)
        flaky = flaky_fault(body.get("model"))
        if flaky is not None and self._first_try(caller.key, str(body["model"])):
            return await self._fault_response(request, flaky, caller.style, caller.record)
        model, fault = self._route(body)
        if fault is not None and fault.midstream is None:
            return await self._fault_response(request, fault, caller.style, caller.record)
        if self.ledger.balance(caller.key) <= 0:
            raise ApiError(402, "insufficient_credits", "Not enough credits")
        extra_words = {"slow": self.config.slow_words, "runaway": self.config.runaway_words}
        if form is CHAT:
            _tool_results_answer_calls(body)
        reply = respond(body, model, extra_words=extra_words.get(model.pace, 0))
        _within_context(reply, body, model)
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
                self._stream(caller, generation, reply, model, fault, form), media_type="text/event-stream"
            )
        if fault is not None:
            return _dropped_or_failed(fault, caller.style)
        if model.pace != "normal":
            await anyio.sleep(self._pace_seconds(model, reply, form))
        credits_used, credits_remaining = self.ledger.charge(caller.key, generation.total_cost)
        self.ledger.record_generation(generation)
        answer: dict[str, Any] = {
            "id": generation.id,
            "object": form.object,
            "created": int(time.time()),
            "model": model.id,
            "provider": model.provider,
            "choices": [form.choice(reply, self._deltas(reply, model, form))],
            "usage": _usage(reply, generation.total_cost),
        }
        if not caller.style.openrouter_shapes:
            answer |= {
                **({"truncated": True} if reply.truncated else {}),
                "credits_used": credits_used,
                "credits_remaining": credits_remaining,
            }
        return JSONResponse(answer)

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

    async def _fault_response(
        self, request: Request, fault: Fault, style: Style, record: RequestRecord
    ) -> Response:
        if fault.hang:
            # Its record says when the client went away, as a streamed answer's does.
            deadline = time.monotonic() + self.config.hang_seconds
            try:
                while time.monotonic() < deadline:
                    if await request.is_disconnected():
                        record.disconnected_at = time.monotonic()
                        break
                    await anyio.sleep(0.05)
            finally:
                record.stream_ended.set()
            return Response(status_code=504)
        if fault.body is not None or fault.code is None:
            return Response(fault.body, status_code=fault.status, headers=fault.headers)
        return ApiError(fault.status, fault.code, fault.message, fault.headers, fault.extra).response(style)

    def _pace_seconds(self, model: SandboxModel, reply: Reply, form: Form) -> float:
        """How long a slow or thinking model takes to answer in one piece."""
        if model.pace == "think":
            return self.config.think_seconds
        if model.pace == "runaway":
            return self.config.runaway_chunk_delay * len(form.deltas(reply, token_pieces=True))
        return self.config.slow_chunk_delay * len(form.deltas(reply, echo=self.config.echo_key))

    def _deltas(self, reply: Reply, model: SandboxModel, form: Form) -> list[dict[str, Any]]:
        """The answer in the pieces it streams in (the same, streamed or not, for its logprobs)."""
        return form.deltas(reply, token_pieces=model.pace == "runaway", echo=self.config.echo_key)

    async def _stream(
        self,
        caller: Caller,
        generation: GenerationRecord,
        reply: Reply,
        model: SandboxModel,
        fault: Fault | None,
        form: Form,
    ) -> AsyncIterator[str]:
        """The answer as SSE. Charged at the end, or for the part sent when the client goes away."""
        base = {"id": generation.id, "object": form.chunk_object, "model": generation.model}
        deltas = self._deltas(reply, model, form)
        cut_at = len(deltas) // 2 + 1 if fault is not None and fault.midstream else None
        delays = {"slow": self.config.slow_chunk_delay, "runaway": self.config.runaway_chunk_delay}
        delay = delays.get(model.pace, self.config.chunk_delay)
        sent, outcome = 0, "disconnected"
        try:
            yield ": OPENROUTER PROCESSING\n\n"
            if fault is not None and fault.midstream == "tool-call-flood":
                async for event in _flood(base, form):
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
                    yield _event({**base, "error": error, "choices": [form.chunk_choice({}, "error")]})
                    return
                if delay:
                    await anyio.sleep(delay)
                if caller.record.first_chunk_at is None:
                    caller.record.first_chunk_at = time.monotonic()
                choice = form.chunk_choice(delta, None, _logprobs(reply, [delta]))
                yield _event({**base, "choices": [choice]})
                sent += 1
            yield _event({**base, "choices": [form.chunk_choice({}, reply.finish_reason)]})
            credits_used, credits_remaining = self.ledger.charge(caller.key, generation.total_cost)
            usage_chunk: dict[str, Any] = {
                **base,
                "provider": generation.provider,
                "choices": [],
                "usage": _usage(reply, generation.total_cost),
            }
            if not caller.style.openrouter_shapes:
                usage_chunk |= {"credits_used": credits_used, "credits_remaining": credits_remaining}
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


class Form(Protocol):
    """What a chat completion and a text completion differ in: the body they take and the shape
    of their answer. Everything else (routing, faults, pacing, billing, SSE) is `_complete`'s."""

    object: str  # of the answer in one piece
    chunk_object: str  # of each streamed chunk

    def request(self, body: dict[str, Any]) -> dict[str, Any]:
        """The body `respond()` answers; ApiError when it is not one this form takes."""
        ...

    def choice(self, reply: Reply, deltas: list[dict[str, Any]]) -> dict[str, Any]:
        """The answer's one choice, in one piece (`deltas`: the pieces it would stream in)."""
        ...

    def deltas(self, reply: Reply, *, token_pieces: bool = False, echo: bool = False) -> list[dict[str, Any]]:
        """The answer in the pieces a stream sends (see `_deltas`)."""
        ...

    def chunk_choice(
        self, delta: dict[str, Any], finish_reason: str | None, logprobs: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """A streamed chunk's one choice, carrying `delta` (and its logprobs, if asked for)."""
        ...

    def flood_delta(self, index: int) -> dict[str, Any]:
        """The `index`th delta of a stream that never ends (`sandbox/fail-tool-call-flood`)."""
        ...


class ChatForm:
    """`POST /chat/completions`: messages (or a prompt) in, an assistant message out."""

    object = "chat.completion"
    chunk_object = "chat.completion.chunk"

    def request(self, body: dict[str, Any]) -> dict[str, Any]:
        if not body.get("messages") and not body.get("prompt"):
            raise ApiError(400, "invalid_input", "Provide messages or prompt")
        return body

    def choice(self, reply: Reply, deltas: list[dict[str, Any]]) -> dict[str, Any]:
        return {
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
            "logprobs": _logprobs(reply, deltas),
        }

    def deltas(self, reply: Reply, *, token_pieces: bool = False, echo: bool = False) -> list[dict[str, Any]]:
        return _deltas(reply, token_pieces=token_pieces, echo=echo)

    def chunk_choice(
        self, delta: dict[str, Any], finish_reason: str | None, logprobs: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        chosen = {"index": 0, "delta": delta, "finish_reason": finish_reason}
        return chosen if not delta else {**chosen, "logprobs": logprobs}

    def flood_delta(self, index: int) -> dict[str, Any]:
        """Opens a call at a new index and adds a 1 KB name fragment to each of the 8 newest calls."""
        calls: list[dict[str, Any]] = [
            {"index": index, "id": f"call_{index}", "type": "function", "function": {"name": "f"}}
        ]
        calls += [{"index": old, "function": {"name": "n" * 1024}} for old in range(max(0, index - 8), index)]
        return {"tool_calls": calls}


# Chat fields a text completion has no use for: it answers its prompt, with no tools to call.
_CHAT_ONLY_FIELDS = ("messages", "tools", "tool_choice", "parallel_tool_calls")


class TextForm:
    """`POST /completions` (OpenRouter's, not on Naive's typed routes): a prompt string in, text out."""

    object = "text_completion"
    chunk_object = "text_completion"

    def request(self, body: dict[str, Any]) -> dict[str, Any]:
        if "prompt" not in body:
            raise ApiError(400, "invalid_input", "Provide prompt")
        if not isinstance(body["prompt"], str):
            raise ApiError(400, "invalid_input", "prompt must be a string")
        return {name: value for name, value in body.items() if name not in _CHAT_ONLY_FIELDS}

    def choice(self, reply: Reply, deltas: list[dict[str, Any]]) -> dict[str, Any]:
        return {"text": reply.content, "index": 0, "finish_reason": reply.finish_reason}

    def deltas(self, reply: Reply, *, token_pieces: bool = False, echo: bool = False) -> list[dict[str, Any]]:
        return [{"content": piece} for piece in _content_pieces(reply.content, token_pieces, echo)]

    def chunk_choice(
        self, delta: dict[str, Any], finish_reason: str | None, logprobs: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        return {"text": delta.get("content", ""), "index": 0, "finish_reason": finish_reason}

    def flood_delta(self, index: int) -> dict[str, Any]:
        return {"content": "n" * 1024}


CHAT: Form = ChatForm()
TEXT: Form = TextForm()


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


async def _no_such_route(request: Request, caller: Caller) -> Response:
    """Naive's typed API has no text completions, `/key` or `/credits`: only OpenRouter's paths do."""
    raise ApiError(
        404,
        "not_found",
        f"No route {request.method} {request.url.path}: it is on Naive's proxy "
        "(/v1/proxy/openrouter) and OpenRouter (/api/v1), not on the /v1/llm routes",
    )


async def _flood(base: dict[str, Any], form: Form) -> AsyncIterator[str]:
    """Deltas without end (tool calls for chat, text for a text completion). Ends only when the
    client goes away."""
    index = 0
    while True:
        yield _event({**base, "choices": [form.chunk_choice(form.flood_delta(index), None)]})
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
    deltas += [{"content": piece} for piece in _content_pieces(reply.content, token_pieces, echo)]
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


def _content_pieces(text: str, token_pieces: bool, echo: bool) -> list[str]:
    """The answer's text in the pieces a stream sends (see `_deltas`)."""
    if echo:
        return [text[at : at + 5] for at in range(0, len(text), 5)]
    return _token_pieces(text) if token_pieces else _pieces(text)


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


def _dropped_or_failed(fault: Fault, style: Style) -> Response:
    """What a midstream fault does to an answer asked for in one piece."""
    if fault.midstream == "error":
        return ApiError(502, "provider_error", fault.message).response(style)

    async def cut() -> AsyncIterator[bytes]:
        yield b'{"id": "gen-cut", "choices": [{"message": {"content": "Half an ans'
        raise ConnectionAbortedError("sandbox: connection dropped on purpose")

    return StreamingResponse(cut(), media_type="application/json")
