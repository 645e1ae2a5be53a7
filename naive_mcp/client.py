"""NaiveClient: the one way naive-mcp talks to the upstream.

It owns a long-lived `httpx2.AsyncClient` (one connection pool for the process), adds auth and
tenancy headers, and turns every failure into an error of `naive_mcp.errors`. Tool code never
touches HTTP.

What the upstream says is held within NAIVE_MAX_RESPONSE_BYTES (a body as it is read, an event
stream event by event and as the answer it assembles), and every answer leaves here with the
configured secrets and the caller's key replaced (`Redactor.json`): nothing above this layer —
results, progress, the usage ledger — sees a secret an upstream echoed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator, Callable, Iterator
from contextlib import aclosing, contextmanager
from typing import Any, TypeVar, cast

import anyio
import httpx2
from pydantic import BaseModel, ValidationError
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
    wait_exponential_jitter,
)

from naive_mcp import __version__
from naive_mcp.backend import Backend, Route
from naive_mcp.caller import Caller
from naive_mcp.errors import (
    NaiveError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamTimeout,
    UpstreamUnreachable,
    error_from_response,
)
from naive_mcp.redaction import Redactor
from naive_mcp.settings import Settings
from naive_mcp.streaming import ChatStream
from naive_mcp.wire import (
    ChatCompletion,
    CreditsEnvelope,
    Generation,
    GenerationEnvelope,
    KeyEnvelope,
    ModelEntry,
    ModelList,
)

logger = logging.getLogger(__name__)

_WireT = TypeVar("_WireT", bound=BaseModel)

_DRAIN_SECONDS = 1.0
_QUICK_READ_SECONDS = 30.0
# One SSE event carries one chunk; httpx2's default cap (1 MiB) is below what a large tool-call
# argument or a long reasoning block can reach. Never far above NAIVE_MAX_RESPONSE_BYTES: httpx2
# holds an event (and a line without its newline) whole until it ends. The slack is for the chunk's
# JSON around its text, so that an answer over the limit is refused as that, by ChatStream.
_MAX_EVENT_BYTES = 16 * 1024 * 1024
_EVENT_SLACK_BYTES = 64 * 1024
# Statuses a retry can cure, when nothing has streamed yet (STYLE.md 5, naive-api.md).
_RETRY_STATUSES = frozenset({408, 429, 502, 503, 504, 524, 529})
_BACKOFF = wait_exponential_jitter(multiplier=0.5, max=8, jitter=0.5)
# What a key check searches the model list for: no model, so the listing that proves a key is tiny.
_KEY_CHECK_SEARCH = "naive-mcp-key-check"
# Right after a completion its stats may not exist for about a second (naive-api.md).
_GENERATION_FIRST_BACKOFF = 0.25
_GENERATION_MAX_BACKOFF = 1.0
# The most connections the process opens upstream at once (calls beyond wait for one).
UPSTREAM_MAX_CONNECTIONS = 200


def make_http_client(settings: Settings) -> httpx2.AsyncClient:
    """The process's one HTTP client for the upstream. Its read timeout is the longest silence
    allowed between two chunks of an answer."""
    return httpx2.AsyncClient(
        timeout=httpx2.Timeout(settings.read_timeout, connect=settings.connect_timeout),
        limits=httpx2.Limits(max_connections=UPSTREAM_MAX_CONNECTIONS, max_keepalive_connections=50),
        headers={"User-Agent": f"naive-mcp/{__version__}"},
        follow_redirects=False,
    )


class NaiveClient:
    """Typed calls to the Naive `llm` primitive, on whichever backend NAIVE_BASE_URL names
    (`naive_mcp.backend`): the same calls, each on that backend's own route."""

    def __init__(self, settings: Settings, http: httpx2.AsyncClient | None = None) -> None:
        """`http` is shared and closed by its owner; without it the client makes its own on first
        use (making one loads the CA bundle, ~40 ms a server only listing its tools should not
        spend at start-up) and closes it in `aclose`."""
        self._settings = settings
        self._redact = Redactor(settings.secrets())
        self._given_http = http
        self._own_http: httpx2.AsyncClient | None = None
        self._closed = False
        self.backend: Backend = settings.backend
        # OpenRouter's list holds text-output models only unless asked for all (image models too).
        self._every_model = None if self.backend.typed else {"output_modalities": "all"}
        self._shown_url = settings.shown_base_url
        # Listings and stats answer in seconds: the long read timeout is for generations only.
        self._quick_timeout = httpx2.Timeout(
            min(settings.read_timeout, _QUICK_READ_SECONDS), connect=settings.connect_timeout
        )

    @property
    def _http(self) -> httpx2.AsyncClient:
        if self._given_http is not None:
            return self._given_http
        if self._own_http is None:
            if self._closed:
                raise RuntimeError("NaiveClient used after aclose()")
            self._own_http = make_http_client(self._settings)
        return self._own_http

    def warm(self) -> None:
        """Make the HTTP client now (on a worker thread: it loads the CA bundle and the HTTP
        stack), not on the first call."""
        self._http  # noqa: B018

    async def aclose(self) -> None:
        """Close the HTTP client this client made, if it made one; no call may follow."""
        self._closed = True
        if self._own_http is not None:
            await self._own_http.aclose()

    async def generate(
        self,
        route: Route,
        body: dict[str, Any],
        caller: Caller,
        on_chunk: Callable[[ChatStream], None] | None = None,
    ) -> ChatCompletion:
        """One generation on `route` — a chat (`body` is OpenRouter's chat request) or a text
        completion (`model`, `prompt`, …; only where `Backend.has("completions")`: the caller asks
        first) — always streamed from the upstream. Both share this path and differ only in their
        chunks (`ChatStream` reads both into a chat's shape). `on_chunk` sees the answer grow.

        Failures before the first token that a retry can cure are retried (see `_retrying`);
        once a token has arrived, never. Timeouts by phase: connecting, the first byte, between
        chunks, and the whole call. Leaving early (cancellation) closes the connection at once,
        which is what stops the model and the billing upstream.
        """
        settings = self._settings
        redact = self._redact.including(caller.api_key)
        stream = ChatStream(max_bytes=settings.max_response_bytes, redact=redact)
        retrying = self._retrying()
        try:
            with anyio.fail_after(settings.total_timeout):
                async for attempt in retrying:
                    with attempt:
                        stream = ChatStream(max_bytes=settings.max_response_bytes, redact=redact)
                        return await self._generate_once(route, body, caller, stream, on_chunk)
        except TimeoutError:
            message = f"the call took longer than NAIVE_TOTAL_TIMEOUT ({settings.total_timeout:g} s)"
            error = stream.broken("timeout", message) if stream.started else UpstreamTimeout(message)
            raise self._after_attempts(error, retrying) from None
        except NaiveError as error:
            self._after_attempts(error, retrying)
            raise
        raise AssertionError("tenacity either returns or re-raises")  # pragma: no cover

    async def _generate_once(
        self,
        route: Route,
        body: dict[str, Any],
        caller: Caller,
        stream: ChatStream,
        on_chunk: Callable[[ChatStream], None] | None,
    ) -> ChatCompletion:
        with self._transport_errors(stream):
            request = self._http.build_request(
                "POST", self.backend.url(route), headers=caller.headers(), json={**body, "stream": True}
            )
            try:
                with anyio.fail_after(self._settings.first_byte_timeout):
                    response = await self._http.send(request, stream=True)
            except TimeoutError:
                raise UpstreamTimeout(
                    f"no answer from {self._shown_url} within NAIVE_FIRST_BYTE_TIMEOUT "
                    f"({self._settings.first_byte_timeout:g} s)"
                ) from None
            try:
                if response.status_code >= 400:
                    raise self._status_error(response, await self._read(response), caller)
                stream.started = True
                if not _is_event_stream(response):
                    # A server that answers in one piece although asked to stream: read it whole.
                    try:
                        payload = _json(response, await self._read(response), "POST", route)
                        redacted = self._redact.including(caller.api_key).json(payload)
                        return _parse(ChatCompletion, redacted, f"{route} answer")
                    except UpstreamProtocolError as error:
                        raise stream.broken("bad_response", error.message) from error
                # Closed here, whatever happens: left to the garbage collector, a suspended event
                # reader would be finalised later, elsewhere.
                event_limit = min(_MAX_EVENT_BYTES, self._settings.max_response_bytes + _EVENT_SLACK_BYTES)
                async with aclosing(_events(response, event_limit)) as events:
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
            finally:
                await response.aclose()
        return stream.finish()

    async def models(self, caller: Caller) -> list[ModelEntry]:
        """Every routable model, in either of the two documented list shapes."""
        retrying = self._retrying()
        try:
            async for attempt in retrying:
                with attempt:
                    payload = await self._request("GET", "models", caller, params=self._every_model)
                    return _parse(ModelList, payload, "model list").models
        except NaiveError as error:
            self._after_attempts(error, retrying)
            raise
        raise AssertionError("tenacity either returns or re-raises")  # pragma: no cover

    async def key_accepted(self, api_key: str) -> bool:
        """Whether the upstream takes `api_key`: one free, authenticated request, never retried
        (`GET /key` where the backend has it — OpenRouter's model list needs no key — else a model
        search that matches nothing, so the answer is small). 401 and 403 are a no; a failure that
        says nothing about the key (unreachable, 429, 5xx, an answer that is not the API) is raised."""
        caller = Caller(api_key=api_key)
        try:
            if self.backend.has("key"):
                await self._request("GET", "key", caller)
            else:
                await self._request("GET", "models", caller, params={"search": _KEY_CHECK_SEARCH})
        except UpstreamError as error:
            if error.status in (401, 403):
                return False
            raise
        return True

    async def generation(self, generation_id: str, caller: Caller, *, just_made: bool) -> Generation:
        """Stats of an earlier completion. For one `just_made`, wait out the brief 404 the
        upstream answers right after it finished; any other id is answered at once."""
        waiting = AsyncRetrying(
            retry=retry_if_exception(_not_there_yet),
            stop=stop_after_delay(self._settings.generation_wait if just_made else 0),
            wait=wait_exponential(multiplier=_GENERATION_FIRST_BACKOFF, max=_GENERATION_MAX_BACKOFF),
            sleep=anyio.sleep,
            reraise=True,
        )
        async for attempt in waiting:
            with attempt:
                payload = await self._request("GET", "generation", caller, params={"id": generation_id})
                return _parse(GenerationEnvelope, payload, "generation").data
        raise AssertionError("tenacity either returns or re-raises")  # pragma: no cover

    async def balance(self, caller: Caller) -> float | None:
        """On a backend without credits, what the key may still spend, in USD: its limit's
        remainder (`GET /key`), else its credits less their usage (`GET /credits`); None where
        neither says (a key with no limit on an account that does not report credits)."""
        if not self.backend.has("key"):
            return None
        key = _parse(KeyEnvelope, await self._request("GET", "key", caller), "key").data
        if key.limit_remaining is not None:
            return key.limit_remaining
        try:
            payload = await self._request("GET", "credits", caller)
        except UpstreamError as error:
            if error.status in (403, 404):  # only a management key may read /credits
                return None
            raise
        credits = _parse(CreditsEnvelope, payload, "credits").data
        return credits.total_credits - credits.total_usage

    def _retrying(self) -> AsyncRetrying:
        """Bounded, selective retries, before the upstream accepted the call only: connection
        failures, and 408, 429, 502, 503, 504, 524, 529 whose kind is worth retrying. A
        `Retry-After` is waited out if it is within NAIVE_RETRY_MAX_WAIT (a longer one is not
        retried: the error says the delay); otherwise exponential backoff with jitter."""
        return AsyncRetrying(
            retry=retry_if_exception(self._worth_retrying),
            stop=stop_after_attempt(self._settings.max_retries + 1),
            wait=self._retry_wait,
            sleep=anyio.sleep,
            before_sleep=_log_retry,
            reraise=True,
        )

    def _status_error(self, response: httpx2.Response, body: bytes, caller: Caller) -> UpstreamError:
        error = error_from_response(response.status_code, dict(response.headers), body)
        server_key = self._settings.api_key
        if error.kind == "unauthorized" and (
            server_key is None or caller.api_key != server_key.get_secret_value()
        ):
            # A client's own key (client-keys mode): NAIVE_API_KEY is not what that client can fix.
            error.kind = "client_key_refused"
        return error

    def _after_attempts(self, error: NaiveError, retrying: AsyncRetrying) -> NaiveError:
        """`error`, saying how many attempts were made when it came after retries."""
        attempts = int(retrying.statistics.get("attempt_number", 1))
        if attempts > 1:
            error.message = (
                f"{error.message} (after {attempts} attempts: the call and {attempts - 1} "
                f"{'retry' if attempts == 2 else 'retries'}; NAIVE_MAX_RETRIES is "
                f"{self._settings.max_retries})"
            )
        return error

    def _worth_retrying(self, error: BaseException) -> bool:
        if isinstance(error, UpstreamUnreachable):  # raised only before the upstream answered
            return True
        if not (isinstance(error, UpstreamError) and error.status in _RETRY_STATUSES and error.retryable):
            return False
        # Asked to wait longer than we may: the caller hears the delay instead of a doomed retry.
        return error.retry_after is None or error.retry_after <= self._settings.retry_max_wait

    def _retry_wait(self, state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome is not None else None
        delay = error.retry_after if isinstance(error, UpstreamError) else None
        if delay is not None:
            return delay
        return min(_BACKOFF(state), self._settings.retry_max_wait)

    async def _request(
        self,
        method: str,
        route: Route,
        caller: Caller,
        *,
        params: dict[str, str] | None = None,
    ) -> object:
        """The upstream's JSON answer, with the secrets replaced."""
        with self._transport_errors():
            request = self._http.build_request(
                method,
                self.backend.url(route),
                headers=caller.headers(),
                params=params,
                timeout=self._quick_timeout,
            )
            response = await self._http.send(request, stream=True)
        try:
            with self._transport_errors(reading=True):
                body = await self._read(response)
        finally:
            await response.aclose()
        if response.status_code >= 400:
            raise self._status_error(response, body, caller)
        return self._redact.including(caller.api_key).json(_json(response, body, method, route))

    async def _read(self, response: httpx2.Response) -> bytes:
        """The whole body, or an error once it grows past NAIVE_MAX_RESPONSE_BYTES."""
        limit = self._settings.max_response_bytes
        parts: list[bytes] = []
        size = 0
        async for part in response.aiter_bytes():
            size += len(part)
            if size > limit:
                raise UpstreamProtocolError(
                    f"the upstream's answer is larger than NAIVE_MAX_RESPONSE_BYTES ({limit} bytes)"
                )
            parts.append(part)
        return b"".join(parts)

    @contextmanager
    def _transport_errors(self, stream: ChatStream | None = None, *, reading: bool = False) -> Iterator[None]:
        """Turn httpx2's failures into ours. Once an answer has started, the failure is an
        `IncompleteAnswer` that keeps what arrived; `reading` says the answer had begun."""
        try:
            yield
        except httpx2.SSEError as exc:  # malformed or oversized event: retrying would not help
            message = f"the upstream's event stream is malformed: {exc}"
            if stream is not None:
                raise stream.broken("bad_response", message) from exc
            raise UpstreamProtocolError(message) from exc
        except httpx2.TimeoutException as exc:
            message = f"no answer from {self._shown_url} within the time allowed ({type(exc).__name__})"
            if stream is not None and stream.started:
                raise stream.broken("timeout", f"the answer stalled: {message}") from exc
            raise UpstreamTimeout(message) from exc
        except httpx2.TransportError as exc:
            if stream is not None and stream.started:
                raise stream.broken(
                    "connection_error", f"the connection broke mid-answer: {_reason(exc)}"
                ) from exc
            unsent = (
                " (nothing was sent, so nothing was billed)" if isinstance(exc, httpx2.ConnectError) else ""
            )
            if reading:
                raise UpstreamUnreachable(
                    f"the answer from {self._shown_url} was cut off: {_reason(exc)}"
                ) from exc
            raise UpstreamUnreachable(f"could not reach {self._shown_url}: {_reason(exc)}{unsent}") from exc
        except httpx2.RequestError as exc:  # undecodable body, redirect loop
            raise UpstreamProtocolError(f"the request to {self._shown_url} failed: {_reason(exc)}") from exc


def _json(response: httpx2.Response, body: bytes, method: str, route: Route) -> object:
    try:
        return json.loads(body)
    except ValueError as exc:
        raise UpstreamProtocolError(
            f"{method} {response.request.url.path} answered HTTP {response.status_code} "
            "with a body that is not JSON: "
            f"{body[:120].decode('utf-8', 'replace')!r}"
        ) from exc


def _not_there_yet(error: BaseException) -> bool:
    return isinstance(error, UpstreamError) and error.kind in ("not_found", "provider_error")


def _log_retry(state: RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome is not None else None
    wait = state.next_action.sleep if state.next_action is not None else 0
    kind = error.kind if isinstance(error, UpstreamError | UpstreamUnreachable) else type(error).__name__
    logger.info("upstream %s; retry %d in %.2f s", kind, state.attempt_number, wait)


def _events(response: httpx2.Response, max_event_bytes: int) -> AsyncGenerator[httpx2.ServerSentEvent]:
    # EventSource's __aiter__ is an async generator, typed as a plain iterator. It bounds an event,
    # including a line still waiting for its newline, by max_event_size (test_memory_bounds.py).
    return cast(
        "AsyncGenerator[httpx2.ServerSentEvent]",
        aiter(httpx2.EventSource(response, max_event_size=max_event_bytes)),
    )


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
