"""A chat call's worst case, before it is sent: the models it may be routed to, their prices,
and a generous count of its prompt tokens. Pure functions of the request body."""

from __future__ import annotations

import fnmatch
import json
import math
from collections.abc import Sequence
from typing import Any

from naive_mcp.errors import NaiveError
from naive_mcp.wire import ModelEntry

# Tokens per character of prompt, generously: English runs about 0.25, code and CJK higher.
_TOKENS_PER_CHAR = 0.5
# A model's output is bounded by its own limit; this one is above all of today's. Under a cap,
# a call without max_tokens is reserved at this size, and sent with a max_tokens when less fits.
LONGEST_OUTPUT = 65_536


class SpendingRefused(NaiveError):
    default_kind = "spending_cap"

    def describe(self) -> str:
        return f"{self.kind}: {self.message}\nNothing was sent upstream and no credits were spent."


def model_chain(body: dict[str, Any]) -> list[str]:
    """Every model the call may be routed to: `model`, then the `models` fallbacks."""
    return list(dict.fromkeys([body["model"], *(body.get("models") or [])]))


def check_allowed(body: dict[str, Any], patterns: Sequence[str]) -> None:
    """NAIVE_ALLOWED_MODELS: every model the call may be routed to must match a pattern."""
    if not patterns:
        return
    for model in model_chain(body):
        if not any(fnmatch.fnmatchcase(model, pattern) for pattern in patterns):
            raise SpendingRefused(
                f"model {model!r} is not allowed on this server (NAIVE_ALLOWED_MODELS: "
                f"{', '.join(patterns)}). Choose an allowed model, or ask the operator to add it.",
                kind="model_not_allowed",
            )


def dearest_prices(body: dict[str, Any], prices: Sequence[ModelEntry]) -> tuple[float, float]:
    """USD per prompt and per completion token, at the dearest model the call may use."""
    by_id = {entry.id: entry for entry in prices}
    prompt = completion = 0.0
    for model in model_chain(body):
        entry = by_id.get(model)
        pricing = entry.pricing if entry is not None else None
        if (
            pricing is None
            or pricing.prompt is None
            or pricing.completion is None
            or min(pricing.prompt, pricing.completion) < 0
        ):
            raise SpendingRefused(
                f"the cost of {model!r} cannot be estimated (it is not in the model list with prices), "
                "and this server caps spending. Choose a listed model (naive_llm_models)."
            )
        prompt = max(prompt, pricing.prompt)
        completion = max(completion, pricing.completion)
    return prompt, completion


def prompt_tokens(body: dict[str, Any]) -> int:
    return math.ceil(len(json.dumps(body.get("messages", []))) * _TOKENS_PER_CHAR) + 16


def output_budget(body: dict[str, Any]) -> tuple[int | None, int]:
    """The call's `max_tokens` (None: not set) and its reasoning budget, which is billed as output
    too and may come on top of max_tokens."""
    reasoning: dict[str, Any] = body["reasoning"] if isinstance(body.get("reasoning"), dict) else {}
    thinking = reasoning["max_tokens"] if isinstance(reasoning.get("max_tokens"), int) else 0
    max_tokens = body.get("max_tokens")
    return (max_tokens if isinstance(max_tokens, int) else None), thinking


def amount(value: float | None) -> float | None:
    """A figure from the upstream fit to count with: finite and not negative; else unknown."""
    return value if value is not None and math.isfinite(value) and value >= 0 else None
