"""Failures the sandbox produces on purpose, each named by a model id `sandbox/fail-<name>`.

Every error kind of naive-api.md is here, plus the failures no well-behaved server sends on
purpose: an HTML error page, a 200 whose body is not JSON, an answer that never comes, a stream
of tool-call deltas that never ends.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

FAULT_PREFIX = "sandbox/fail-"
# `sandbox/flaky-<name>` fails with fault <name> on a key's first call, then answers: retries.
FLAKY_PREFIX = "sandbox/flaky-"


@dataclass(frozen=True, slots=True)
class Fault:
    name: str
    status: int
    code: str | int | None  # the error body's `code`; None: the body is not a Naive error
    message: str
    headers: dict[str, str] = field(default_factory=dict)
    extra: dict[str, str] = field(default_factory=dict)  # more fields of the error object
    body: str | None = None  # a raw body instead of a JSON error
    hang: bool = False  # never answer (until the client gives up)
    # "error": an error chunk after some text; "drop": the connection is cut; "tool-call-flood":
    # tool-call deltas without end, each adding a call and name fragments to the newest calls.
    midstream: str | None = None

    @property
    def model_id(self) -> str:
        return f"{FAULT_PREFIX}{self.name}"

    def describe(self) -> str:
        if self.hang:
            return "an upstream that never answers"
        if self.midstream == "error":
            return "an error in the middle of the answer"
        if self.midstream == "drop":
            return "a connection cut in the middle of the answer"
        if self.midstream == "tool-call-flood":
            return "tool-call deltas that never end"
        what = self.code if isinstance(self.code, str) else "a non-JSON body" if self.body else "an error"
        return f"HTTP {self.status} {what}"


FAULTS: dict[str, Fault] = {
    fault.name: fault
    for fault in (
        Fault("invalid-input", 400, "invalid_input", "Provide messages or prompt"),
        Fault("unauthorized", 401, "unauthorized", "Invalid API key"),
        Fault("insufficient-credits", 402, "insufficient_credits", "Not enough credits"),
        Fault(
            "payment-required",
            402,
            "billing_blocked",
            "Trial credit cannot be used for LLM routing",
            extra={"block_reason": "llm_routing_requires_payment"},
        ),
        Fault("forbidden", 403, "forbidden", "The llm primitive is disabled by this Account Kit"),
        Fault("key-subject-mismatch", 403, "key_subject_mismatch", "This key is sealed to another user"),
        Fault("not-found", 404, "not_found", "User not found"),
        Fault("rate-limited", 429, "rate_limited", "Too many requests", headers={"Retry-After": "7"}),
        Fault("rate-limited-bare", 429, "rate_limited", "Too many requests"),
        Fault("rate-limited-1s", 429, "rate_limited", "Too many requests", headers={"Retry-After": "1"}),
        Fault("server-error", 500, 500, "Internal server error"),
        Fault("gateway-timeout", 504, 504, "Gateway timeout"),
        Fault("provider-error", 502, "provider_error", "Upstream model error: the provider returned 500"),
        Fault("not-configured", 503, "not_configured", "OPENROUTER_API_KEY is not set on this deployment"),
        Fault("request-timeout", 408, 408, "Request timed out upstream"),
        Fault("unavailable", 503, 503, "No provider available", headers={"Retry-After": "2"}),
        Fault("timeout-524", 524, 524, "Provider timed out"),
        Fault("overloaded", 529, 529, "Provider overloaded"),
        Fault(
            "html",
            502,
            None,
            "",
            headers={"Content-Type": "text/html"},
            body="<html><body><h1>502 Bad Gateway</h1></body></html>",
        ),
        Fault("not-json", 200, None, "", headers={"Content-Type": "application/json"}, body="{'not': json"),
        Fault("hang", 200, None, "", hang=True),
        Fault(
            "midstream-error", 200, "provider_error", "Provider disconnected mid-answer", midstream="error"
        ),
        Fault("drop", 200, None, "", midstream="drop"),
        Fault("tool-call-flood", 200, None, "", midstream="tool-call-flood"),
    )
}


def fault_for(model_id: str | None) -> Fault | None:
    if model_id is None or not model_id.startswith(FAULT_PREFIX):
        return None
    return FAULTS.get(model_id.removeprefix(FAULT_PREFIX))


# The faults a retry can cure, which `sandbox/flaky-<name>` provokes once (any Retry-After made 0,
# so that the retry is immediate).
FLAKY: dict[str, Fault] = {
    name: replace(
        FAULTS[name], headers={k: ("0" if k == "Retry-After" else v) for k, v in FAULTS[name].headers.items()}
    )
    for name in (
        "rate-limited",
        "rate-limited-bare",
        "request-timeout",
        "provider-error",
        "unavailable",
        "gateway-timeout",
        "timeout-524",
        "overloaded",
    )
}


def flaky_fault(model_id: str | None) -> Fault | None:
    if model_id is None or not model_id.startswith(FLAKY_PREFIX):
        return None
    return FLAKY.get(model_id.removeprefix(FLAKY_PREFIX))
