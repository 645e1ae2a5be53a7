"""`llm.models`: find a model by text, author, context, price, modality, parameter and cost, sorted
and paged, compactly.

The sandbox's test models (`sandbox/…`: faults, slow answers, odd prices) stay out of a listing
unless the call asks for them (`author="sandbox"`, or a search that says `sandbox`). Only the
listing hides them: the spend guard prices calls from the whole catalogue, test models included.
"""

from __future__ import annotations

from typing import Annotated, Literal

from mcp_types import ToolAnnotations
from pydantic import BaseModel, Field, WithJsonSchema

from naive_mcp.caller import TenantId
from naive_mcp.errors import NaiveError
from naive_mcp.estimate import listed_prices
from naive_mcp.primitives.llm.fields import TOKENS_PER_MILLION, format_usd
from naive_mcp.registry import CallContext, Method, MethodResult
from naive_mcp.validation import Arguments, matching
from naive_mcp.wire import ModelEntry

# OpenRouter's modality names (architecture.input_modalities / output_modalities).
InputModality = Literal["text", "image", "audio", "file", "video"]
OutputModality = Literal["text", "image", "audio", "embeddings"]
# The author of the sandbox's test models, which a listing leaves out unless asked for.
TEST_MODELS_AUTHOR = "sandbox"
# Bytes a model's line may take; its modalities shrink to initials to stay within them.
LINE_BYTES = 120


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
    input_modality: InputModality | None = None
    output_modality: OutputModality | None = None
    supported_parameter: str | None = matching(
        r"^[a-z][a-z0-9_]*$",
        "a request parameter's name, such as tools, reasoning or response_format",
        default=None,
        max_length=60,
        description="e.g. tools, reasoning",
    )
    free: bool | None = Field(default=None, description="true: costs nothing; false: priced")
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
    input_modalities: list[str] | None = None
    output_modalities: list[str] | None = None

    @classmethod
    def from_entry(cls, entry: ModelEntry) -> ModelSummary:
        return cls(
            id=entry.id,
            name=entry.name,
            context_length=entry.context_length,
            prompt_price=_per_million(entry.pricing.prompt),
            completion_price=_per_million(entry.pricing.completion),
            input_modalities=_inputs(entry),
            output_modalities=_outputs(entry),
        )

    def line(self) -> str:
        context = f"{_short_count(self.context_length)} ctx" if self.context_length else "ctx ?"
        price = f"{format_usd(self.prompt_price)}/{format_usd(self.completion_price)}"
        line = f"{self.id} | {context} | {price}"
        if not self.shows_modalities:
            return line
        full = f"{line} | {self._modalities(short=False)}"
        return full if len(full.encode()) <= LINE_BYTES else f"{line} | {self._modalities(short=True)}"

    @property
    def shows_modalities(self) -> bool:
        """Whether the line names modalities: it does when they are known and not text to text."""
        known = self.input_modalities is not None or self.output_modalities is not None
        return known and (self.input_modalities, self.output_modalities) != (["text"], ["text"])

    def _modalities(self, *, short: bool) -> str:
        """`in text+image -> out text`, or with `short` each name's initial (`in t+i -> out t`).
        ASCII, so that a terminal whose encoding is not UTF-8 prints it too."""

        def joined(modalities: list[str] | None) -> str:
            names = [modality[:1] if short else modality for modality in modalities or []]
            return "+".join(names) or "?"

        return f"in {joined(self.input_modalities)} -> out {joined(self.output_modalities)}"


class ModelsResult(MethodResult):
    total: int = Field(description="models upstream")
    matched: int = Field(description="models that pass the filters")
    offset: int
    # Published by shape (the README lists the fields: id, name, context_length, prompt_price,
    # completion_price, input_modalities, output_modalities).
    models: Annotated[list[ModelSummary], WithJsonSchema({"type": "array"}, mode="serialization")]
    next_offset: int | None = Field(default=None, description="offset of the next page, if any")
    hidden: int | None = Field(
        default=None, description="sandbox test models that pass but are left out (author=sandbox)"
    )

    def content(self) -> list[str]:
        hidden = (
            f"{self.hidden} sandbox test model{'s' if self.hidden > 1 else ''} left out: "
            "author=sandbox lists them"
            if self.hidden
            else None
        )
        if not self.models:
            also = f" {hidden}." if hidden else ""
            return [f"No model matches ({self.total} models upstream). Loosen the filters.{also}"]
        first = self.offset + 1
        legend = (
            " | modalities in -> out, if not text only"
            if any(m.shows_modalities for m in self.models)
            else ""
        )
        head = (
            f"Models {first}-{self.offset + len(self.models)} of {self.matched} matching "
            f"({self.total} in all{'; ' + hidden if hidden else ''}). "
            f"id | context | USD per 1M tokens in/out{legend}"
        )
        more = [f"More: offset={self.next_offset}"] if self.next_offset is not None else []
        return ["\n".join([head, *(model.line() for model in self.models), *more])]


def select(entries: list[ModelEntry], arguments: ModelsArguments) -> ModelsResult:
    """Filter, sort and page `entries` as `arguments` ask."""
    _refuse_unlisted_filters(entries, arguments)
    words = (arguments.search or "").lower().split()
    author = arguments.author.lower() if arguments.author else None
    test_models_asked = author == TEST_MODELS_AUTHOR or any(TEST_MODELS_AUTHOR in word for word in words)
    summaries: list[ModelSummary] = []
    hidden = 0
    for entry in entries:
        if not _passes(entry, arguments, words, author):
            continue
        if _author(entry) == TEST_MODELS_AUTHOR and not test_models_asked:
            hidden += 1
            continue
        summaries.append(ModelSummary.from_entry(entry))

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
        hidden=hidden or None,
    )


def _passes(entry: ModelEntry, arguments: ModelsArguments, words: list[str], author: str | None) -> bool:
    """Whether `entry` passes every filter; a field the entry does not give passes none."""
    haystack = f"{entry.id} {entry.name or ''}".lower()
    if any(word not in haystack for word in words):
        return False
    if author is not None and _author(entry) != author:
        return False
    if arguments.min_context is not None and (entry.context_length or 0) < arguments.min_context:
        return False
    if not _within(_per_million(entry.pricing.prompt), arguments.max_prompt_price):
        return False
    if not _within(_per_million(entry.pricing.completion), arguments.max_completion_price):
        return False
    if arguments.input_modality is not None and arguments.input_modality not in (_inputs(entry) or []):
        return False
    if arguments.output_modality is not None and arguments.output_modality not in (_outputs(entry) or []):
        return False
    if arguments.supported_parameter is not None and arguments.supported_parameter not in (
        _parameters(entry) or []
    ):
        return False
    return arguments.free is None or _is_free(entry) == arguments.free


def _refuse_unlisted_filters(entries: list[ModelEntry], arguments: ModelsArguments) -> None:
    """A filter on a field no model of the listing gives would match nothing, silently: say so.

    Naive's typed route lists ids, names, context and prices only; OpenRouter's shape (Naive's
    proxy, OpenRouter itself) gives modalities and parameters too. A model that alone lacks the
    field just does not match. A parameter no model lists is most likely misspelt (`tool`).
    """
    if not entries:
        return
    asked = (
        ("input_modality", arguments.input_modality, "input modalities", _inputs),
        ("output_modality", arguments.output_modality, "output modalities", _outputs),
        ("supported_parameter", arguments.supported_parameter, "supported parameters", _parameters),
    )
    for field, value, what, given in asked:
        if value is not None and all(given(entry) is None for entry in entries):
            raise NaiveError(
                f"this backend's model list does not give the models' {what}, so `{field}` "
                "cannot filter it (Naive's typed route lists ids, names, context and prices only).",
                kind="unsupported_filter",
            )
    parameter = arguments.supported_parameter
    if parameter is None:
        return
    listed = sorted({name for entry in entries for name in _parameters(entry) or []})
    if parameter not in listed:
        raise NaiveError(
            f"no model lists the parameter {parameter!r} (`supported_parameter`). The parameters "
            f"the models list: {', '.join(listed)}.",
            kind="invalid_arguments",
        )


async def models(call: CallContext, arguments: ModelsArguments) -> ModelsResult:
    caller = call.caller(arguments.user_id, arguments.project_id)
    return select(await call.services.catalog.models(caller), arguments)


def _author(entry: ModelEntry) -> str:
    return entry.id.lower().split("/", 1)[0]


def _inputs(entry: ModelEntry) -> list[str] | None:
    return entry.architecture.input_modalities if entry.architecture else None


def _outputs(entry: ModelEntry) -> list[str] | None:
    return entry.architecture.output_modalities if entry.architecture else None


def _parameters(entry: ModelEntry) -> list[str] | None:
    return entry.supported_parameters


def _is_free(entry: ModelEntry) -> bool:
    """Costs nothing by the spend guard's own reading of the list (`estimate.listed_prices`):
    every price it knows listed at 0, fees included; a price missing or "variable" (negative)
    is not free."""
    prices = listed_prices(entry)
    return prices is not None and prices.free


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
        "Find models for naive_llm_chat: search words, filters (author, context, price per million "
        "tokens, modality, supported parameter, free), sorted and paged. Free."
    ),
    arguments=ModelsArguments,
    result=ModelsResult,
    annotations=ToolAnnotations(
        title="Find models (Naive)",
        read_only_hint=True,  # destructiveHint means nothing then (the MCP spec): left out
        idempotent_hint=True,
        open_world_hint=False,
    ),
    handler=models,
)
