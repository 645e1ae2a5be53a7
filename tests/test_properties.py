"""Bad input at scale: thousands of generated argument sets thrown at every tool through the MCP
client. Zero crashes; every refusal a clear argument error; no upstream call for invalid input."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from mcp import Client
from mcp.types import TextContent

from naive_mcp.primitives import REGISTRY
from naive_mcp.sandbox import RunningSandbox
from naive_mcp.tools import RUN_TOOL, SEARCH_TOOL

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

EXAMPLES_PER_TOOL = 400
MODELS = [
    "anthropic/claude-sonnet-4.6",
    "openai/gpt-5-mini",
    "sandbox/fail-rate-limited",
    "no/such-model",
    "bad",
]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
# Values that are often right, so that the generated calls reach past the first check.
plausible = (
    st.sampled_from(MODELS)
    | st.sampled_from(["hi", "", "usr_1", "gen-sandbox-000001", "price", "auto", "none", "llm", "chat"])
    | st.integers(min_value=-3, max_value=300)
    | st.floats(min_value=-3, max_value=3, allow_nan=False)
    | st.just([{"role": "user", "content": "hi"}])
)


def arguments_for(names: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    """Real argument names with plausible or arbitrary values, and sometimes a stray key."""
    known = st.dictionaries(st.sampled_from(names), plausible | json_values, max_size=5)
    stray = st.dictionaries(st.text(min_size=1, max_size=10), json_values, max_size=2)
    return st.builds(lambda a, b: {**b, **a}, known, st.just({}) | stray)


TOOL_ARGUMENTS: dict[str, list[str]] = {
    method.tool_name: list(method.input_schema["properties"])
    for method in REGISTRY.methods
    if method.typed_tool
}
TOOL_ARGUMENTS[SEARCH_TOOL] = ["query"]
TOOL_ARGUMENTS[RUN_TOOL] = ["primitive", "method", "arguments"]

# What a refusal of the arguments starts with; nothing else may be said without an upstream call.
ARGUMENT_ERRORS = ("Invalid arguments for ", "Unknown Naive primitive method: ", "no_model: ")
# What the model search refuses on reading the model list (free, and often cached): a filter the
# list cannot answer, a parameter no model lists. Nothing but that list may have been asked for.
LISTING_ERRORS = ("unsupported_filter: ", "invalid_arguments: no model lists the parameter ")
CRASH = "Error executing tool"


calls = st.sampled_from(sorted(TOOL_ARGUMENTS)).flatmap(
    lambda tool: arguments_for(TOOL_ARGUMENTS[tool]).map(lambda arguments: (tool, arguments))
)


@settings(
    max_examples=EXAMPLES_PER_TOOL * len(TOOL_ARGUMENTS),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(call=calls)
async def test_generated_arguments_never_crash_and_invalid_ones_never_reach_the_upstream(
    client: Client, sandbox: RunningSandbox, api_key: str, call: tuple[str, dict[str, Any]]
) -> None:
    tool, arguments = call
    event(tool)
    ledger = sandbox.sandbox.ledger
    ledger.set_balance(api_key, 1e9)  # valid examples spend; the test is about everything else
    before = len(ledger.requests(api_key))

    result = await client.call_tool(tool, arguments)

    block = result.content[0]
    assert isinstance(block, TextContent)
    text = block.text
    assert CRASH not in text, (arguments, text)
    upstream_calls = len(ledger.requests(api_key)) - before
    if result.is_error and text.startswith(ARGUMENT_ERRORS):
        event("refused before any upstream call")
        assert upstream_calls == 0, (arguments, text)
        assert "\n- " in text or not text.startswith("Invalid"), text  # each bad field on its own line
    elif result.is_error and text.startswith(LISTING_ERRORS):
        event("refused on the model list")
        asked = [record.path for record in ledger.requests(api_key)[before:]]
        assert all(path.endswith("/models") for path in asked), (arguments, text)
    elif result.is_error:
        event("an upstream error, explained")
        assert upstream_calls >= 1 and "(HTTP " in text.split("\n")[0], (arguments, text)
    else:
        event("answered")
