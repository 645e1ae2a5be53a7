"""`llm.models`: find a model by text, context, price and author, sorted and paged, compactly."""

from __future__ import annotations

from typing import Literal

from mcp.types import ToolAnnotations
from pydantic import BaseModel, Field

from naive_mcp.caller import TenantId
from naive_mcp.primitives.llm.fields import TOKENS_PER_MILLION, format_usd
from naive_mcp.registry import CallContext, Method, MethodResult
from naive_mcp.validation import Arguments, matching
from naive_mcp.wire import ModelEntry


class ModelsArguments(Arguments):
    search: str | None = Field(
        default=None, max_length=100, description="words that must all appear in id or name"
    )
    author: str | None = matching(
        r"^[A-Za-z0-9][\w.\-]*$",
        "the part of a model id before the slash, such as anthropic or openai",
        default=None,
        max_length=60,
        description="e.g. anthropic, openai",
    )
    min_context: int | None = Field(default=None, ge=1, description="minimum context length, in tokens")
    max_prompt_price: float | None = Field(default=None, ge=0, description="USD per million input tokens")
    max_completion_price: float | None = Field(
        default=None, ge=0, description="USD per million output tokens"
    )
    sort: Literal["id", "price", "context"] = Field(
        default="id", description="price: cheapest first; context: largest first"
    )
    limit: int = Field(default=20, ge=1, le=100)
    offset: int = Field(default=0, ge=0)
    user_id: TenantId | None = None
    project_id: TenantId | None = None


class ModelSummary(BaseModel):
    id: str
    name: str | None = None
    context_length: int | None = None
    prompt_price: float | None = Field(default=None, description="USD per million input tokens")
    completion_price: float | None = Field(default=None, description="USD per million output tokens")

    @classmethod
    def from_entry(cls, entry: ModelEntry) -> ModelSummary:
        return cls(
            id=entry.id,
            name=entry.name,
            context_length=entry.context_length,
            prompt_price=_per_million(entry.pricing.prompt),
            completion_price=_per_million(entry.pricing.completion),
        )

    def line(self) -> str:
        context = f"{_short_count(self.context_length)} ctx" if self.context_length else "ctx ?"
        price = f"{format_usd(self.prompt_price)}/{format_usd(self.completion_price)}"
        return f"{self.id} | {context} | {price}"


class ModelsResult(MethodResult):
    total: int = Field(description="models upstream")
    matched: int = Field(description="models that pass the filters")
    offset: int
    models: list[ModelSummary]
    next_offset: int | None = Field(default=None, description="offset of the next page, if any")

    def content(self) -> list[str]:
        if not self.models:
            return [f"No model matches ({self.total} models upstream). Loosen the filters."]
        first = self.offset + 1
        head = (
            f"Models {first}-{self.offset + len(self.models)} of {self.matched} matching "
            f"({self.total} in all). "
            "id | context | USD per 1M tokens in/out"
        )
        more = [f"More: offset={self.next_offset}"] if self.next_offset is not None else []
        return ["\n".join([head, *(model.line() for model in self.models), *more])]


def select(entries: list[ModelEntry], arguments: ModelsArguments) -> ModelsResult:
    """Filter, sort and page `entries` as `arguments` ask."""
    words = (arguments.search or "").lower().split()
    author = arguments.author.lower() if arguments.author else None
    summaries: list[ModelSummary] = []
    for entry in entries:
        haystack = f"{entry.id} {entry.name or ''}".lower()
        if any(word not in haystack for word in words):
            continue
        if author is not None and entry.id.lower().split("/", 1)[0] != author:
            continue
        if arguments.min_context is not None and (entry.context_length or 0) < arguments.min_context:
            continue
        summary = ModelSummary.from_entry(entry)
        if not _within(summary.prompt_price, arguments.max_prompt_price):
            continue
        if not _within(summary.completion_price, arguments.max_completion_price):
            continue
        summaries.append(summary)

    if arguments.sort == "price":
        summaries.sort(key=lambda summary: (_total_price(summary), summary.id))
    elif arguments.sort == "context":
        summaries.sort(key=lambda summary: (-(summary.context_length or 0), summary.id))
    else:
        summaries.sort(key=lambda summary: summary.id)

    end = arguments.offset + arguments.limit
    page = summaries[arguments.offset : end]
    return ModelsResult(
        total=len(entries),
        matched=len(summaries),
        offset=arguments.offset,
        models=page,
        next_offset=end if end < len(summaries) else None,
    )


async def models(call: CallContext, arguments: ModelsArguments) -> ModelsResult:
    caller = call.caller(arguments.user_id, arguments.project_id)
    return select(await call.services.catalog.models(caller), arguments)


def _per_million(per_token: float | None) -> float | None:
    # Negative prices mark "variable" pricing (e.g. openrouter/auto): unknown here.
    if per_token is None or per_token < 0:
        return None
    return round(per_token * TOKENS_PER_MILLION, 6)


def _within(price: float | None, limit: float | None) -> bool:
    return limit is None or (price is not None and price <= limit)


def _total_price(summary: ModelSummary) -> float:
    if summary.prompt_price is None or summary.completion_price is None:
        return float("inf")
    return summary.prompt_price + summary.completion_price


def _short_count(tokens: int) -> str:
    if tokens >= 1_000_000 and tokens % 1_000_000 == 0:
        return f"{tokens // 1_000_000}M"
    if tokens >= 1000:
        return f"{round(tokens / 1000)}K"
    return str(tokens)


MODELS = Method(
    primitive="llm",
    name="models",
    description=(
        "Find a model to use with naive_llm_chat: search text and filters (author, minimum context, "
        "maximum USD per million tokens), sorted (id, price, context) and paged. Free."
    ),
    arguments=ModelsArguments,
    result=ModelsResult,
    annotations=ToolAnnotations(
        title="Find models (Naive)",
        read_only_hint=True,
        destructive_hint=False,
        idempotent_hint=True,
        open_world_hint=False,
    ),
    handler=models,
)
