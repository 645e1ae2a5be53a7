"""Spending caps refuse before any upstream call; reservations hold under concurrency; the usage
ledger says what was spent."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.types import CallToolResult, TextResourceContents

from naive_mcp.caller import Caller
from naive_mcp.errors import IncompleteAnswer, UpstreamUnreachable
from naive_mcp.estimate import SpendingRefused
from naive_mcp.guard import Spend, SpendGuard
from naive_mcp.sandbox import RunningSandbox, SandboxConfig, serve_in_thread
from naive_mcp.server import create_server
from naive_mcp.services import Services
from naive_mcp.wire import ChatCompletion
from tests.conftest import make_settings
from tests.helpers import text_of

pytestmark = pytest.mark.anyio

# The sandbox bills usage.cost times 1.05, at $0.50 a credit.
SANDBOX_CREDITS_PER_USD = 2.1


def refused(result: CallToolResult, kind: str) -> str:
    assert result.is_error
    text = text_of(result)
    assert text.startswith(f"{kind}: ")
    assert text.endswith("Nothing was sent upstream and no credits were spent.")
    return text


async def test_only_allowed_models_are_called(sandbox: RunningSandbox, api_key: str) -> None:
    settings = make_settings(sandbox, api_key, allowed_models=["anthropic/*", "*:free"])
    async with Client(create_server(settings)) as client:
        allowed = await client.call_tool(
            "naive_llm_chat", {"prompt": "hi", "model": "anthropic/claude-haiku-4.5"}
        )
        free = await client.call_tool(
            "naive_llm_chat", {"prompt": "hi", "model": "meta-llama/llama-3.3-70b-instruct:free"}
        )
        other = await client.call_tool("naive_llm_chat", {"prompt": "hi", "model": "openai/gpt-5.2"})
        in_chain = await client.call_tool(
            "naive_llm_chat", {"prompt": "hi", "models": ["anthropic/claude-haiku-4.5", "openai/gpt-5.2"]}
        )

    assert not allowed.is_error and not free.is_error
    for result in (other, in_chain):
        text = refused(result, "model_not_allowed")
        assert (
            "'openai/gpt-5.2' is not allowed on this server (NAIVE_ALLOWED_MODELS: anthropic/*, *:free)"
            in text
        )
    chats = [r for r in sandbox.sandbox.ledger.requests(api_key) if r.path.endswith("/chat/completions")]
    assert len(chats) == 2


async def test_variants_of_an_allowed_model_are_allowed_and_priced_under_a_cap_as_their_base(
    sandbox: RunningSandbox, api_key: str
) -> None:
    settings = make_settings(
        sandbox,
        api_key,
        allowed_models=["anthropic/claude-sonnet-4.6", "openai/*"],
        max_call_credits=0.05,
        credits_per_usd=SANDBOX_CREDITS_PER_USD,
    )
    sonnet = "anthropic/claude-sonnet-4.6"
    async with Client(create_server(settings)) as client:
        variants = {
            variant: await client.call_tool(
                "naive_llm_chat", {"prompt": "hi", "model": f"{sonnet}:{variant}"}
            )
            for variant in ("nitro", "floor", "exacto", "online")
        }
        base = await client.call_tool("naive_llm_chat", {"prompt": "hi", "model": sonnet})
        # Allowed, as a variant of an allowed model, but not listed with its own prices.
        thinking = await client.call_tool("naive_llm_chat", {"prompt": "hi", "model": f"{sonnet}:thinking"})
        other = await client.call_tool(
            "naive_llm_chat", {"prompt": "hi", "model": "anthropic/claude-haiku-4.5:nitro"}
        )
        lookalike = await client.call_tool(
            "naive_llm_chat", {"prompt": "hi", "model": "anthropic/claude-sonnet-4.6-beta:nitro"}
        )

    def fitted(result: CallToolResult) -> int:
        assert not result.is_error, text_of(result)
        assert result.structured_content is not None
        (note,) = result.structured_content["notes"]
        return int(note.removeprefix("max_tokens set to ").split()[0])

    # The same prices as the base model: the same max_tokens fits the cap (give or take the
    # token the longer model id adds to the input); :online pays the web plugin on top.
    for variant in ("nitro", "floor", "exacto"):
        assert abs(fitted(variants[variant]) - fitted(base)) <= 1, variant
    assert fitted(variants["online"]) < fitted(base)
    assert "the cost of 'anthropic/claude-sonnet-4.6:thinking' cannot be estimated" in refused(
        thinking, "spending_cap"
    )
    for result, model in (
        (other, "anthropic/claude-haiku-4.5:nitro"),
        (lookalike, "anthropic/claude-sonnet-4.6-beta:nitro"),
    ):
        assert f"model {model!r} is not allowed on this server" in refused(result, "model_not_allowed")
    chats = [r for r in sandbox.sandbox.ledger.requests(api_key) if r.path.endswith("/chat/completions")]
    assert len(chats) == 5


async def test_the_per_call_cap_uses_prices_and_max_tokens_and_fits_max_tokens_when_none_is_given(
    sandbox: RunningSandbox, api_key: str
) -> None:
    settings = make_settings(sandbox, api_key, max_call_credits=0.01, credits_per_usd=SANDBOX_CREDITS_PER_USD)
    async with Client(create_server(settings)) as client:
        too_big = await client.call_tool(
            "naive_llm_chat", {"prompt": "hi", "model": "openai/gpt-5.2", "max_tokens": 1000}
        )
        fitted = await client.call_tool("naive_llm_chat", {"prompt": "hi", "model": "openai/gpt-5.2"})

    text = refused(too_big, "spending_cap")
    # 1000 output tokens at $10 per million = $0.01 = 0.021 credits, over the 0.01 cap.
    assert "could cost up to 0.021" in text
    assert "more than NAIVE_MAX_CALL_CREDITS (0.01 credits per call) allows" in text
    assert "ask the operator to raise NAIVE_MAX_CALL_CREDITS" in text
    assert not fitted.is_error
    data = fitted.structured_content
    assert data is not None
    (note,) = data["notes"]
    # 0.01 credits at $10 per million output tokens and 2.1 credits per USD, less the request: 469.
    assert note.startswith("max_tokens set to 469") and note.endswith(
        "to fit NAIVE_MAX_CALL_CREDITS (0.01 credits per call)"
    )
    assert note in text_of(fitted, -1)
    chat_bodies = [
        r.body for r in sandbox.sandbox.ledger.requests(api_key) if r.path.endswith("/chat/completions")
    ]
    assert [body["max_tokens"] for body in chat_bodies] == [469]


async def test_a_model_without_a_price_is_refused_under_a_cap(sandbox: RunningSandbox, api_key: str) -> None:
    settings = make_settings(sandbox, api_key, max_total_credits=1.0)
    async with Client(create_server(settings)) as client:
        result = await client.call_tool("naive_llm_chat", {"prompt": "hi", "model": "unlisted/model"})
    assert "the cost of 'unlisted/model' cannot be estimated" in refused(result, "spending_cap")


async def test_the_total_cap_holds_under_a_burst_of_parallel_calls(api_key: str) -> None:
    # Every call's worst case is 100 tokens at $0.4/M = 0.000084 credits; the cap fits 5 of them
    # at once, and more as the first settle for less than their worst case (the others wait).
    cap = 0.000084 * 5 + 0.00001
    with serve_in_thread(SandboxConfig(slow_chunk_delay=0.01, slow_words=20)) as slow:
        settings = make_settings(
            slow, api_key, max_total_credits=cap, credits_per_usd=SANDBOX_CREDITS_PER_USD
        )
        outcomes: list[CallToolResult] = []
        async with Client(create_server(settings)) as client:

            async def call() -> None:
                arguments = {"prompt": "go", "model": "sandbox/slow", "max_tokens": 100}
                outcomes.append(await client.call_tool("naive_llm_chat", arguments))

            async with anyio.create_task_group() as group:
                for _ in range(20):
                    group.start_soon(call)
            usage = await client.read_resource("naive://usage")

        answered = [o for o in outcomes if not o.is_error]
        turned_away = [o for o in outcomes if o.is_error]
        chats = [r for r in slow.sandbox.ledger.requests(api_key) if r.path.endswith("/chat/completions")]
    assert len(answered) >= 5, "the calls that fit are answered"
    assert all("NAIVE_MAX_TOTAL_CREDITS" in refused(o, "spending_cap") for o in turned_away)
    assert len(chats) == len(answered), "no refused call reached the upstream"
    spent = sum(o.structured_content["credits_used"] for o in answered if o.structured_content)
    assert spent <= cap
    content = usage.contents[0]
    assert isinstance(content, TextResourceContents)
    assert json.loads(content.text)["total"]["calls"] == len(answered)


async def test_the_tenant_cap_stops_one_tenant_not_another(sandbox: RunningSandbox, api_key: str) -> None:
    # A long prompt, echoed back: one call costs about 0.00043 credits and reserves about 0.0006.
    settings = make_settings(
        sandbox, api_key, max_tenant_credits=0.0008, credits_per_usd=SANDBOX_CREDITS_PER_USD
    )
    arguments: dict[str, Any] = {
        "prompt": "x" * 2000,
        "model": "mistralai/mistral-small-3.2",
        "max_tokens": 600,
    }
    async with Client(create_server(settings)) as client:
        alice = [
            await client.call_tool("naive_llm_chat", {**arguments, "user_id": "usr_alice"}) for _ in range(2)
        ]
        bob = await client.call_tool("naive_llm_chat", {**arguments, "user_id": "usr_bob"})
        usage = await client.read_resource("naive://usage")

    assert not alice[0].is_error and not bob.is_error
    assert "NAIVE_MAX_TENANT_CREDITS (0.0008 for usr_alice" in refused(alice[1], "spending_cap")
    content = usage.contents[0]
    assert isinstance(content, TextResourceContents)
    ledger = json.loads(content.text)
    assert {tenant: tally["calls"] for tenant, tally in ledger["by_tenant"].items()} == {
        "usr_alice": 1,
        "usr_bob": 1,
    }
    assert ledger["by_model"]["mistralai/mistral-small-3.2"]["calls"] == 2 == ledger["total"]["calls"]
    assert ledger["total"]["credits"] > 0 and ledger["total"]["prompt_tokens"] == 1000


async def test_chat_stops_at_the_credits_floor(sandbox: RunningSandbox, api_key: str) -> None:
    sandbox.sandbox.ledger.set_balance(api_key, 1.0)
    settings = make_settings(
        sandbox, api_key, min_credits_remaining=0.99999, credits_per_usd=SANDBOX_CREDITS_PER_USD
    )
    async with Client(create_server(settings)) as client:
        first = await client.call_tool("naive_llm_chat", {"prompt": "hi", "max_tokens": 50})
        second = await client.call_tool("naive_llm_chat", {"prompt": "hi", "max_tokens": 50})

    assert not first.is_error, "the balance is unknown until a response says it"
    assert "NAIVE_MIN_CREDITS_REMAINING (0.99999; balance 0.99" in refused(second, "spending_cap")


async def test_a_call_that_fails_upstream_gives_its_reservation_back(
    sandbox: RunningSandbox, api_key: str
) -> None:
    # The cap fits one call's worst case; a failed call must not keep holding it.
    settings = make_settings(
        sandbox, api_key, max_total_credits=0.0003, credits_per_usd=SANDBOX_CREDITS_PER_USD
    )
    async with Client(create_server(settings)) as client:
        failed = await client.call_tool(
            "naive_llm_chat", {"prompt": "hi", "model": "sandbox/fail-provider-error", "max_tokens": 10}
        )
        after = await client.call_tool(
            "naive_llm_chat", {"prompt": "hi", "model": "openai/gpt-5-mini", "max_tokens": 50}
        )
    assert failed.is_error and text_of(failed).startswith("provider_error")
    assert not after.is_error, text_of(after)


# --- the guard's arithmetic, on its own (a memory store, the sandbox's prices) -----------------

# openai/gpt-5.2 in the sandbox: $1.25 per million prompt tokens, $10 per million completion tokens.
MODEL = "openai/gpt-5.2"


@asynccontextmanager
async def guard_for(sandbox: RunningSandbox, api_key: str, **overrides: Any) -> AsyncIterator[SpendGuard]:
    services = Services.create(make_settings(sandbox, api_key, cap_wait=0, **overrides))
    async with services.running():
        yield services.guard


def completion(used: float | None, cost: float | None, remaining: float | None = None) -> ChatCompletion:
    return ChatCompletion.model_validate(
        {
            "choices": [{"message": {"content": "x"}, "finish_reason": "stop"}],
            "usage": {"cost": cost},
            "credits_used": used,
            "credits_remaining": remaining,
        }
    )


async def admitted(guard: SpendGuard, caller: Caller, **body: Any) -> Spend:
    return await guard.admit(
        caller, {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], **body}
    )


@pytest.mark.parametrize("odd", [0.0, float("nan"), -5.0, float("inf")])
async def test_odd_figures_from_the_upstream_never_lift_a_cap(
    sandbox: RunningSandbox, api_key: str, odd: float
) -> None:
    async with guard_for(sandbox, api_key, max_total_credits=1.0, credits_per_usd=25) as guard:
        caller = Caller(api_key=api_key)
        first = await admitted(guard, caller, max_tokens=1000)  # 1000 x $10/M x 25 = 0.25 credits worst
        first.answered(completion(used=odd, cost=0.02, remaining=odd))
        await guard.settle(first, caller)
        later: list[Spend] = []

        async def admit_until_refused() -> None:
            for _ in range(10):
                later.append(await admitted(guard, caller, max_tokens=1000))

        with pytest.raises(SpendingRefused):
            await admit_until_refused()
    assert 1 <= len(later) <= 4, "the cap still holds: the rate was not learned from an odd figure"
    assert sum(spend.credits for spend in later) <= 1.0


async def test_the_rate_is_learned_from_small_calls_and_kept_in_the_store(
    sandbox: RunningSandbox, api_key: str, tmp_path: Path
) -> None:
    store = str(tmp_path / "store.sqlite3")
    caller = Caller(api_key=api_key)
    async with guard_for(sandbox, api_key, store=store, max_total_credits=100.0, credits_per_usd=25) as guard:
        before = await admitted(guard, caller, max_tokens=1000)
        # A call of a hundredth of a cent teaches the rate: 2.1 credits per USD.
        before.answered(completion(used=0.0000021, cost=0.000001))
        await guard.settle(before, caller)
        after = await admitted(guard, caller, max_tokens=1000)
        await guard.settle(after, caller, UpstreamUnreachable("gone"))
    async with guard_for(sandbox, api_key, store=store, max_total_credits=100.0, credits_per_usd=25) as guard:
        restarted = await admitted(guard, caller, max_tokens=1000)
    assert after.credits == pytest.approx(before.credits * 2.1 / 25, rel=1e-6)
    assert restarted.credits == pytest.approx(after.credits, rel=1e-6), "the rate survives a restart"


async def test_under_a_cap_every_call_carries_max_tokens_and_a_reasoning_budget_fits(
    sandbox: RunningSandbox, api_key: str
) -> None:
    caller = Caller(api_key=api_key)
    async with guard_for(sandbox, api_key, max_call_credits=1000.0, credits_per_usd=25) as guard:
        body: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
        await guard.admit(caller, body)
    assert body["max_tokens"] == 4096, "plenty of room: still bounded, by NAIVE_CAPPED_MAX_TOKENS"

    async with guard_for(sandbox, api_key, max_call_credits=1.0, credits_per_usd=25) as small:
        reasoning_body: dict[str, Any] = {
            "model": MODEL,
            "messages": [{"role": "user", "content": "hi"}],
            "reasoning": {"max_tokens": 1024},
        }
        await small.admit(caller, reasoning_body)
    assert reasoning_body["max_tokens"] + 1024 <= 1.0 / (10 / 1e6 * 25)


async def test_default_and_me_are_the_keys_own_tenant_and_keys_are_separate_tenants(
    sandbox: RunningSandbox, api_key: str
) -> None:
    other_key = f"{api_key}_other"
    async with guard_for(sandbox, api_key, max_tenant_credits=0.4, credits_per_usd=25) as guard:
        await admitted(guard, Caller(api_key=api_key), max_tokens=1000)
        for same in ("default", "me"):
            with pytest.raises(SpendingRefused):
                await admitted(guard, Caller(api_key=api_key, user_id=same), max_tokens=1000)
        await admitted(guard, Caller(api_key=other_key), max_tokens=1000)  # another account: its own room


async def test_a_refusal_names_the_period_when_it_resets_and_what_calls_in_flight_hold(
    sandbox: RunningSandbox, api_key: str
) -> None:
    caller = Caller(api_key=api_key, user_id="usr_alice")
    async with guard_for(sandbox, api_key, max_tenant_credits_per_day=0.5, credits_per_usd=25) as guard:
        held = await admitted(guard, caller, max_tokens=1000)
        with pytest.raises(SpendingRefused) as refusal:
            await admitted(guard, caller, max_tokens=1000)
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%d")
    message = refusal.value.message
    assert "NAIVE_MAX_TENANT_CREDITS_PER_DAY (0.5 for usr_alice per UTC day;" in message
    assert f"{held.credits:.6g} held by calls in flight; resets {tomorrow} 00:00 UTC)" in message


async def test_a_call_that_fits_once_calls_in_flight_settle_waits_for_them(
    sandbox: RunningSandbox, api_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    caller = Caller(api_key=api_key)
    settings = make_settings(sandbox, api_key, max_total_credits=0.5, credits_per_usd=25, cap_wait=60)
    services = Services.create(settings)
    async with services.running():
        guard = services.guard
        first = await admitted(guard, caller, max_tokens=1000)
        admitted_second = anyio.Event()
        second: list[Spend] = []
        # Known when the second call has been told there is no room yet (its reservation refused).
        store, refused = guard.store_now(), anyio.Event()
        reserve = store.reserve

        async def reserve_telling(*args: Any, **kwargs: Any) -> float:
            try:
                return await reserve(*args, **kwargs)
            except Exception:
                refused.set()
                raise

        monkeypatch.setattr(store, "reserve", reserve_telling)

        async def wait_for_room() -> None:
            second.append(await admitted(guard, caller, max_tokens=1000))
            admitted_second.set()

        async with anyio.create_task_group() as group:
            group.start_soon(wait_for_room)
            with anyio.fail_after(30):
                await refused.wait()
            assert not admitted_second.is_set(), "no room while the first call holds its worst case"
            first.answered(completion(used=0.001, cost=0.0005))
            await guard.settle(first, caller)
            with anyio.fail_after(30):
                await admitted_second.wait()
    assert second[0].credits == pytest.approx(first.credits * 2 / 25, rel=1e-6)


async def test_the_balance_floor_counts_calls_that_reported_no_balance(
    sandbox: RunningSandbox, api_key: str
) -> None:
    caller = Caller(api_key=api_key)
    async with guard_for(sandbox, api_key, min_credits_remaining=5.0, credits_per_usd=25) as guard:
        first = await admitted(guard, caller, max_tokens=1000)
        first.answered(completion(used=0.1, cost=0.004, remaining=5.6))
        await guard.settle(first, caller)
        cut = await admitted(guard, caller, max_tokens=1000)  # 0.25 credits worst case
        await guard.settle(cut, caller, IncompleteAnswer("cut", kind="connection_error", partial=""))
        await admitted(guard, caller, max_tokens=1000)  # 5.35 - 0.25 held still fits above 5
        with pytest.raises(SpendingRefused) as refusal:
            await admitted(guard, caller, max_tokens=1000)
    # 5.6 less the cut-off call's worst case (0.252, its request included)
    assert "balance 5.348," in refusal.value.message, "the cut-off call came off the balance"
    assert "ask the operator to lower NAIVE_MIN_CREDITS_REMAINING" in refusal.value.message


async def test_the_rate_an_answered_call_showed_is_kept_for_what_settles_next(
    sandbox: RunningSandbox, api_key: str
) -> None:
    caller = Caller(api_key=api_key)
    async with guard_for(sandbox, api_key, credits_per_usd=25) as guard:
        answered = await admitted(guard, caller)
        answered.answered(completion(used=0.0021, cost=0.001))
        await guard.settle(answered, caller)
        assert guard.rate == pytest.approx(2.1)
