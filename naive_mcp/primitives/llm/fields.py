"""Field types and number formats shared by the llm methods."""

from __future__ import annotations

import math
from typing import Annotated

from pydantic import Field

ModelId = Annotated[
    str,
    Field(
        max_length=200,
        pattern=r"^[A-Za-z0-9][\w.\-]*/[\w.\-:~@+]+$",
    ),
]
ProviderSlug = Annotated[str, Field(pattern=r"^[A-Za-z0-9][\w.\-/]*$", max_length=100)]
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
