"""NaiveClient: the one way naive-mcp talks to the upstream.

It owns a long-lived `httpx2.AsyncClient` (one connection pool for the process), adds auth and
tenancy headers, and turns every failure into an error of `naive_mcp.errors`. Tool code never
touches HTTP.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import anyio
import httpx2
from pydantic import BaseModel, ValidationError

from naive_mcp import __version__
from naive_mcp.caller import Caller
from naive_mcp.errors import (
    UpstreamError,
    UpstreamProtocolError,
    UpstreamTimeout,
    UpstreamUnreachable,
    error_from_response,
)
from naive_mcp.settings import Settings
from naive_mcp.streaming import ChatStream
from naive_mcp.wire import ChatCompletion, Generation, GenerationEnvelope, ModelEntry, ModelList

logger = logging.getLogger(__name__)

_WireT = TypeVar("_WireT", bound=BaseModel)

_DRAIN_SECONDS = 1.0
_QUICK_READ_SECONDS = 30.0
# One SSE event carries one chunk; httpx2's default cap (1 MiB) is below what a large tool-call
# argument or a long reasoning block can reach.
_MAX_EVENT_BYTES = 16 * 1024 * 1024
# Right after a completion its stats may not exist for about a second (naive-api.md).
_GENERATION_FIRST_BACKOFF = 0.25
_GENERATION_MAX_BACKOFF = 1.0


def make_http_client(settings: Settings) -> httpx2.AsyncClient:
    """The process's one HTTP client for the upstream."""
    return httpx2.AsyncClient(
        timeout=httpx2.Timeout(settings.read_timeout, connect=settings.connect_timeout),
        limits=httpx2.Limits(max_connections=200, max_keepalive_connections=50),
        headers={"User-Agent": f"naive-mcp/{__version__}"},
        follow_redirects=False,
    )


class NaiveClient:
    """Typed calls to the Naive `llm` primitive."""

    def __init__(self, settings: Settings, http: httpx2.AsyncClient) -> None:
        self._settings = settings
        self._http = http
        self._base_url = settings.base_url
        self._shown_url = settings.shown_base_url
        # Listings and stats answer in seconds: the long read timeout is for generations only.
        self._quick_timeout = httpx2.Timeout(
            min(settings.read_timeout, _QUICK_READ_SECONDS), connect=settings.connect_timeout
        )

    async def chat(
        self, body: dict[str, Any], caller: Caller, on_chunk: Callable[[ChatStream], None] | None = None
    ) -> ChatCompletion:
        """One chat completion, always streamed from the upstream (`body` is OpenRouter's chat
        request). `on_chunk` sees the answer grow. Leaving early (cancellation) closes the
        connection at once, which is what stops the model and the billing upstream."""
        path = "/v1/llm/chat/completions"
        stream = ChatStream()
        with self._transport_errors(stream):
            async with self._http.stream(
                "POST",
                f"{self._base_url}{path}",
                headers=caller.headers(),
                json={**body, "stream": True},
            ) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise error_from_response(response.status_code, dict(response.headers), response.content)
                if not _is_event_stream(response):
                    # A server that answers in one piece although asked to stream: read it whole.
                    await response.aread()
                    return _parse(ChatCompletion, _json(response, "POST", path), "chat completion")
                events = aiter(httpx2.EventSource(response, max_event_size=_MAX_EVENT_BYTES))
                async for event in events:
                    stream.feed(event.data)
                    if stream.done:
                        # Read to the end of the body, so the connection goes back to the pool
                        # instead of being closed; an upstream that lingers is not waited for.
                        with anyio.move_on_after(_DRAIN_SECONDS):
                            async for _ in events:
                                pass
                        break
                    if on_chunk is not None:
                        on_chunk(stream)
        return stream.finish()

    async def models(self, caller: Caller) -> list[ModelEntry]:
        """Every routable model, in either of the two documented list shapes."""
        payload = await self._request("GET", "/v1/llm/models", caller)
        return _parse(ModelList, payload, "model list").models

    async def generation(self, generation_id: str, caller: Caller, *, just_made: bool) -> Generation:
        """Stats of an earlier completion. For one `just_made`, wait out the brief 404 the
        upstream answers right after it finished; any other id is answered at once."""
        deadline = time.monotonic() + (self._settings.generation_wait if just_made else 0)
        backoff = _GENERATION_FIRST_BACKOFF
        while True:
            try:
                payload = await self._request(
                    "GET", "/v1/llm/generation", caller, params={"id": generation_id}
                )
            except UpstreamError as error:
                not_there_yet = error.status == 404 or error.kind == "provider_error"
                if not not_there_yet or time.monotonic() + backoff > deadline:
                    raise
                logger.debug(
                    "generation %s not available yet; asking again in %.2f s", generation_id, backoff
                )
                await anyio.sleep(backoff)
                backoff = min(backoff * 2, _GENERATION_MAX_BACKOFF)
                continue
            return _parse(GenerationEnvelope, payload, "generation").data

    async def _request(
        self,
        method: str,
        path: str,
        caller: Caller,
        *,
        json: dict[str, Any] | None = None,
        params: dict[str, str] | None = None,
    ) -> object:
        with self._transport_errors():
            response = await self._http.request(
                method,
                f"{self._base_url}{path}",
                headers=caller.headers(),
                json=json,
                params=params,
                timeout=self._quick_timeout,
            )
        if response.status_code >= 400:
            raise error_from_response(response.status_code, dict(response.headers), response.content)
        return _json(response, method, path)

    @contextmanager
    def _transport_errors(self, stream: ChatStream | None = None) -> Iterator[None]:
        """Turn httpx2's failures into ours. Once an answer has started, the failure is an
        `IncompleteAnswer` that keeps what arrived."""
        try:
            yield
        except httpx2.SSEError as exc:  # malformed or oversized event: retrying would not help
            message = f"the upstream's event stream is malformed: {exc}"
            if stream is not None:
                raise stream.broken("bad_response", message) from exc
            raise UpstreamProtocolError(message) from exc
        except httpx2.TimeoutException as exc:
            message = f"no answer from {self._shown_url} within the time allowed ({type(exc).__name__})"
            if stream is not None and stream.chunks:
                raise stream.broken("timeout", f"the answer stalled: {message}") from exc
            raise UpstreamTimeout(message) from exc
        except httpx2.TransportError as exc:
            if stream is not None and stream.chunks:
                raise stream.broken(
                    "connection_error", f"the connection broke mid-answer: {_reason(exc)}"
                ) from exc
            unsent = (
                " (nothing was sent, so nothing was billed)" if isinstance(exc, httpx2.ConnectError) else ""
            )
            raise UpstreamUnreachable(f"could not reach {self._shown_url}: {_reason(exc)}{unsent}") from exc
        except httpx2.RequestError as exc:  # undecodable body, redirect loop
            raise UpstreamProtocolError(f"the request to {self._shown_url} failed: {_reason(exc)}") from exc


def _json(response: httpx2.Response, method: str, path: str) -> object:
    try:
        return response.json()
    except ValueError as exc:
        raise UpstreamProtocolError(
            f"{method} {path} answered HTTP {response.status_code} with a body that is not JSON: "
            f"{response.text[:120]!r}"
        ) from exc


def _is_event_stream(response: httpx2.Response) -> bool:
    return response.headers.get("content-type", "").split(";")[0].strip().lower() == "text/event-stream"


def _parse(model: type[_WireT], payload: object, what: str) -> _WireT:
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'body'}: {error['msg']}"
            for error in exc.errors()[:3]
        )
        raise UpstreamProtocolError(
            f"the upstream's {what} is not in the documented shape ({problems})"
        ) from exc


def _reason(exc: httpx2.RequestError) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
