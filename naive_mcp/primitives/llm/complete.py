"""`llm.complete`: one text completion (`POST /completions`), OpenRouter's and its proxy's.

The same arguments as chat but the conversation (a `prompt` to continue, as the model's raw
text), the same guard, streaming, progress, cancel, ledger and result; only the route and the
chunks differ (`NaiveClient.generate`). Naive's typed routes have no such route: a call there is
refused before anything is sent, naming the backends that have it. Run through
`naive_run_primitive(primitive="llm", method="complete", …)`: every agent reads `tools/list`, so
it has no typed tool of its own.
"""

from __future__ import annotations

from pydantic import Field

from naive_mcp.errors import NaiveError
from naive_mcp.primitives.llm.chat import ChatResult, GenerationArguments, generate
from naive_mcp.primitives.llm.fields import spending_annotations
from naive_mcp.registry import CallContext, Method
from naive_mcp.validation import Arguments


class _Prompt(Arguments):
    prompt: str = Field(min_length=1, description="the text the model continues, sent as is")


class CompleteArguments(GenerationArguments, _Prompt):
    """The prompt first (fields come in reverse MRO order), then what chat takes too."""


async def complete(call: CallContext, arguments: CompleteArguments) -> ChatResult:
    services = call.services
    backend = services.client.backend
    if not backend.has("completions"):
        raise NaiveError(
            f"text completions (POST /completions) are not on {backend.name} "
            f"({services.settings.shown_base_url}), so no call was sent.",
            kind="not_on_this_backend",
        )
    caller = call.caller(None, None)  # no backend with text completions has Naive's tenants
    body = arguments.body_for(services.settings.default_model, {"prompt"}, prompt=arguments.prompt)
    return await generate(call, caller, "completions", body, arguments)


COMPLETE = Method(
    primitive="llm",
    name="complete",
    description=(
        "A text completion: the model continues `prompt` as raw text (no chat roles). Same routing, "
        "sampling, fallbacks, caps and result as llm.chat. On Naive's proxy and OpenRouter-style "
        "backends only. Costs credits (per token)."
    ),
    arguments=CompleteArguments,
    result=ChatResult,
    annotations=spending_annotations("Complete a text (Naive)"),
    handler=complete,
    typed_tool=False,
)
