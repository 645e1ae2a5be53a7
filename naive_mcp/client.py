"""NaiveClient: the one way naive-mcp talks to the upstream.

It owns a long-lived `httpx2.AsyncClient` (one connection pool for the process), adds auth and
tenancy headers, and turns every failure into an error of `naive_mcp.errors`. Tool code never
touches HTTP.
"""

from __future__ import annotations

import logging
import time
from typing import Any, TypeVar

import anyio
import httpx2
from pydantic import BaseModel, ValidationError

from naive_mcp import __version__
from naive_mcp.errors import (
    ConfigurationError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamTimeout,
    UpstreamUnreachable,
    error_from_response,
)
from naive_mcp.settings import Settings
from naive_mcp.tenancy import Tenancy
from naive_mcp.wire import ChatCompletion, Generation, GenerationEnvelope, ModelEntry, ModelList

logger = logging.getLogger(__name__)

_WireT = TypeVar("_WireT", bound=BaseModel)

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

    async def chat(self, body: dict[str, Any], tenancy: Tenancy) -> ChatCompletion:
        """One non-streamed chat completion. `body` is OpenRouter's chat request."""
        payload = await self._request("POST", "/v1/llm/chat/completions", tenancy, json=body)
        return _parse(ChatCompletion, payload, "chat completion")

    async def models(self, tenancy: Tenancy) -> list[ModelEntry]:
        """Every routable model, in either of the two documented list shapes."""
        payload = await self._request("GET", "/v1/llm/models", tenancy)
        return _parse(ModelList, payload, "model list").models

    async def generation(self, generation_id: str, tenancy: Tenancy) -> Generation:
        """Stats of an earlier completion, waiting out the brief 404 right after it finished."""
        deadline = time.monotonic() + self._settings.generation_wait
        backoff = _GENERATION_FIRST_BACKOFF
        while True:
            try:
                payload = await self._request(
                    "GET", "/v1/llm/generation", tenancy, params={"id": generation_id}
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
        tenancy: Tenancy,
        *,
        json: dict[str, Any] | None = None,
        params: dict[str, str] | None = None,
    ) -> object:
        headers = {"Authorization": f"Bearer {self._api_key()}", **tenancy.headers()}
        try:
            response = await self._http.request(
                method, f"{self._base_url}{path}", headers=headers, json=json, params=params
            )
        except httpx2.TimeoutException as exc:
            raise UpstreamTimeout(
                f"no answer from {self._base_url} within the time allowed ({type(exc).__name__})"
            ) from exc
        except httpx2.TransportError as exc:
            raise UpstreamUnreachable(f"could not reach {self._base_url}: {_reason(exc)}") from exc
        except httpx2.RequestError as exc:  # undecodable body, redirect loop
            raise UpstreamProtocolError(f"{method} {path} failed: {_reason(exc)}") from exc
        if response.status_code >= 400:
            raise error_from_response(response.status_code, dict(response.headers), response.content)
        try:
            return response.json()
        except ValueError as exc:
            raise UpstreamProtocolError(
                f"{method} {path} answered HTTP {response.status_code} with a body that is not JSON: "
                f"{response.text[:120]!r}"
            ) from exc

    def _api_key(self) -> str:
        if self._settings.api_key is None:
            raise ConfigurationError("no Naive API key is configured, so no call was sent.")
        return self._settings.api_key.get_secret_value()


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
