"""The sandbox's models: a fixed, deterministic catalogue with real-looking prices.

Prices are USD per token, as the wire carries them (per request and per image for those fees).
`sandbox/fail-*` models provoke each error kind of the Naive API on purpose (see `faults.py`).
A few more misbehave in ways that try spending caps: a model listed free that bills, per-request
and per-image fees, and an upstream that ignores `max_tokens`. The sandbox lists them all, as an
upstream lists every model (the spend guard prices calls to them from this list); naive-mcp's
model search leaves the `sandbox/…` ones out unless asked for them.

Each model has OpenRouter's architecture (input and output modalities) and supported parameters,
with realistic values; Naive's typed shape leaves them out, as Naive's documented list does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from naive_mcp.sandbox.faults import FAULTS, FLAKY, FLAKY_PREFIX

# Request parameters, in groups that models list together (OpenRouter's supported_parameters).
_SAMPLING = ("max_tokens", "temperature", "top_p", "stop", "seed")
_PENALTIES = ("frequency_penalty", "presence_penalty")
_TOOLS = ("tools", "tool_choice")
_STRUCTURED = ("response_format", "structured_outputs")


@dataclass(frozen=True, slots=True)
class SandboxModel:
    id: str
    name: str
    provider: str
    context_length: int
    prompt_price: float  # USD per token
    completion_price: float
    created: int
    reasoning: bool = False
    # "runaway": ignores max_tokens and answers at length, streamed one token per chunk.
    pace: Literal["normal", "slow", "think", "runaway"] = "normal"
    input_modalities: tuple[str, ...] = ("text",)
    # With "image", the model answers a call that asks for image output with an image.
    output_modalities: tuple[str, ...] = ("text",)
    # As OpenRouter lists them; `reasoning` adds reasoning and include_reasoning.
    supported_parameters: tuple[str, ...] = field(default=_SAMPLING + _TOOLS + ("response_format",))
    request_price: float = 0.0  # USD per request
    image_price: float = 0.0  # USD per input image
    # What the model really bills per prompt and per completion token, when not its listed price.
    billed: tuple[float, float] | None = None
    max_completion_tokens: int = 16384

    @property
    def billed_prices(self) -> tuple[float, float]:
        return self.billed or (self.prompt_price, self.completion_price)

    def pricing(self, *, every_fee: bool = False) -> dict[str, str]:
        """The listed prices; fees only when there are some, unless `every_fee` (OpenRouter's
        shape lists each, "0" when there is none)."""
        fees = {"request": self.request_price, "image": self.image_price, "web_search": 0.0}
        return {
            "prompt": _decimal(self.prompt_price),
            "completion": _decimal(self.completion_price),
            **{name: _decimal(price) for name, price in fees.items() if price or every_fee},
        }

    def naive_shape(self) -> dict[str, object]:
        return {
            "id": self.id,
            "name": self.name,
            "context_length": self.context_length,
            "pricing": self.pricing(),
        }

    def openrouter_shape(self) -> dict[str, object]:
        return {
            **self.naive_shape(),
            "pricing": self.pricing(every_fee=True),
            "created": self.created,
            "description": f"{self.name}, served by the naive-mcp sandbox.",
            "architecture": {
                "input_modalities": list(self.input_modalities),
                "output_modalities": list(self.output_modalities),
                "tokenizer": "sandbox",
            },
            "top_provider": {
                "context_length": self.context_length,
                "max_completion_tokens": self.max_completion_tokens,
            },
            "supported_parameters": list(self.supported_parameters)
            + (["reasoning", "include_reasoning"] if self.reasoning else []),
        }


def _decimal(price: float) -> str:
    return f"{price:.10f}".rstrip("0").rstrip(".") or "0"


_M = 1_000_000

MODELS: tuple[SandboxModel, ...] = (
    SandboxModel(
        "anthropic/claude-sonnet-4.6",
        "Anthropic: Claude Sonnet 4.6",
        "Anthropic",
        200_000,
        3 / _M,
        15 / _M,
        1_760_000_000,
        reasoning=True,
        input_modalities=("text", "image", "file"),
        supported_parameters=("max_tokens", "temperature", "top_p", "top_k", "stop", *_TOOLS, *_STRUCTURED),
    ),
    SandboxModel(
        "anthropic/claude-haiku-4.5",
        "Anthropic: Claude Haiku 4.5",
        "Anthropic",
        200_000,
        1 / _M,
        5 / _M,
        1_755_000_000,
        input_modalities=("text", "image"),
        supported_parameters=("max_tokens", "temperature", "top_p", "top_k", "stop", *_TOOLS, *_STRUCTURED),
    ),
    SandboxModel(
        "openai/gpt-5.2",
        "OpenAI: GPT-5.2",
        "OpenAI",
        400_000,
        1.25 / _M,
        10 / _M,
        1_765_000_000,
        reasoning=True,
        input_modalities=("text", "image", "file"),
        supported_parameters=("max_tokens", "seed", *_TOOLS, *_STRUCTURED),
    ),
    SandboxModel(
        "openai/gpt-5-mini",
        "OpenAI: GPT-5 Mini",
        "OpenAI",
        400_000,
        0.25 / _M,
        2 / _M,
        1_754_000_000,
        input_modalities=("text", "image", "file"),
        supported_parameters=("max_tokens", "seed", *_TOOLS, *_STRUCTURED),
    ),
    SandboxModel(
        "google/gemini-2.5-pro",
        "Google: Gemini 2.5 Pro",
        "Google",
        1_048_576,
        1.25 / _M,
        10 / _M,
        1_750_000_000,
        reasoning=True,
        input_modalities=("text", "image", "audio", "file"),
        supported_parameters=(*_SAMPLING, *_TOOLS, *_STRUCTURED),
    ),
    SandboxModel(
        "google/gemini-2.5-flash",
        "Google: Gemini 2.5 Flash",
        "Google",
        1_048_576,
        0.3 / _M,
        2.5 / _M,
        1_750_000_000,
        input_modalities=("text", "image", "audio"),
        supported_parameters=(*_SAMPLING, *_TOOLS, *_STRUCTURED),
    ),
    SandboxModel(
        "meta-llama/llama-3.3-70b-instruct",
        "Meta: Llama 3.3 70B Instruct",
        "DeepInfra",
        131_072,
        0.13 / _M,
        0.4 / _M,
        1_733_000_000,
        supported_parameters=(
            *_SAMPLING,
            *_PENALTIES,
            "top_k",
            "min_p",
            "repetition_penalty",
            *_TOOLS,
            "response_format",
        ),
    ),
    SandboxModel(
        "meta-llama/llama-3.3-70b-instruct:free",
        "Meta: Llama 3.3 70B Instruct (free)",
        "Together",
        65_536,
        0.0,
        0.0,
        1_733_000_000,
        supported_parameters=(*_SAMPLING, *_PENALTIES),
    ),
    SandboxModel(
        "mistralai/mistral-small-3.2",
        "Mistral: Mistral Small 3.2",
        "Mistral",
        131_072,
        0.1 / _M,
        0.3 / _M,
        1_750_000_000,
        supported_parameters=(*_SAMPLING, *_PENALTIES, *_TOOLS, *_STRUCTURED),
    ),
    SandboxModel(
        "deepseek/deepseek-r1",
        "DeepSeek: R1",
        "DeepSeek",
        163_840,
        0.55 / _M,
        2.19 / _M,
        1_737_000_000,
        reasoning=True,
        supported_parameters=(*_SAMPLING, *_PENALTIES),
    ),
    SandboxModel(
        "sandbox/slow",
        "Sandbox: drips a long answer slowly",
        "Sandbox",
        8_192,
        0.1 / _M,
        0.4 / _M,
        1_700_000_000,
        pace="slow",
    ),
    SandboxModel(
        "sandbox/small-context",
        "Sandbox: a context of 1,000 tokens (refuses a longer prompt, as a real endpoint does)",
        "Sandbox",
        1_000,
        0.1 / _M,
        0.4 / _M,
        1_700_000_000,
        max_completion_tokens=500,
    ),
    SandboxModel(
        "sandbox/think",
        "Sandbox: thinks in silence (keep-alive comments only), then answers",
        "Sandbox",
        8_192,
        0.1 / _M,
        0.4 / _M,
        1_700_000_000,
        pace="think",
    ),
    SandboxModel(
        "sandbox/runaway",
        "Sandbox: ignores max_tokens and answers at length, a token per chunk",
        "Sandbox",
        8_192,
        0.1 / _M,
        0.4 / _M,
        1_700_000_000,
        pace="runaway",
    ),
    SandboxModel(
        "sandbox/listed-free",
        "Sandbox: listed at price 0, billed like a paid model",
        "Sandbox",
        8_192,
        0.0,
        0.0,
        1_700_000_000,
        billed=(1 / _M, 5 / _M),
    ),
    SandboxModel(
        "sandbox/listed-free:free",
        "Sandbox: a :free variant that bills all the same",
        "Sandbox",
        8_192,
        0.0,
        0.0,
        1_700_000_000,
        billed=(1 / _M, 5 / _M),
    ),
    SandboxModel(
        "sandbox/request-fee",
        "Sandbox: a cent per request on top of its tokens",
        "Sandbox",
        8_192,
        0.1 / _M,
        0.4 / _M,
        1_700_000_000,
        request_price=0.01,
    ),
    SandboxModel(
        "sandbox/image-fee",
        "Sandbox: half a cent per input image on top of its tokens",
        "Sandbox",
        8_192,
        0.1 / _M,
        0.4 / _M,
        1_700_000_000,
        image_price=0.005,
        input_modalities=("text", "image"),
    ),
    *(
        # Priced like a cheap model: a fault model is refused under a credit cap if it is listed free.
        SandboxModel(
            fault.model_id,
            f"Sandbox: provokes {fault.describe()}",
            "Sandbox",
            8_192,
            0.1 / _M,
            0.4 / _M,
            1_700_000_000,
        )
        for fault in FAULTS.values()
    ),
    *(
        SandboxModel(
            f"{FLAKY_PREFIX}{name}",
            f"Sandbox: provokes {fault.describe()} on a key's first call, then answers",
            "Sandbox",
            8_192,
            0.25 / _M,
            2 / _M,
            1_700_000_000,
        )
        for name, fault in FLAKY.items()
    ),
    SandboxModel(
        "google/gemini-2.5-flash-image",
        "Google: Gemini 2.5 Flash Image",
        "Google",
        32_768,
        0.3 / _M,
        2.5 / _M,
        1_759_000_000,
        input_modalities=("text", "image"),
        output_modalities=("image", "text"),
        max_completion_tokens=8_192,
        supported_parameters=(*_SAMPLING, *_STRUCTURED),
    ),
)

BY_ID: dict[str, SandboxModel] = {model.id: model for model in MODELS}
# Routing variants of any model, answered by the model itself (naive-api.md), as is `:online`.
_ROUTING_VARIANTS = ("nitro", "floor", "exacto", "online")


def find_model(name: str) -> SandboxModel | None:
    """The model `name` calls: listed, or an unlisted routing variant of a listed model."""
    base, _, variant = name.rpartition(":")
    return BY_ID.get(name) or (BY_ID.get(base) if variant in _ROUTING_VARIANTS else None)
