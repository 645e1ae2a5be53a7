"""Which API the upstream speaks, and where each call goes on it.

Three ways in (naive-api.md, "Three bases, one body"), one request body:

- Naive's typed routes (`https://api.usenaive.ai`): `/v1/llm/chat/completions`, `/v1/llm/models`,
  `/v1/llm/generation`; answers carry Naive credits; calls may be made for a Naive user or project.
- Naive's drop-in proxy (`…/v1/proxy/openrouter`): OpenRouter's paths under it, with a Naive key.
- OpenRouter (`https://openrouter.ai/api/v1`) or any base that speaks its API: `/chat/completions`,
  `/completions`, `/models`, `/generation`, `/key`, `/credits`.

On the last two nothing reports credits: what a call cost is `usage.cost`, in USD, and the
balance is the key's remaining limit (`GET /key`, else `GET /credits`), in USD too. A base URL is
joined with the path under it, never with `/v1/llm/…` appended to an OpenRouter base.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal
from urllib.parse import urlsplit

Unit = Literal["credits", "USD"]
Route = Literal["chat", "completions", "models", "generation", "key", "credits"]

PROXY_PATH = "/v1/proxy/openrouter"
OPENROUTER_PATH = "/api/v1"
OPENROUTER_BASE_URL = f"https://openrouter.ai{OPENROUTER_PATH}"


class ApiStyle(StrEnum):
    NAIVE = "naive"
    PROXY = "proxy"
    OPENROUTER = "openrouter"


_TYPED_ROUTES: dict[Route, str] = {
    "chat": "/v1/llm/chat/completions",
    "models": "/v1/llm/models",
    "generation": "/v1/llm/generation",
}
_OPENROUTER_ROUTES: dict[Route, str] = {
    "chat": "/chat/completions",
    "completions": "/completions",
    "models": "/models",
    "generation": "/generation",
    "key": "/key",
    "credits": "/credits",
}
# Where each style's API sits under a host that serves them all (the sandbox does).
STYLE_PATHS = {ApiStyle.NAIVE: "", ApiStyle.PROXY: PROXY_PATH, ApiStyle.OPENROUTER: OPENROUTER_PATH}
_NAMES = {
    ApiStyle.NAIVE: "the Naive API",
    ApiStyle.PROXY: "Naive's OpenRouter proxy",
    ApiStyle.OPENROUTER: "an OpenRouter-compatible API",
}


def detect_style(base_url: str) -> ApiStyle:
    """The API style a base URL names: no path is Naive's root; `…/v1/proxy/openrouter` its
    proxy; any other path (`…/api/v1`, a self-hosted gateway's `…/v1`) OpenRouter's API."""
    parts = urlsplit(base_url)
    path = parts.path.rstrip("/")
    if path.endswith(PROXY_PATH):
        return ApiStyle.PROXY
    if path or parts.hostname == "openrouter.ai":
        return ApiStyle.OPENROUTER
    return ApiStyle.NAIVE


def openrouter_base(base_url: str) -> str:
    """`https://openrouter.ai` (or `…/api`) as written by hand is OpenRouter's API at `/api/v1`."""
    parts = urlsplit(base_url)
    if parts.hostname == "openrouter.ai" and parts.path.rstrip("/") in ("", "/api"):
        return parts._replace(path=OPENROUTER_PATH).geturl()
    return base_url


@dataclass(frozen=True, slots=True)
class Backend:
    """The upstream's API: its style and base URL, and what it has."""

    style: ApiStyle
    base_url: str

    @classmethod
    def of(cls, base_url: str, style: str = "auto") -> Backend:
        """The backend at `base_url`, in `style` (`auto`: recognised from the URL)."""
        base = openrouter_base(base_url.rstrip("/"))
        return cls(detect_style(base) if style == "auto" else ApiStyle(style), base)

    @property
    def name(self) -> str:
        return _NAMES[self.style]

    @property
    def typed(self) -> bool:
        """Naive's typed routes: credits in every answer, calls for a Naive user or project."""
        return self.style is ApiStyle.NAIVE

    @property
    def unit(self) -> Unit:
        """What spending is counted in: Naive credits where answers report them, else USD."""
        return "credits" if self.typed else "USD"

    def path(self, route: Route) -> str | None:
        """The path of `route` under the base URL; None where this backend has no such route."""
        return (_TYPED_ROUTES if self.typed else _OPENROUTER_ROUTES).get(route)

    def url(self, route: Route) -> str:
        path = self.path(route)
        if path is None:
            raise ValueError(f"there is no {route} route on {self.name}")  # callers ask `path` first
        return f"{self.base_url}{path}"

    def has(self, route: Route) -> bool:
        return self.path(route) is not None
