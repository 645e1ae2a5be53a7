"""A chat call's worst case, before it is sent: the models it may be routed to, what the model
list says they bill, and a generous count of everything the call sends as input. Pure
functions of the request body and the model list.

What is counted as input, at the dearest model of the fallback chain:
- the whole request body as JSON (messages, tools, tool_choice, response_format, and whatever
  else is sent), at half a token per character;
- each image part, on top of its characters, at `_TOKENS_PER_IMAGE` and at the listed `image`
  price; a file given by URL, whose size cannot be known before it is sent, and a video (whose
  tokens follow its length, not its size) or a part of a kind not known here, at the model's
  whole context;
- the listed per-request fee, once; web search, at the listed `web_search` price and the web
  plugin's per-result fee, when the call asks for it;
- all of it never more than the model's context length, the most a prompt can be billed for.
Output is priced at the dearer of `completion` and `internal_reasoning`.
"""

from __future__ import annotations

import fnmatch
import functools
import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from naive_mcp.errors import NaiveError
from naive_mcp.wire import ModelEntry

# Tokens per character of the request, generously: English runs about 0.25, code and CJK higher.
_TOKENS_PER_CHAR = 0.5
# An image costs tokens for its pixels, not its characters. Providers scale images down before
# counting them (Anthropic about 1,600 tokens at most, OpenAI's high detail about 1,100, Gemini
# 258 a tile): this is above each, and the context length bounds the rest.
_TOKENS_PER_IMAGE = 4_096
# OpenRouter's web plugin: $4 per 1,000 results, 5 results unless `max_results` says otherwise.
_WEB_RESULT_USD = 0.004
_WEB_RESULTS = 5
# Routing variants cost what their base model costs and are not in the model list (naive-api.md);
# nor is `:online`, its base model with the web plugin (priced as that: see _web_usd).
_PRICED_AS_BASE = ("nitro", "floor", "exacto", "online")
# Every variant of a model, listed or not: an allowed model's variants are allowed too.
_VARIANTS = (*_PRICED_AS_BASE, "free", "thinking", "extended")
# UTF-8 bytes an output token carries at most, on average over an answer (see output_tokens_at_least).
_BYTES_PER_TOKEN_AT_MOST = 8


class SpendingRefused(NaiveError):
    default_kind = "spending_cap"

    def describe(self, next_step: str | None = None) -> str:
        step = f" {next_step}" if next_step else ""
        return f"{self.kind}: {self.message}\nNothing was sent upstream and no credits were spent.{step}"


@dataclass(frozen=True, slots=True)
class Prices:
    """What a call may be billed, in USD, at the dearest model it may be routed to."""

    prompt: float = 0.0  # per input token (a cache write's price, if dearer)
    completion: float = 0.0  # per output token, reasoning included
    request: float = 0.0  # per request
    image: float = 0.0  # per input image
    web_search: float = 0.0  # per web search
    audio: float = 0.0  # per input audio token
    # The largest context of the chain, and the least listed longest output; None: not listed.
    context_length: int | None = None
    max_output: int | None = None
    # Models of the chain admitted as free (NAIVE_FREE_MODELS): listed at 0, or unlisted.
    free_models: tuple[str, ...] = ()

    @property
    def free(self) -> bool:
        """Nothing in the list says the call costs anything."""
        return not any((self.prompt, self.completion, self.request, self.image, self.web_search, self.audio))

    def dearer(self, other: Prices) -> Prices:
        """The prices of a chain that may be routed to `self`'s models or `other`'s."""
        contexts = (self.context_length, other.context_length)
        outputs = [n for n in (self.max_output, other.max_output) if n is not None]
        return Prices(
            prompt=max(self.prompt, other.prompt),
            completion=max(self.completion, other.completion),
            request=max(self.request, other.request),
            image=max(self.image, other.image),
            web_search=max(self.web_search, other.web_search),
            audio=max(self.audio, other.audio),
            context_length=None if None in contexts else max(n for n in contexts if n is not None),
            max_output=min(outputs) if outputs else None,
            free_models=self.free_models + other.free_models,
        )


def model_chain(body: dict[str, Any]) -> list[str]:
    """Every model the call may be routed to: `model`, then the `models` fallbacks."""
    return list(dict.fromkeys([body["model"], *(body.get("models") or [])]))


def matches(model: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(model, pattern) for pattern in patterns)


def check_allowed(body: dict[str, Any], patterns: Sequence[str]) -> None:
    """NAIVE_ALLOWED_MODELS: every model the call may be routed to must match a pattern, itself or
    as a variant (`:nitro`, `:free`, …) of a model that does; what it costs is the caps' concern."""
    if not patterns:
        return
    for model in model_chain(body):
        base, variant = _variant(model)
        if not (matches(model, patterns) or (variant in _VARIANTS and matches(base, patterns))):
            raise SpendingRefused(
                f"model {model!r} is not allowed on this server (NAIVE_ALLOWED_MODELS: "
                f"{', '.join(patterns)}). Choose an allowed model, or ask the operator to add it.",
                kind="model_not_allowed",
            )


def chain_prices(body: dict[str, Any], models: Sequence[ModelEntry], free: Sequence[str]) -> Prices:
    """The prices of the dearest model of the call's chain, fee by fee. A model the list gives no
    price for, or a price of 0 in all, is admitted (at 0) only if it matches NAIVE_FREE_MODELS
    (`free`): a price of 0 may be a gap in the list as well as a free model."""
    by_id = {entry.id: entry for entry in models}
    chain: list[Prices] = []
    for model in model_chain(body):
        entry = _entry(by_id, model)
        listed = listed_prices(entry) if entry is not None else None
        if listed is None or listed.free:
            if not matches(model, free):
                raise SpendingRefused(_unpriced(model, free, listed_free=listed is not None))
            context = entry.context_length if entry is not None else None
            listed = Prices(context_length=context, max_output=_max_output(entry), free_models=(model,))
        chain.append(listed)
    return functools.reduce(Prices.dearer, chain)


def context_length(chain: Sequence[str], models: Sequence[ModelEntry]) -> int | None:
    """The least context length the list gives of the models in `chain` (a routing variant is its
    base model's); None when it gives none."""
    by_id = {entry.id: entry for entry in models}
    known = [
        entry.context_length for model in chain if (entry := _entry(by_id, model)) and entry.context_length
    ]
    return min(known) if known else None


def input_usd(body: dict[str, Any], prices: Prices) -> float:
    """The most the call's input may be billed: its tokens, images, request fee and web search."""
    parts = _Parts.of(body)
    tokens = math.ceil(len(json.dumps(body)) * _TOKENS_PER_CHAR) + 16 + parts.images * _TOKENS_PER_IMAGE
    if parts.unbounded:
        if prices.context_length is None:
            raise SpendingRefused(
                f"this call sends {parts.unbounded}, and the model list gives no context length to bound "
                f"its cost; this server caps spending. {parts.instead}."
            )
        tokens = prices.context_length
    if prices.context_length is not None:
        tokens = min(tokens, prices.context_length)
    per_token = max(prices.prompt, prices.audio) if parts.audio else prices.prompt
    return tokens * per_token + prices.request + parts.images * prices.image + _web_usd(body, prices)


def output_budget(body: dict[str, Any]) -> tuple[int | None, int]:
    """The call's `max_tokens` (None: not set) and its reasoning budget, which is billed as output
    too and may come on top of max_tokens."""
    reasoning: dict[str, Any] = body["reasoning"] if isinstance(body.get("reasoning"), dict) else {}
    thinking = reasoning["max_tokens"] if isinstance(reasoning.get("max_tokens"), int) else 0
    max_tokens = body.get("max_tokens")
    return (max_tokens if isinstance(max_tokens, int) else None), thinking


def output_tokens_at_least(pieces: int, size: int) -> int:
    """A lower bound of the output tokens a stream has carried, from the number of its non-empty
    text, reasoning and tool-argument pieces and their size in UTF-8 bytes: the larger of

    - one token a piece: providers stream whole tokens (the bytes of a token that does not yet
      decode are held back), so a non-empty piece carries at least one;
    - a token every 8 bytes: English runs 4 to 5 bytes a token, code 3 to 4, CJK 3 to 6 (three
      bytes a character, one or two characters a token); only long runs of whitespace pack more.

    Being a lower bound, it never passes what an honest upstream bills, so an answer that stops
    at its max_tokens is never cut; an upstream that ignores max_tokens is stopped at the first
    token past it if it streams a token a chunk, and by 8 / (its bytes a token) of it (about 1.7
    for English) if it streams in large chunks. Either way the call is settled at what the
    upstream bills.
    """
    return max(pieces, size // _BYTES_PER_TOKEN_AT_MOST)


def amount(value: float | None) -> float | None:
    """A figure from the upstream fit to count with: finite and not negative; else unknown."""
    return value if value is not None and math.isfinite(value) and value >= 0 else None


# --- the parts of it ---------------------------------------------------------------------------


def _entry(by_id: dict[str, ModelEntry], model: str) -> ModelEntry | None:
    """The model's entry; an unlisted routing variant (`:nitro`, `:floor`, `:exacto`) or `:online`
    is its base model's."""
    if model in by_id:
        return by_id[model]
    base, variant = _variant(model)
    return by_id.get(base) if variant in _PRICED_AS_BASE else None


def _variant(model: str) -> tuple[str, str]:
    """`(base model, variant)` of `vendor/model:variant`; the variant is "" without one."""
    base, colon, variant = model.rpartition(":")
    return (base, variant) if colon and "/" in base else (model, "")


def listed_prices(entry: ModelEntry) -> Prices | None:
    """What the list says the model bills; None if a price it needs is missing or not a price
    (e.g. -1, OpenRouter's "variable")."""
    pricing = entry.pricing
    values = {
        name: getattr(pricing, name)
        for name in (
            "prompt",
            "completion",
            "request",
            "image",
            "web_search",
            "audio",
            "internal_reasoning",
            "input_cache_write",
        )
    }
    if values["prompt"] is None or values["completion"] is None:
        return None
    if any(value is not None and amount(value) is None for value in values.values()):
        return None
    price = {name: value or 0.0 for name, value in values.items()}
    return Prices(
        prompt=max(price["prompt"], price["input_cache_write"]),
        completion=max(price["completion"], price["internal_reasoning"]),
        request=price["request"],
        image=price["image"],
        web_search=price["web_search"],
        audio=price["audio"],
        context_length=entry.context_length,
        max_output=_max_output(entry),
    )


def _max_output(entry: ModelEntry | None) -> int | None:
    top = entry.top_provider if entry is not None else None
    return top.max_completion_tokens if top is not None else None


def _unpriced(model: str, free: Sequence[str], *, listed_free: bool) -> str:
    allowed = f" (NAIVE_FREE_MODELS: {', '.join(free)})" if free else " (NAIVE_FREE_MODELS is empty)"
    if listed_free:
        return (
            f"{model!r} is listed at price 0, and this server caps spending: a model listed free is "
            f"used under a cap only if the operator allows it by name{allowed}, since a price of 0 may "
            "be a gap in the list and the call billed all the same. Choose a priced model "
            "(naive_llm_models sort=price), or ask the operator to add it to NAIVE_FREE_MODELS "
            '(e.g. ["*:free"]).'
        )
    return (
        f"the cost of {model!r} cannot be estimated (it is not in the model list with prices), "
        "and this server caps spending. Choose a listed model (naive_llm_models), or, if it is free, "
        f"ask the operator to add it to NAIVE_FREE_MODELS{allowed}."
    )


@dataclass
class _Parts:
    images: int = 0
    audio: bool = False
    unbounded: str = ""  # what is sent whose tokens cannot be counted before it is sent
    instead: str = ""  # what to send instead

    @classmethod
    def of(cls, body: dict[str, Any]) -> _Parts:
        found = cls()
        for part in _content_parts(body):
            kind = part.get("type")
            if kind == "text":
                continue
            if kind == "image_url":
                found.images += 1
            elif kind == "input_audio":
                found.audio = True
            elif kind == "file":
                data = part.get("file")
                url = data.get("file_data") if isinstance(data, dict) else None
                if not (isinstance(url, str) and url.startswith("data:")):
                    found.uncounted(
                        "a file by URL, whose size cannot be known before it is sent",
                        "Send it as a data: URL (base64), so that its size is counted",
                    )
            elif kind == "video_url":
                found.uncounted(
                    "a video, whose tokens follow its length, not its size",
                    "Choose a model the list gives a context length for",
                )
            else:  # a part of a kind not counted here
                found.uncounted(f"a {kind} part, whose tokens are not counted here", "Leave it out")
        return found

    def uncounted(self, what: str, instead: str) -> None:
        if not self.unbounded:
            self.unbounded, self.instead = what, instead


def _content_parts(body: dict[str, Any]) -> Iterator[dict[str, Any]]:
    messages = body.get("messages")
    for message in messages if isinstance(messages, list) else []:
        content = message.get("content") if isinstance(message, dict) else None
        for part in content if isinstance(content, list) else []:
            if isinstance(part, dict):
                yield part


def _web_usd(body: dict[str, Any], prices: Prices) -> float:
    """Web search the call asks for: a model's own (`web_search_options`), at its listed price
    per search; the web plugin (`plugins: [{"id": "web"}]`, or an `:online` model), at its fee
    per result."""
    usd = prices.web_search if "web_search_options" in body else 0.0
    plugins = body.get("plugins")
    listed = plugins if isinstance(plugins, list) else []
    web = [plugin for plugin in listed if isinstance(plugin, dict) and plugin.get("id") == "web"]
    if web or any(model.endswith(":online") for model in model_chain(body)):
        results = web[0].get("max_results") if web else None
        count = results if isinstance(results, int) and results > 0 else _WEB_RESULTS
        usd += prices.web_search + count * _WEB_RESULT_USD
    return usd
