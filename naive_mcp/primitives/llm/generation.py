"""`llm.generation`: what an earlier completion cost, and how it ran."""

from __future__ import annotations

from mcp_types import ToolAnnotations
from pydantic import Field

from naive_mcp.caller import TenantId
from naive_mcp.errors import ArgumentError
from naive_mcp.primitives.llm.fields import format_usd
from naive_mcp.registry import CallContext, Method, MethodResult
from naive_mcp.validation import Arguments, matching
from naive_mcp.wire import Generation


class GenerationArguments(Arguments):
    id: str = matching(
        r"^[\w.:\-]+$",
        "a generation id from a chat result, such as gen-abc123",
        min_length=1,
        max_length=200,
        description="generation id from a chat result (gen-…)",
    )
    user_id: TenantId | None = None
    project_id: TenantId | None = None


class GenerationResult(MethodResult):
    id: str
    model: str | None = None
    provider: str | None = None
    total_cost: float | None = Field(default=None, description="USD")
    tokens_prompt: int | None = None
    tokens_completion: int | None = None
    reasoning_tokens: int | None = None
    cached_tokens: int | None = None
    latency_ms: float | None = Field(default=None, description="time to first token")
    generation_time_ms: float | None = None
    finish_reason: str | None = None
    streamed: bool | None = None
    cancelled: bool | None = None
    created_at: str | None = None

    @classmethod
    def from_generation(cls, requested_id: str, generation: Generation) -> GenerationResult:
        return cls(
            id=generation.id or requested_id,
            model=generation.model,
            provider=generation.provider_name,
            total_cost=generation.total_cost,
            tokens_prompt=generation.tokens_prompt,
            tokens_completion=generation.tokens_completion,
            reasoning_tokens=generation.native_tokens_reasoning,
            cached_tokens=generation.native_tokens_cached,
            latency_ms=generation.latency,
            generation_time_ms=generation.generation_time,
            finish_reason=generation.finish_reason,
            streamed=generation.streamed,
            cancelled=generation.cancelled,
            created_at=generation.created_at,
        )

    def content(self) -> list[str]:
        parts = [
            f"{self.id}: {self.model or 'unknown model'}" + (f" via {self.provider}" if self.provider else "")
        ]
        parts.append(f"cost {format_usd(self.total_cost)}")
        if self.tokens_prompt is not None or self.tokens_completion is not None:
            parts.append(f"tokens {self.tokens_prompt or 0} in / {self.tokens_completion or 0} out")
        if self.latency_ms is not None:
            parts.append(f"latency {self.latency_ms:.0f} ms")
        if self.generation_time_ms is not None:
            parts.append(f"generation {self.generation_time_ms:.0f} ms")
        if self.finish_reason:
            parts.append(f"finish {self.finish_reason}")
        if self.cancelled:
            parts.append("cancelled")
        return [" · ".join(parts)]


async def generation(call: CallContext, arguments: GenerationArguments) -> GenerationResult:
    caller = call.caller(arguments.user_id, arguments.project_id)
    # A configured token's calls use the server key, as every tenant's do, so the upstream would
    # show any of them: the token reads the stats of the calls it could have made itself only,
    # as in naive://usage.
    services = call.services
    if call.grant.shares_the_server_key and not await services.guard.made_within(
        arguments.id, services.usage_scope(call.grant)
    ):
        raise ArgumentError(
            "Invalid arguments:\n- id: no call this connection's token could have made through this "
            "server got this generation id; a token reads the stats of its own tenant's calls only"
        )
    just_made = await services.guard.made_lately(arguments.id)
    stats = await services.client.generation(arguments.id, caller, just_made=just_made)
    return GenerationResult.from_generation(arguments.id, stats)


GENERATION = Method(
    primitive="llm",
    name="generation",
    description=(
        "USD cost, tokens, latency and finish reason of an earlier completion, by the id its result "
        "gave (gen-…). Free."
    ),
    arguments=GenerationArguments,
    result=GenerationResult,
    annotations=ToolAnnotations(
        title="Cost of an earlier call (Naive)",
        read_only_hint=True,  # destructiveHint means nothing then (the MCP spec): left out
        idempotent_hint=True,
        open_world_hint=False,
    ),
    handler=generation,
)
