"""The upstream's answers, as the Naive API sends them (naive-api.md).

Tolerant by design: unknown fields are ignored, documented ones may be null, and the two
model-list shapes (Naive's typed route and OpenRouter's) both read into `ModelEntry`.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class _Wire(BaseModel):
    # Built on the first upstream answer, not at start-up: tools/list never needs these.
    model_config = ConfigDict(extra="ignore", defer_build=True)


class FunctionCall(_Wire):
    name: str = ""
    arguments: str = ""


class ToolCall(_Wire):
    id: str | None = None
    type: str = "function"
    function: FunctionCall = Field(default_factory=FunctionCall)


class AssistantMessage(_Wire):
    role: str = "assistant"
    content: str | None = None
    tool_calls: list[ToolCall] | None = None
    reasoning: str | None = None


class Choice(_Wire):
    index: int = 0
    finish_reason: str | None = None
    message: AssistantMessage = Field(default_factory=AssistantMessage)


class PromptTokensDetails(_Wire):
    cached_tokens: int | None = None


class CompletionTokensDetails(_Wire):
    reasoning_tokens: int | None = None


class Usage(_Wire):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    cost: float | None = None
    prompt_tokens_details: PromptTokensDetails | None = None
    completion_tokens_details: CompletionTokensDetails | None = None


class ChatCompletion(_Wire):
    id: str | None = None
    model: str | None = None
    provider: str | None = None
    choices: list[Choice] = Field(min_length=1)
    usage: Usage | None = None
    truncated: bool | None = None
    credits_used: float | None = None
    credits_remaining: float | None = None


class Pricing(_Wire):
    """USD per token (prompt, completion, internal_reasoning, input_cache_*, audio), per request,
    per input image and per web search. Naive's typed list gives prompt and completion;
    OpenRouter's gives the rest too."""

    prompt: float | None = None
    completion: float | None = None
    request: float | None = None
    image: float | None = None
    web_search: float | None = None
    internal_reasoning: float | None = None
    input_cache_read: float | None = None
    input_cache_write: float | None = None
    audio: float | None = None

    @field_validator("*", mode="before")
    @classmethod
    def _unknown_if_not_a_number(cls, value: object) -> object:
        # A price that is not a finite number reads as -1, the list's own mark for "variable":
        # a spending cap refuses what it cannot price, and the rest of the listing stays readable.
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            return -1.0
        try:
            number = float(value)
        except ValueError:
            return -1.0
        return number if math.isfinite(number) else -1.0


class TopProvider(_Wire):
    context_length: int | None = None
    max_completion_tokens: int | None = None

    @field_validator("*", mode="before")
    @classmethod
    def _unknown_if_not_a_count(cls, value: object) -> object:
        return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


class ModelEntry(_Wire):
    """One routable model. Prices are USD per token (the wire sends decimal strings)."""

    id: str
    name: str | None = None
    context_length: int | None = None
    pricing: Pricing = Field(default_factory=Pricing)
    top_provider: TopProvider | None = None


class ModelList(_Wire):
    """Naive's `{"count", "models": [...]}` or OpenRouter's `{"data": [...]}`."""

    models: list[ModelEntry]

    @model_validator(mode="before")
    @classmethod
    def _either_shape(cls, value: Any) -> Any:
        if isinstance(value, dict) and "models" not in value and isinstance(value.get("data"), list):
            return {"models": value["data"]}
        return value


class Generation(_Wire):
    """OpenRouter's generation stats (`{"data": {...}}`); any field may be null."""

    id: str | None = None
    model: str | None = None
    provider_name: str | None = None
    total_cost: float | None = None
    created_at: str | None = None
    latency: float | None = None
    generation_time: float | None = None
    finish_reason: str | None = None
    native_finish_reason: str | None = None
    tokens_prompt: int | None = None
    tokens_completion: int | None = None
    native_tokens_reasoning: int | None = None
    native_tokens_cached: int | None = None
    streamed: bool | None = None
    cancelled: bool | None = None


class GenerationEnvelope(_Wire):
    data: Generation


class KeyInfo(_Wire):
    """OpenRouter's `GET /key`: the key's limit and usage, in USD; no limit is null."""

    label: str | None = None
    limit: float | None = None
    limit_remaining: float | None = None
    usage: float | None = None


class KeyEnvelope(_Wire):
    data: KeyInfo


class Credits(_Wire):
    """OpenRouter's `GET /credits`: what the account bought and has used, in USD."""

    total_credits: float
    total_usage: float


class CreditsEnvelope(_Wire):
    data: Credits
