"""naive_llm_compare: one question to several models at once, the answers side by side with their
cost, a judge's synthesis, caps that admit the set whole or refuse it unsent, progress per model,
and a cancel that closes every upstream connection."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.types import CallToolResult

from naive_mcp.sandbox import RunningSandbox, SandboxConfig, serve_in_thread
from naive_mcp.sandbox.ledger import RequestRecord
from naive_mcp.server import create_server
from tests.conftest import make_settings
from tests.helpers import text_of, usage_of

pytestmark = pytest.mark.anyio

WAIT = 60  # generous, for a busy machine
# The sandbox bills usage.cost times 1.05, at $0.50 a credit.
SANDBOX_CREDITS_PER_USD = 2.1


def chats(sandbox: RunningSandbox, api_key: str) -> list[RequestRecord]:
    return [r for r in sandbox.sandbox.ledger.requests(api_key) if r.path.endswith("/chat/completions")]


def structured(result: CallToolResult) -> dict[str, Any]:
    assert not result.is_error, text_of(result)
    assert result.structured_content is not None
    return result.structured_content


async def test_the_answers_come_side_by_side_each_with_its_model_tokens_cost_and_latency(
    client: Client, sandbox: RunningSandbox, api_key: str
) -> None:
    arguments = {"prompt": "Why is the sky blue?", "max_tokens": 200, "temperature": 0.3}
    models = ["openai/gpt-5.2", "google/gemini-2.5-flash"]

    result = await client.call_tool("naive_llm_compare", {**arguments, "models": models})
    chat = await client.call_tool("naive_llm_chat", {**arguments, "model": models[0]})

    data = structured(result)
    answers = data["answers"]
    assert [answer["model_asked"] for answer in answers] == models
    for answer, model in zip(answers, models, strict=True):
        assert answer["model"] == model
        assert answer["text"] == f"Sandbox reply from {model}: Why is the sky blue?"
        assert answer["finish_reason"] == "stop"
        assert answer["prompt_tokens"] > 0 and answer["completion_tokens"] > 0
        assert answer["cost"] > 0 and answer["credits"] > 0 and answer["latency_ms"] >= 0
        assert answer["id"].startswith("gen-")
        assert "error" not in answer
    totals = data["totals"]
    assert (totals["answered"], totals["failed"]) == (2, 0)
    assert totals["cost"] == pytest.approx(sum(answer["cost"] for answer in answers))
    assert totals["credits"] == pytest.approx(sum(answer["credits"] for answer in answers))
    assert totals["completion_tokens"] == sum(answer["completion_tokens"] for answer in answers)
    assert totals["credits_remaining"] < 100
    # Each answer numbered and labelled with its model, then one summary line.
    assert len(result.content) == 3
    assert text_of(result, 0).startswith("[1] openai/gpt-5.2 · finish stop · tokens ")
    assert text_of(result, 0).endswith("\nSandbox reply from openai/gpt-5.2: Why is the sky blue?")
    assert text_of(result, 1).startswith("[2] google/gemini-2.5-flash · ")
    assert text_of(result, 2).startswith("[2 of 2 models answered · tokens ")
    # Each model got the very body llm.chat sends it.
    first, second, by_chat = (record.body for record in chats(sandbox, api_key))
    assert {first["model"], second["model"]} == set(models)
    member = first if first["model"] == models[0] else second
    assert member == by_chat
    assert not chat.is_error


async def test_a_failing_model_gives_its_error_in_its_entry_and_the_others_still_answer(
    client: Client,
) -> None:
    result = await client.call_tool(
        "naive_llm_compare", {"prompt": "hi", "models": ["openai/gpt-5.2", "sandbox/fail-provider-error"]}
    )
    alone = await client.call_tool("naive_llm_chat", {"prompt": "hi", "model": "sandbox/fail-provider-error"})

    data = structured(result)
    answered, failed = data["answers"]
    assert answered["text"].startswith("Sandbox reply from openai/gpt-5.2")
    assert failed["error_kind"] == "provider_error"
    assert failed["error"] == text_of(alone), "the same text llm.chat gives"
    assert failed["error"].startswith("provider_error (HTTP 502): ")
    assert "text" not in failed and "cost" not in failed
    assert (data["totals"]["answered"], data["totals"]["failed"]) == (1, 1)
    assert text_of(result, 1) == f"[2] sandbox/fail-provider-error failed:\n{failed['error']}"
    assert text_of(result, -1).startswith("[1 of 2 models answered")


async def test_the_call_is_an_error_only_when_every_model_failed(
    client: Client, sandbox: RunningSandbox, api_key: str
) -> None:
    result = await client.call_tool(
        "naive_llm_compare",
        {"prompt": "hi", "models": ["sandbox/fail-provider-error", "sandbox/fail-rate-limited"]},
    )

    assert result.is_error
    text = text_of(result)
    assert text.startswith("all_models_failed: every model failed")
    assert "[1] sandbox/fail-provider-error: provider_error (HTTP 502)" in text
    assert "[2] sandbox/fail-rate-limited: rate_limited (HTTP 429)" in text
    assert "Retry after 7 s" in text
    assert len(chats(sandbox, api_key)) == 2
    usage = await usage_of(client)
    assert usage["by_outcome"]["failed"]["calls"] == 2


async def test_a_judge_writes_a_synthesis_that_cites_the_numbered_answers(
    client: Client, sandbox: RunningSandbox, api_key: str
) -> None:
    models = ["openai/gpt-5.2", "google/gemini-2.5-flash"]
    judge = "anthropic/claude-sonnet-4.6"

    result = await client.call_tool(
        "naive_llm_compare", {"prompt": "Tea or coffee?", "models": models, "judge": judge}
    )

    data = structured(result)
    synthesis = data["synthesis"]
    assert synthesis["model"] == judge
    assert "[1]" in synthesis["text"] and "[2]" in synthesis["text"]
    assert synthesis["cost"] > 0 and synthesis["credits"] > 0
    answers = data["answers"]
    # The judge is asked last, with the question and each numbered answer.
    *members, judged = chats(sandbox, api_key)
    assert {record.body["model"] for record in members} == set(models)
    assert judged.body["model"] == judge
    asked = judged.body["messages"][-1]["content"]
    assert "Tea or coffee?" in asked
    for number, answer in enumerate(answers, 1):
        assert f"[{number}] ({answer['model']}):\n{answer['text']}" in asked
    assert "[1], [2]" in judged.body["messages"][0]["content"], "told to cite by number"
    totals = data["totals"]
    assert totals["credits"] == pytest.approx(sum(a["credits"] for a in answers) + synthesis["credits"])
    assert text_of(result, 2).startswith(f"Synthesis by {judge}:\n")
    assert "with a synthesis" in text_of(result, -1)


async def test_a_judge_that_fails_gives_its_error_and_the_answers_stand(client: Client) -> None:
    result = await client.call_tool(
        "naive_llm_compare",
        {
            "prompt": "hi",
            "models": ["openai/gpt-5.2", "google/gemini-2.5-flash"],
            "judge": "sandbox/fail-overloaded",
        },
    )

    data = structured(result)
    assert data["totals"]["answered"] == 2
    assert data["synthesis"]["error_kind"] == "overloaded"
    assert "text" not in data["synthesis"]
    assert text_of(result, 2).startswith(
        "Synthesis by sandbox/fail-overloaded failed:\noverloaded (HTTP 529)"
    )


async def test_a_cap_that_fits_only_part_of_the_set_refuses_it_whole_naming_the_numbers(
    sandbox: RunningSandbox, api_key: str
) -> None:
    # At max_tokens 1000 and 2.1 credits per USD: gpt-5.2 and gemini-2.5-pro up to 0.021 credits
    # of output each ($10 per million output tokens), claude-sonnet-4.6 0.0315 ($15).
    settings = make_settings(
        sandbox, api_key, max_total_credits=0.05, credits_per_usd=SANDBOX_CREDITS_PER_USD
    )
    models = ["openai/gpt-5.2", "google/gemini-2.5-pro", "anthropic/claude-sonnet-4.6"]
    async with Client(create_server(settings)) as client:
        result = await client.call_tool(
            "naive_llm_compare", {"prompt": "hi", "models": models, "max_tokens": 1000}
        )
        usage = await usage_of(client)

    assert result.is_error
    text = text_of(result)
    # The input adds a little to each: 0.0743 credits together.
    assert text.startswith("spending_cap: these 3 calls could cost up to 0.074")
    assert "credits together (openai/gpt-5.2 0.021" in text
    assert "anthropic/claude-sonnet-4.6 0.031" in text
    assert "more than NAIVE_MAX_TOTAL_CREDITS (0.05; 0.05 left, 0 held by calls in flight) allows" in text
    assert "A set is admitted whole or not at all." in text
    assert "These 2 fit together now: openai/gpt-5.2, google/gemini-2.5-pro (up to 0.042" in text
    assert text.endswith("Nothing was sent upstream and no credits were spent.")
    assert chats(sandbox, api_key) == [], "the sandbox received no call"
    assert sandbox.sandbox.ledger.balance(api_key) == 100.0, "no credits spent"
    assert usage["by_outcome"] == {"refused": usage["by_outcome"]["refused"]}
    assert usage["by_outcome"]["refused"]["calls"] == 3, "a ledger row for each model"


async def test_a_per_call_cap_holds_each_model_of_a_set_alone_and_allowed_models_every_one(
    sandbox: RunningSandbox, api_key: str
) -> None:
    settings = make_settings(
        sandbox,
        api_key,
        max_call_credits=0.025,
        credits_per_usd=SANDBOX_CREDITS_PER_USD,
        allowed_models=["openai/*", "anthropic/*"],
    )
    async with Client(create_server(settings)) as client:
        dear = await client.call_tool(
            "naive_llm_compare",
            {"prompt": "hi", "models": ["openai/gpt-5.2", "anthropic/claude-sonnet-4.6"], "max_tokens": 1000},
        )
        barred = await client.call_tool(
            "naive_llm_compare", {"prompt": "hi", "models": ["openai/gpt-5.2", "google/gemini-2.5-pro"]}
        )

    assert dear.is_error and barred.is_error
    assert text_of(dear).startswith(
        "spending_cap: of this set, the call to 'anthropic/claude-sonnet-4.6' could cost up to 0.031"
    )
    assert "more than NAIVE_MAX_CALL_CREDITS (0.025 credits per call) allows" in text_of(dear)
    assert text_of(barred).startswith("model_not_allowed: model 'google/gemini-2.5-pro' is not allowed")
    assert chats(sandbox, api_key) == []


async def test_a_set_that_fits_is_admitted_and_each_call_is_settled_on_its_own(
    sandbox: RunningSandbox, api_key: str
) -> None:
    settings = make_settings(
        sandbox, api_key, max_total_credits=0.05, credits_per_usd=SANDBOX_CREDITS_PER_USD
    )
    models = ["openai/gpt-5.2", "google/gemini-2.5-pro"]
    async with Client(create_server(settings)) as client:
        first = await client.call_tool(
            "naive_llm_compare", {"prompt": "hi", "models": models, "max_tokens": 1000}
        )
        # What they held is given back as they settle: the same set fits again.
        again = await client.call_tool(
            "naive_llm_compare", {"prompt": "hi", "models": models, "max_tokens": 1000}
        )
        # Without max_tokens each is bounded to fit, and says so.
        unasked = await client.call_tool("naive_llm_compare", {"prompt": "hi", "models": models})

    assert structured(first)["totals"]["answered"] == 2
    assert structured(again)["totals"]["answered"] == 2
    notes = structured(unasked)["notes"]
    assert [note.split(":", 1)[0] for note in notes] == models
    assert all("max_tokens set to" in note for note in notes)
    sent = [record.body["max_tokens"] for record in chats(sandbox, api_key)[-2:]]
    assert all(isinstance(tokens, int) and tokens > 0 for tokens in sent)


# --- progress and cancellation ------------------------------------------------------------------

# A slow answer lasts about 2.5 s (125 chunks, 20 ms apart).
PACED = SandboxConfig(slow_chunk_delay=0.02, slow_words=370)


@pytest.fixture(scope="module")
def paced() -> Iterator[RunningSandbox]:
    with serve_in_thread(PACED) as running:
        yield running


async def test_progress_says_how_each_model_is_doing_and_a_cancel_stops_every_upstream_call(
    paced: RunningSandbox, api_key: str, tmp_path: Path
) -> None:
    store = tmp_path / "store.sqlite3"
    settings = make_settings(paced, api_key, store=str(store), progress_interval=0.01)
    models = ["sandbox/slow", "sandbox/fail-hang"]
    heard: list[str] = []
    streaming = anyio.Event()

    async def progress(value: float, total: float | None, message: str | None) -> None:
        heard.append(message or "")
        if "[1] sandbox/slow: " in (message or "") and " tokens" in (message or ""):
            streaming.set()

    async with Client(create_server(settings)) as client:
        async with anyio.create_task_group() as group:

            async def call() -> None:
                await client.call_tool(
                    "naive_llm_compare", {"prompt": "long", "models": models}, progress_callback=progress
                )

            group.start_soon(call)
            with anyio.fail_after(WAIT):
                await streaming.wait()
            group.cancel_scope.cancel()
        records = chats(paced, api_key)
        for record in records:
            ended = await anyio.to_thread.run_sync(record.stream_ended.wait, WAIT)
            assert ended, f"the upstream call to {record.body['model']} never ended"
        after = await client.call_tool(
            "naive_llm_compare", {"prompt": "next", "models": ["openai/gpt-5.2", "openai/gpt-5-mini"]}
        )
    assert not after.is_error, "the server answers the next call"

    assert sorted(record.body["model"] for record in records) == sorted(models)
    assert all(record.disconnected_at is not None for record in records), "every connection was closed"
    assert any("[2] sandbox/fail-hang: waiting" in message for message in heard)
    with sqlite3.connect(store) as db:
        assert db.execute("SELECT count(*) FROM holds").fetchone() == (0,), "no hold is left"
        outcomes = dict(
            db.execute("SELECT model_asked, outcome FROM ledger WHERE model_asked LIKE 'sandbox/%'")
        )
    assert outcomes == {"sandbox/slow": "cancelled", "sandbox/fail-hang": "cancelled"}


# --- bad values ---------------------------------------------------------------------------------

MODELS = ["openai/gpt-5.2", "google/gemini-2.5-flash"]


@pytest.mark.parametrize(
    ("arguments", "field", "message"),
    [
        ({"prompt": "hi", "models": ["openai/gpt-5.2"]}, "models", "should have at least 2 items, not 1"),
        (
            {"prompt": "hi", "models": [f"openai/m{i}" for i in range(9)]},
            "models",
            "should have at most 8 items",
        ),
        (
            {"prompt": "hi", "models": ["openai/gpt-5.2", "openai/gpt-5.2"]},
            "models",
            "gives model 'openai/gpt-5.2' more than once: give each once",
        ),
        (
            {"prompt": "hi", "models": MODELS, "judge": "gpt"},
            "judge",
            "should be a provider-prefixed model id",
        ),
        (
            {"prompt": "hi", "models": ["openai/gpt-5.2", "not a model"]},
            "models[1]",
            "should be a provider-prefixed",
        ),
        (
            {"prompt": "hi", "messages": [{"role": "user", "content": "hi"}], "models": MODELS},
            None,
            "give exactly one of `messages` or `prompt`",
        ),
        ({"models": MODELS}, None, "give exactly one of `messages` or `prompt`"),
        ({"prompt": "hi"}, "models", "required"),
        (
            {"prompt": "hi", "models": MODELS, "max_tokens": 0},
            "max_tokens",
            "should be greater than or equal to 1",
        ),
        (
            {"prompt": "hi", "models": MODELS, "temperature": 3},
            "temperature",
            "should be less than or equal to 2",
        ),
        (
            {"prompt": "hi", "models": MODELS, "reasoning": {"effort": "huge"}},
            "reasoning.effort",
            "should be",
        ),
        ({"prompt": "hi", "models": MODELS, "tools": []}, "tools", "unknown argument; allowed: messages"),
        (
            {"prompt": "hi", "models": MODELS, "extra": {"model": "x/y"}},
            "extra",
            "'model' is an argument of naive_llm_chat, where it is checked; this tool does not take it",
        ),
        (
            {"prompt": "hi", "models": MODELS, "extra": {"max_tokens": 5}},
            "extra",
            "'max_tokens' is an argument of its own: give it as `max_tokens`",
        ),
        (
            {"prompt": "hi", "models": MODELS, "extra": {"stream": False}},
            "extra",
            "'stream' is the server's to set",
        ),
        ({"prompt": "hi", "models": MODELS, "user_id": "a b"}, "user_id", "should be a Naive id"),
        (
            {"messages": [{"role": "tool", "content": "x"}], "models": MODELS},
            "messages[0]",
            "a tool message needs tool_call_id",
        ),
    ],
)
async def test_a_bad_value_is_refused_naming_the_field_and_nothing_is_sent(
    client: Client,
    sandbox: RunningSandbox,
    api_key: str,
    arguments: dict[str, Any],
    field: str | None,
    message: str,
) -> None:
    result = await client.call_tool("naive_llm_compare", arguments)
    generic = await client.call_tool(
        "naive_run_primitive", {"primitive": "llm", "method": "compare", "arguments": arguments}
    )

    for refused, tool, path in (
        (result, "naive_llm_compare", field),
        (generic, "naive_run_primitive (llm.compare)", f"arguments.{field}"),
    ):
        assert refused.is_error
        text = text_of(refused)
        assert text.startswith(f"Invalid arguments for {tool}:\n- "), text
        assert message in text, text
        if field is not None:
            assert f"- {path}: " in text, text
        assert "Nothing was sent upstream and no credits were spent." in text
    assert sandbox.sandbox.ledger.requests(api_key) == [], "no upstream call"


async def test_run_primitive_compares_as_the_typed_tool_does(client: Client) -> None:
    arguments = {"prompt": "Same?", "models": MODELS, "max_tokens": 50}

    typed = await client.call_tool("naive_llm_compare", arguments)
    generic = await client.call_tool(
        "naive_run_primitive", {"primitive": "llm", "method": "compare", "arguments": arguments}
    )

    def comparable(result: CallToolResult) -> list[dict[str, Any]]:
        return [
            {k: v for k, v in answer.items() if k not in ("id", "latency_ms", "credits", "thread_id")}
            for answer in structured(result)["answers"]
        ]

    assert comparable(generic) == comparable(typed)
    assert [text_of(generic, 0).split("\n", 1)[1]] == [text_of(typed, 0).split("\n", 1)[1]]


async def test_messages_and_a_system_prompt_reach_every_model_and_the_judge(
    client: Client, sandbox: RunningSandbox, api_key: str
) -> None:
    messages = [
        {"role": "user", "content": "Name a colour."},
        {"role": "assistant", "content": "Blue."},
        {"role": "user", "content": [{"type": "text", "text": "Another?"}]},
    ]
    result = await client.call_tool(
        "naive_llm_compare",
        {"messages": messages, "system": "Be brief.", "models": MODELS, "judge": "openai/gpt-5-mini"},
    )

    assert structured(result)["totals"]["answered"] == 2
    *members, judged = chats(sandbox, api_key)
    for record in members:
        assert record.body["messages"] == [{"role": "system", "content": "Be brief."}, *messages]
    asked = judged.body["messages"][-1]["content"]
    assert "system: Be brief.\nuser: Name a colour.\nassistant: Blue.\nuser: Another?" in asked
