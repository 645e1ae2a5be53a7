"""Every expected failure of naive-mcp, as one tree.

    NaiveError                      kind, message, retryable, next_step
    ├── ConfigurationError          the server is not set up for this call (no key, no model)
    ├── ArgumentError               a tool argument is wrong; nothing was sent upstream
    ├── UpstreamError               the upstream answered with an error status (a 404 that is
    │                               not Naive's error object: NAIVE_BASE_URL is wrong)
    ├── UpstreamUnreachable         no connection (refused, reset, DNS)
    ├── UpstreamTimeout             connected, but no answer in time
    ├── UpstreamProtocolError       an answer that is not the documented API (not JSON, wrong shape)
    └── IncompleteAnswer            a streamed answer that broke off: an error chunk, a cut
                                    connection, a stall, a chunk that is not JSON; keeps the part
                                    that arrived

The status → error mapping lives in exactly one place, `error_from_response`. What each kind
means and what to do next comes from the table in `naive-api.md`, kept in `_KINDS`.
At the MCP boundary every `NaiveError` becomes a tool result with `isError: true` whose text
is `describe()`; anything else is a bug and is left to surface as one.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class _Kind:
    retryable: bool
    next_step: str


# The upstream's error kinds (naive-api.md).
_UPSTREAM_KINDS: dict[str, _Kind] = {
    "invalid_input": _Kind(False, "Fix the call's arguments and send it again."),
    "unauthorized": _Kind(
        False, "The Naive API key is missing or invalid: set NAIVE_API_KEY to a valid key (nv_sk_...)."
    ),
    "insufficient_credits": _Kind(False, "The credit balance is exhausted: top up credits, then retry."),
    "llm_routing_requires_payment": _Kind(
        False, "Trial credit cannot pay for LLM routing: buy a credit pack or subscribe, then retry."
    ),
    "billing_blocked": _Kind(
        False, "Billing blocks this call: check the Billing page of the Naive dashboard."
    ),
    "forbidden": _Kind(
        False, "The llm primitive is disabled for this account: enable it in the Account Kit (Primitives)."
    ),
    "key_subject_mismatch": _Kind(
        False, "The API key is sealed to another user: call without user_id, or use that user's key."
    ),
    "not_found": _Kind(False, "Check the id (generation id, user_id) and try again."),
    "rate_limited": _Kind(True, "Slow down and retry after the delay."),
    "provider_error": _Kind(
        True, "The model's provider failed: retry, or use another model or a fallback chain."
    ),
    "not_configured": _Kind(
        False, "The Naive deployment has no OpenRouter key: its operator must set OPENROUTER_API_KEY."
    ),
    "request_timeout": _Kind(True, "The upstream timed out: retry."),
    "unavailable": _Kind(True, "No provider is available right now: retry shortly or use another model."),
    "overloaded": _Kind(True, "The provider is overloaded: retry shortly or use another model."),
    "upstream_error": _Kind(True, "The upstream failed: retry shortly."),
}

# Kinds naive-mcp itself decides; an upstream body cannot claim them.
_OWN_KINDS: dict[str, _Kind] = {
    "no_api_key": _Kind(
        False,
        "Set NAIVE_API_KEY in the server's environment (the `env` block of the MCP client's config), "
        "then restart the server. To try every tool without a key, start it with --sandbox.",
    ),
    "no_model": _Kind(
        False, "Pass `model` (e.g. 'anthropic/claude-sonnet-4.6') or set NAIVE_DEFAULT_MODEL for the server."
    ),
    "invalid_arguments": _Kind(False, "Fix the arguments named above and call again."),
    "unknown_method": _Kind(False, "Call naive_search_primitives to see every method and its arguments."),
    "spending_cap": _Kind(False, "Stay within the cap named above, or ask the operator to raise it."),
    "model_not_allowed": _Kind(False, "Use a model the server allows."),
    "unsupported_filter": _Kind(
        False,
        "Call again without that filter (search, author, min_context, the prices and free work on "
        "every backend), or ask the operator to point NAIVE_BASE_URL at a backend whose model list "
        "has it: Naive's proxy (https://api.usenaive.ai/v1/proxy/openrouter) or OpenRouter "
        "(https://openrouter.ai/api/v1).",
    ),
    "bad_store": _Kind(
        False,
        "Nothing was sent upstream. The operator must fix NAIVE_STORE (a writable file path, `memory`, "
        "or a reachable postgresql:// URL) and restart the server.",
    ),
    "store_too_new": _Kind(
        False, "Upgrade naive-mcp to the version that made this store, or use another store."
    ),
    "not_on_this_backend": _Kind(
        False,
        "Text completions are on Naive's proxy (NAIVE_BASE_URL=https://api.usenaive.ai/v1/proxy/openrouter) "
        "and OpenRouter (https://openrouter.ai/api/v1): use llm.chat with `prompt` instead, or ask the "
        "operator to point NAIVE_BASE_URL at one of those.",
    ),
    "wrong_base_url": _Kind(
        False,
        "The API this server expects does not answer at this address: check NAIVE_BASE_URL — Naive's "
        "root (https://api.usenaive.ai, no path: its typed routes), Naive's proxy "
        "(https://api.usenaive.ai/v1/proxy/openrouter) or an OpenRouter-compatible base "
        "(https://openrouter.ai/api/v1) — and NAIVE_API_STYLE, then restart the server.",
    ),
    "bad_default_model": _Kind(
        False,
        "The call named no model, and the server's default, NAIVE_DEFAULT_MODEL, is one the upstream "
        "does not know: pass `model` (naive_llm_models lists them), or have the operator set "
        "NAIVE_DEFAULT_MODEL to a listed id (e.g. anthropic/claude-sonnet-4.6) and restart the server.",
    ),
    "client_key_refused": _Kind(
        False,
        "Naive refused the API key this client sent as its bearer token (revoked or invalid): send a "
        "valid Naive key (nv_sk_live_… or nv_sk_test_…) in the Authorization header and reconnect.",
    ),
    "thread_not_found": _Kind(
        False,
        "Leave out thread_id to start a new thread (send the conversation in `messages`), or use the "
        "thread_id of one of your own threads (the resource naive://threads lists them).",
    ),
    "thread_full": _Kind(
        False, "Leave out thread_id to start a new thread, with a summary of this one in `messages`."
    ),
    "threads_off": _Kind(
        False,
        "Leave out thread_id and send the whole conversation in `messages`; or ask the operator to set "
        "NAIVE_THREADS=true.",
    ),
    "job_not_found": _Kind(
        False,
        "Use the job_id a background call gave you, with the same user_id and project_id it was "
        "made with; or call again (without background to wait for the answer).",
    ),
    "too_many_jobs": _Kind(
        False,
        "Wait for a job to end (naive_llm_result), cancel one, or call without background.",
    ),
    "jobs_off": _Kind(False, "Call again without background (or through another replica)."),
    "files_off": _Kind(False, "Send the text in `messages` instead, or set up file roots as said above."),
    "file_refused": _Kind(
        False, "Name files and globs inside the allowed roots (relative paths start at the first root)."
    ),
    "all_models_failed": _Kind(False, "Each model's error above says what to do next."),
    "connection_error": _Kind(True, "Check NAIVE_BASE_URL and the network, then retry."),
    "timeout": _Kind(True, "Retry; for slow models raise NAIVE_READ_TIMEOUT."),
    "bad_response": _Kind(
        False, "The upstream sent something that is not the Naive API: check NAIVE_BASE_URL."
    ),
}

_KINDS = {**_UPSTREAM_KINDS, **_OWN_KINDS}

# When the body names no kind we know, the status decides.
_KIND_BY_STATUS: dict[int, str] = {
    400: "invalid_input",
    401: "unauthorized",
    402: "insufficient_credits",
    403: "forbidden",
    404: "not_found",
    408: "request_timeout",
    422: "invalid_input",
    429: "rate_limited",
    502: "provider_error",
    503: "unavailable",
    524: "request_timeout",
    529: "overloaded",
}

_RETRY_AFTER_CAP_SECONDS = 300.0


class NaiveError(Exception):
    """An expected failure, with what a model or a person should do about it."""

    default_kind = "upstream_error"

    def __init__(self, message: str, *, kind: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.kind = kind or self.default_kind

    @property
    def retryable(self) -> bool:
        return _kind(self.kind).retryable

    @property
    def next_step(self) -> str:
        return _kind(self.kind).next_step

    def headline(self) -> str:
        return self.kind

    def describe(self, next_step: str | None = None) -> str:
        """The text a model reads: what happened, and what to do next (`next_step`, where the
        reader is not an MCP client, as on a terminal)."""
        return f"{self.headline()}: {self.message}\n{next_step or self.next_step}"


class ConfigurationError(NaiveError):
    default_kind = "no_api_key"


class ArgumentError(NaiveError):
    default_kind = "invalid_arguments"

    def describe(self, next_step: str | None = None) -> str:
        return (
            f"{self.message}\nNothing was sent upstream and no credits were spent. "
            f"{next_step or self.next_step}"
        )


class UpstreamError(NaiveError):
    """The upstream answered with an error status."""

    def __init__(
        self,
        message: str,
        *,
        kind: str,
        status: int,
        retry_after: float | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message, kind=kind)
        self.status = status
        self.retry_after = retry_after
        self.details = details or {}

    @property
    def next_step(self) -> str:
        step = _kind(self.kind).next_step
        if self.retry_after is not None:
            step = f"{step} Retry after {_seconds(self.retry_after)}."
        hint = self.details.get("hint")
        if isinstance(hint, str) and hint:
            step = f"{step} Upstream hint: {hint}"
        return step

    def headline(self) -> str:
        return f"{self.kind} (HTTP {self.status})"


class UpstreamUnreachable(NaiveError):
    default_kind = "connection_error"


class UpstreamTimeout(NaiveError):
    default_kind = "timeout"


class UpstreamProtocolError(NaiveError):
    default_kind = "bad_response"


class IncompleteAnswer(NaiveError):
    """A streamed answer that started and then broke off. `partial` is the text that arrived."""

    def __init__(self, message: str, *, kind: str, partial: str) -> None:
        super().__init__(message, kind=kind)
        self.partial = partial

    def describe(self, next_step: str | None = None) -> str:
        step = next_step or self.next_step
        if not self.partial:
            return f"{self.headline()}: {self.message}. No text had arrived.\n{step}"
        return (
            f"{self.headline()}: {self.message}. The answer is incomplete; the {len(self.partial)} "
            f"characters that arrived before it broke off follow.\n{step}\n---\n{self.partial}"
        )


def kind_from_code(code: object, status: int | None = None) -> str:
    """The kind an error object's `code` names: Naive's strings, or OpenRouter's HTTP statuses."""
    if isinstance(code, str) and code in _UPSTREAM_KINDS:
        return code
    number = code if isinstance(code, int) and not isinstance(code, bool) else status
    if number is None:
        return "provider_error"
    return _KIND_BY_STATUS.get(number, "provider_error" if number >= 500 else "invalid_input")


def error_from_response(status: int, headers: dict[str, str], body: bytes) -> UpstreamError:
    """Map one upstream error response to its error. The only place a status becomes an error."""
    retry_after = parse_retry_after(headers.get("retry-after"))
    payload = _json_object(body)
    error = payload.get("error") if payload is not None else None
    if isinstance(error, dict):
        code = error.get("code")
        message = error.get("message")
        details = {key: value for key, value in error.items() if key not in ("code", "message")}
        # Naive's codes are strings; OpenRouter's (through the proxy) are HTTP statuses. A code
        # we do not know falls back to what the status says.
        kind = kind_from_code(code, status)
        if kind == "billing_blocked" and error.get("block_reason") in _UPSTREAM_KINDS:
            kind = str(error["block_reason"])
        text = message if isinstance(message, str) and message else f"the upstream answered HTTP {status}"
    else:
        details = {}
        # Naive answers a 404 with its error object; a bare one is a server where the API is not.
        kind = "wrong_base_url" if status == 404 else kind_from_code(None, status)
        text = f"the upstream answered HTTP {status} with {_describe_body(body, headers)}"
    return UpstreamError(text, kind=kind, status=status, retry_after=retry_after, details=details)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait, from a `Retry-After` header (delta-seconds or HTTP date), capped."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, OverflowError):
            return None
        if when.tzinfo is None:  # "-0000": a date in UTC whose source zone is unknown
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    if math.isnan(seconds):
        return None
    return min(max(seconds, 0.0), _RETRY_AFTER_CAP_SECONDS)


def _kind(kind: str) -> _Kind:
    return _KINDS.get(kind, _KINDS["upstream_error"])


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        payload = json.loads(body)
    except ValueError:
        return None
    return payload if isinstance(payload, dict) else None


def _describe_body(body: bytes, headers: dict[str, str]) -> str:
    content_type = headers.get("content-type", "no content type").split(";")[0].strip()
    if not body.strip():
        return "an empty body"
    snippet = " ".join(body[:160].decode("utf-8", "replace").split())
    return f"a body that is not a Naive error ({content_type}): {snippet!r}"


def _seconds(value: float) -> str:
    return f"{value:.0f} s" if value >= 1 else f"{value:.1f} s"
