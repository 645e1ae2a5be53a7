"""Field types and number formats shared by the llm methods."""

from __future__ import annotations

import math
from typing import Annotated

from mcp_types import ToolAnnotations
from pydantic import WithJsonSchema

from naive_mcp.validation import matching

# Published as a string (every agent reads tools/list; the examples in descriptions show the
# shape): the pattern is checked here, and a mismatch is explained in words.
ModelId = Annotated[
    str,
    matching(
        r"^[A-Za-z0-9][\w.\-]*/[\w.\-:~@+]+$",
        "a provider-prefixed model id such as anthropic/claude-sonnet-4.6 (see naive_llm_models)",
        max_length=200,
    ),
    WithJsonSchema({"type": "string"}),
]
ProviderSlug = Annotated[
    str, matching(r"^[A-Za-z0-9][\w.\-/]*$", "a provider slug such as anthropic or openai", max_length=100)
]
TOKENS_PER_MILLION = 1_000_000


def format_usd(value: float | None) -> str:
    """Dollars to the cent, and sub-cent amounts (most single calls) to four significant digits."""
    if value is None:
        return "unknown"
    if value == 0:
        return "$0"
    if abs(value) >= 0.01:
        return f"${value:.2f}".rstrip("0").rstrip(".")
    decimals = 3 - math.floor(math.log10(abs(value)))
    return f"${value:.{decimals}f}".rstrip("0")


def format_credits(value: float | None) -> str:
    if value is None:
        return "unknown"
    return f"{value:.6f}".rstrip("0").rstrip(".") or "0"


def spending_annotations(title: str) -> ToolAnnotations:
    """A method that spends credits: it changes nothing the client has, but each call is new (and
    billed), and it reaches the world beyond the server."""
    return ToolAnnotations(
        title=title,
        read_only_hint=False,
        destructive_hint=False,
        idempotent_hint=False,
        open_world_hint=True,
    )
