"""The upstream's answers, as the Naive API sends them (naive-api.md).

Tolerant by design: unknown fields are ignored, documented ones may be null, and the two
model-list shapes (Naive's typed route and OpenRouter's) both read into `ModelEntry`.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class _Wire(BaseModel):
    # Built on the first upstream answer, not at start-up: tools/list never needs these.
    model_config = ConfigDict(extra="ignore", defer_build=True)


def build_wire_models() -> None:
    """Build every wire model now (the warm-up does, on a worker thread), not on the first answer."""
    pending = list(_Wire.__subclasses__())
    while pending:
        model = pending.pop()
        pending.extend(model.__subclasses__())
        model.model_rebuild(force=True)


class FunctionCall(_Wire):
    name: str = ""
    arguments: str = ""


class ToolCall(_Wire):
    id: str | None = None
    type: str = "function"
    function: FunctionCall = Field(default_factory=FunctionCall)


class ImageUrl(_Wire):
    url: str


class OutputImage(_Wire):
    """An image the model made: `{"type": "image_url", "image_url": {"url": "data:image/png;base64,…"}}`."""

    image_url: ImageUrl


# Images one answer may hold: far above what a model makes at once; an upstream inventing images
# without end stops here.
MAX_IMAGES = 64


class AssistantMessage(_Wire):
    role: str = "assistant"
    content: str | None = None
    tool_calls: list[ToolCall] | None = None
    reasoning: str | None = None
    images: list[OutputImage] | None = Field(default=None, max_length=MAX_IMAGES)

    @field_validator("images", mode="before")
    @classmethod
    def _only_images_with_a_url(cls, value: object) -> object:
        # A malformed image never costs the answer it came with.
        if not isinstance(value, list):
            return None
        return [{"image_url": {"url": url}} for item in value if (url := output_image_url(item)) is not None]


def output_image_url(item: object) -> str | None:
    """The URL of an item of `message.images` (or of a streamed `delta.images`), if it has one."""
    image_url = item.get("image_url") if isinstance(item, dict) else None
    url = image_url.get("url") if isinstance(image_url, dict) else None
    return url if isinstance(url, str) else None


class TopLogprob(_Wire):
    token: str
    logprob: float = Field(allow_inf_nan=False, strict=True)  # a number, not a string or a boolean
    bytes: list[int] | None = None


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob] = Field(default_factory=list)


# The most JSON of token logprobs one answer keeps (the entries past it are counted, not kept):
# with 20 alternatives a token is about 1 KB, so some 250 tokens of those, thousands without.
LOGPROBS_KEPT_BYTES = 256 * 1024


class Logprobs(_Wire):
    """`choices[0].logprobs`: each token's log probability and its likeliest alternatives, for the
    answer's first tokens (LOGPROBS_KEPT_BYTES of them); `left_out` counts the rest (our own
    field: the upstream does not send it)."""

    content: list[TokenLogprob] = Field(default_factory=list)
    left_out: int = 0

    @model_validator(mode="before")
    @classmethod
    def _kept_within_bounds(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        kept = LogprobsKept()
        kept.add(value.get("content"))
        earlier = value.get("left_out")
        return {
            "content": kept.entries,
            "left_out": kept.left_out + (earlier if isinstance(earlier, int) else 0),
        }


class LogprobsKept:
    """Token logprobs as they come, the first LOGPROBS_KEPT_BYTES of them kept, measured as JSON
    (what they cost to hold and to send on); a malformed entry is dropped, never the answer."""

    __slots__ = ("entries", "kept_bytes", "left_out")

    def __init__(self) -> None:
        self.entries: list[TokenLogprob] = []
        self.kept_bytes = 0
        self.left_out = 0

    def add(self, entries: object) -> int:
        """Take the entries of one chunk (`logprobs.content`); returns the bytes it kept."""
        before = self.kept_bytes
        for entry in entries if isinstance(entries, list) else []:
            try:
                token = TokenLogprob.model_validate(entry)
            except ValidationError:
                continue
            size = len(token.model_dump_json(exclude_none=True))
            if self.left_out or self.kept_bytes + size > LOGPROBS_KEPT_BYTES:
                self.left_out += 1  # the first tokens are kept, so none after one left out
                continue
            self.entries.append(token)
            self.kept_bytes += size
        return self.kept_bytes - before


class Choice(_Wire):
    """A chat choice; a text completion's (`{"text", "finish_reason"}`) is read as one whose
    message holds that text, so both answers have one shape from here up."""

    index: int = 0
    finish_reason: str | None = None
    message: AssistantMessage = Field(default_factory=AssistantMessage)
    logprobs: Logprobs | None = None

    @model_validator(mode="before")
    @classmethod
    def _text_is_the_message(cls, value: Any) -> Any:
        if isinstance(value, dict) and "message" not in value and isinstance(value.get("text"), str):
            return {**value, "message": {"role": "assistant", "content": value["text"]}}
        return value

    @field_validator("logprobs", mode="before")
    @classmethod
    def _none_unless_an_object(cls, value: object) -> object:
        return value if isinstance(value, dict) else None


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


def _names(value: object) -> list[str] | None:
    """A list of names as sent, without what is not a string; anything but a list is unknown."""
    return [item for item in value if isinstance(item, str)] if isinstance(value, list) else None


class Architecture(_Wire):
    """What a model takes and gives (OpenRouter's list only): "text", "image", "audio", "file", …"""

    input_modalities: list[str] | None = None
    output_modalities: list[str] | None = None

    @field_validator("*", mode="before")
    @classmethod
    def _unknown_if_not_names(cls, value: object) -> object:
        return _names(value)


class ModelEntry(_Wire):
    """One routable model. Prices are USD per token (the wire sends decimal strings).

    `architecture` and `supported_parameters` come in OpenRouter's list shape only; Naive's typed
    route leaves them out (None: unknown, which is not the same as none)."""

    id: str
    name: str | None = None
    context_length: int | None = None
    pricing: Pricing = Field(default_factory=Pricing)
    top_provider: TopProvider | None = None
    architecture: Architecture | None = None
    supported_parameters: list[str] | None = None

    @field_validator("architecture", mode="before")
    @classmethod
    def _unknown_if_not_an_object(cls, value: object) -> object:
        return value if isinstance(value, dict) else None

    @field_validator("supported_parameters", mode="before")
    @classmethod
    def _unknown_if_not_names(cls, value: object) -> object:
        return _names(value)


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
