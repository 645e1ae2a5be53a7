"""Threads: a chat continued by its thread_id, with any model, through restarts and replicas;
kept to its caller; trimmed to fit a model; expired; read back as resources; long answers by link."""

from __future__ import annotations

import json
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError
from mcp.types import CallToolResult, ResourceLink, TextResourceContents

from naive_mcp.sandbox import RunningSandbox
from naive_mcp.server import create_server
from tests.conftest import DEFAULT_MODEL, make_settings, naive_mcp, upstream_env
from tests.helpers import text_of, usage_of
from tests.remote import connect, http_server

pytestmark = pytest.mark.anyio


def chats(sandbox: RunningSandbox, key: str) -> list[dict[str, Any]]:
    """The body of every chat the upstream got with `key`, in order."""
    return [
        record.body
        for record in sandbox.sandbox.ledger.requests(key)
        if record.path.endswith("/chat/completions") and isinstance(record.body, dict)
    ]


def thread_of(result: CallToolResult) -> str:
    assert not result.is_error, text_of(result)
    assert result.structured_content is not None
    thread_id: str = result.structured_content["thread_id"]
    return thread_id


async def read_json(client: Client, uri: str) -> Any:
    contents = (await client.read_resource(uri)).contents[0]
    assert isinstance(contents, TextResourceContents)
    return json.loads(contents.text)


async def test_a_thread_is_continued_by_another_model_which_gets_the_earlier_turns(
    client: Client, sandbox: RunningSandbox, api_key: str
) -> None:
    first = await client.call_tool("naive_llm_chat", {"prompt": "Draft a haiku", "system": "Be brief."})
    thread_id = thread_of(first)
    assert thread_id.startswith("thr_")
    assert f"thread_id {thread_id}" in text_of(first, -1), "the summary line shows it to the agent"

    second = await client.call_tool(
        "naive_llm_chat", {"prompt": "Critique it", "thread_id": thread_id, "model": "openai/gpt-5.2"}
    )

    assert thread_of(second) == thread_id
    assert second.structured_content is not None and second.structured_content["model"] == "openai/gpt-5.2"
    sent = chats(sandbox, api_key)[-1]
    assert sent["model"] == "openai/gpt-5.2"
    assert sent["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Draft a haiku"},
        {"role": "assistant", "content": f"Sandbox reply from {DEFAULT_MODEL}: Draft a haiku"},
        {"role": "user", "content": "Critique it"},
    ]
    thread = await read_json(client, f"naive://threads/{thread_id}")
    assert [(turn["role"], turn.get("model")) for turn in thread["turns"]] == [
        ("user", None),
        ("assistant", DEFAULT_MODEL),
        ("user", None),
        ("assistant", "openai/gpt-5.2"),
    ]
    assert thread["system"] == "Be brief."
    listing = await read_json(client, "naive://threads")
    assert [(entry["thread_id"], entry["turns"], entry["title"]) for entry in listing["threads"]] == [
        (thread_id, 4, "Draft a haiku")
    ]


async def test_tool_calls_and_tool_results_are_kept_and_resent(
    client: Client, sandbox: RunningSandbox, api_key: str
) -> None:
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    asked = await client.call_tool(
        "naive_llm_chat", {"prompt": "weather?", "tools": tools, "tool_choice": "required"}
    )
    thread_id = thread_of(asked)
    assert asked.structured_content is not None
    [call] = asked.structured_content["tool_calls"]

    answered = await client.call_tool(
        "naive_llm_chat",
        {
            "thread_id": thread_id,
            "messages": [{"role": "tool", "tool_call_id": call["id"], "content": "sunny"}],
            "tools": tools,
        },
    )

    assert not answered.is_error, text_of(answered)
    sent = chats(sandbox, api_key)[-1]["messages"]
    assert sent[1]["role"] == "assistant"
    assert sent[1]["tool_calls"] == [
        {"id": call["id"], "type": "function", "function": {"name": "lookup", "arguments": call["arguments"]}}
    ]
    assert sent[2] == {"role": "tool", "tool_call_id": call["id"], "content": "sunny"}


async def test_a_thread_survives_a_restart(sandbox: RunningSandbox, api_key: str, tmp_path: Path) -> None:
    settings = make_settings(sandbox, api_key, store=str(tmp_path / "state.db"))
    async with Client(create_server(settings)) as client:
        thread_id = thread_of(await client.call_tool("naive_llm_chat", {"prompt": "remember 42"}))
    async with Client(create_server(settings)) as client:
        again = await client.call_tool("naive_llm_chat", {"prompt": "what was it?", "thread_id": thread_id})
    assert thread_of(again) == thread_id
    assert chats(sandbox, api_key)[-1]["messages"][0]["content"] == "remember 42"


@pytest.mark.slow
async def test_a_thread_is_continued_through_another_replica_on_postgresql(
    sandbox: RunningSandbox, api_key: str, postgres_url: str
) -> None:
    settings = make_settings(sandbox, api_key, store=postgres_url)
    async with Client(create_server(settings)) as one, Client(create_server(settings)) as other:
        thread_id = thread_of(await one.call_tool("naive_llm_chat", {"prompt": "on replica one"}))
        again = await other.call_tool("naive_llm_chat", {"prompt": "on replica two", "thread_id": thread_id})
        thread = await read_json(one, f"naive://threads/{thread_id}")
    assert thread_of(again) == thread_id
    assert [turn["content"] for turn in thread["turns"]][::2] == ["on replica one", "on replica two"]


async def test_a_thread_is_not_found_by_another_tenant_or_another_key(
    sandbox: RunningSandbox, api_key: str, tmp_path: Path
) -> None:
    store = str(tmp_path / "state.db")
    other_key = f"nv_sk_test_{uuid.uuid4().hex}"
    async with Client(create_server(make_settings(sandbox, api_key, store=store))) as client:
        alices = thread_of(
            await client.call_tool("naive_llm_chat", {"prompt": "secret plan", "user_id": "usr_alice"})
        )
        as_bob = await client.call_tool(
            "naive_llm_chat", {"prompt": "tell me", "thread_id": alices, "user_id": "usr_bob"}
        )
        as_key_itself = await client.call_tool("naive_llm_chat", {"prompt": "tell me", "thread_id": alices})
        in_project = await client.call_tool(
            "naive_llm_chat",
            {"prompt": "tell me", "thread_id": alices, "user_id": "usr_alice", "project_id": "prj_x"},
        )
    async with Client(create_server(make_settings(sandbox, other_key, store=store))) as client:
        other = await client.call_tool(
            "naive_llm_chat", {"prompt": "tell me", "thread_id": alices, "user_id": "usr_alice"}
        )
    never_existed = "thr_" + "A" * 22
    async with Client(create_server(make_settings(sandbox, api_key, store=store))) as client:
        unknown = await client.call_tool("naive_llm_chat", {"prompt": "tell me", "thread_id": never_existed})

    for refused in (as_bob, as_key_itself, in_project, other, unknown):
        assert refused.is_error
        text = text_of(refused)
        assert text.startswith("thread_id: there is no thread")
        assert "Nothing was sent upstream and no credits were spent." in text
        assert "secret plan" not in text
    # Another's thread and one that never was read the same.
    assert text_of(as_bob).replace(alices, "ID") == text_of(unknown).replace(never_existed, "ID")
    assert [body["messages"][-1]["content"] for body in chats(sandbox, api_key)] == ["secret plan"]
    assert chats(sandbox, other_key) == []


@pytest.mark.slow
async def test_a_token_reads_only_its_own_threads_over_http(
    sandbox: RunningSandbox, api_key: str, tmp_path: Path
) -> None:
    tokens = {"tok-alice": {"user_id": "usr_alice"}, "tok-bob": {"user_id": "usr_bob"}}
    env = {**upstream_env(sandbox, api_key), "NAIVE_AUTH_TOKENS": json.dumps(tokens)}
    with http_server(tmp_path, env) as server:
        async with connect(server, "tok-alice") as alice:
            thread_id = thread_of(await alice.call_tool("naive_llm_chat", {"prompt": "alice's secret"}))
            assert len((await read_json(alice, "naive://threads"))["threads"]) == 1
        async with connect(server, "tok-bob") as bob:
            listing = await read_json(bob, "naive://threads")
            with pytest.raises(MCPError, match="no such thread of yours"):
                await bob.read_resource(f"naive://threads/{thread_id}")
            with pytest.raises(MCPError, match="not found"):
                await bob.read_resource(f"naive://threads/{thread_id}/turns/2")
            continued = await bob.call_tool("naive_llm_chat", {"prompt": "and?", "thread_id": thread_id})
    assert listing["threads"] == []
    assert continued.is_error and "alice's secret" not in text_of(continued)


async def test_a_thread_is_trimmed_to_fit_a_small_models_context_and_says_how_much(
    client: Client, sandbox: RunningSandbox, api_key: str
) -> None:
    long = "word " * 400  # ~2,000 characters: ~500 tokens a turn, for a model of 1,000
    thread_id = thread_of(await client.call_tool("naive_llm_chat", {"prompt": f"one {long}", "system": "S"}))
    for n in ("two", "three"):
        thread_of(await client.call_tool("naive_llm_chat", {"prompt": f"{n} {long}", "thread_id": thread_id}))

    small = await client.call_tool(
        "naive_llm_chat",
        {"prompt": "summarise", "thread_id": thread_id, "model": "sandbox/small-context", "max_tokens": 50},
    )

    assert not small.is_error, text_of(small)
    assert small.structured_content is not None
    left_out = small.structured_content["left_out_turns"]
    assert left_out >= 2 and left_out % 2 == 0, "whole exchanges: a question with its answer"
    assert f"left out the {left_out} oldest turns of thread {thread_id}" in text_of(small, -1)
    sent = chats(sandbox, api_key)[-1]["messages"]
    assert sent[0] == {"role": "system", "content": "S"}, "the system prompt stays"
    assert sent[-1] == {"role": "user", "content": "summarise"}
    assert len(sent) == 1 + (6 - left_out) + 1
    # The thread itself keeps every turn.
    assert len((await read_json(client, f"naive://threads/{thread_id}"))["turns"]) == 8


async def test_the_stored_turns_count_in_the_caps(
    sandbox: RunningSandbox, api_key: str, tmp_path: Path
) -> None:
    store = str(tmp_path / "state.db")
    async with Client(create_server(make_settings(sandbox, api_key, store=store))) as client:
        thread_id = thread_of(await client.call_tool("naive_llm_chat", {"prompt": "x" * 6_000}))
    capped = make_settings(sandbox, api_key, store=store, max_call_credits=0.000_001)
    async with Client(create_server(capped)) as client:
        alone = await client.call_tool("naive_llm_chat", {"prompt": "short", "max_tokens": 10})
        continued = await client.call_tool(
            "naive_llm_chat", {"prompt": "short", "max_tokens": 10, "thread_id": thread_id}
        )

    def worst_case(result: CallToolResult) -> float:
        assert result.is_error and text_of(result).startswith("spending_cap:")
        return float(text_of(result).split("could cost up to ")[1].split(" ")[0])

    # The 6,000 characters asked and the ~6,000 answered, at half a token a character and the
    # model's $3 per million input tokens, in credits: far above the call alone.
    assert worst_case(continued) > worst_case(alone) + 6_000 * 0.5 * 3e-6
    assert len(chats(sandbox, api_key)) == 1


async def test_an_expired_thread_is_gone(sandbox: RunningSandbox, api_key: str) -> None:
    async with Client(create_server(make_settings(sandbox, api_key, thread_ttl=0.3))) as client:
        thread_id = thread_of(await client.call_tool("naive_llm_chat", {"prompt": "soon gone"}))
        await anyio.sleep(0.4)  # past its time: it can only be more expired, never less
        again = await client.call_tool("naive_llm_chat", {"prompt": "still there?", "thread_id": thread_id})
        with pytest.raises(MCPError, match="no such thread of yours"):
            await client.read_resource(f"naive://threads/{thread_id}")
        listing = await read_json(client, "naive://threads")
    assert again.is_error and text_of(again).startswith("thread_id: there is no thread")
    assert "7 days" not in text_of(again) and "NAIVE_THREAD_TTL" in text_of(again)
    assert listing["threads"] == []


async def test_a_full_thread_is_refused_before_anything_is_sent(
    sandbox: RunningSandbox, api_key: str
) -> None:
    async with Client(create_server(make_settings(sandbox, api_key, thread_max_turns=4))) as client:
        thread_id = thread_of(await client.call_tool("naive_llm_chat", {"prompt": "one"}))
        thread_of(await client.call_tool("naive_llm_chat", {"prompt": "two", "thread_id": thread_id}))
        full = await client.call_tool("naive_llm_chat", {"prompt": "three", "thread_id": thread_id})
    assert full.is_error
    assert "holds 4 turns and " in text_of(full)
    assert (
        "this call would take it past 4 turns (NAIVE_THREAD_MAX_TURNS), the most a thread holds"
        in text_of(full)
    )
    assert "NAIVE_THREAD_MAX_TURNS" in text_of(
        full
    ) and "Leave out thread_id to start a new thread" in text_of(full)
    assert len(chats(sandbox, api_key)) == 2


async def test_a_caller_keeps_at_most_its_share_of_threads(sandbox: RunningSandbox, api_key: str) -> None:
    async with Client(create_server(make_settings(sandbox, api_key, threads_per_caller=2))) as client:
        first, second, third = [
            thread_of(await client.call_tool("naive_llm_chat", {"prompt": f"thread {n}"})) for n in range(3)
        ]
        listing = await read_json(client, "naive://threads")
        forgotten = await client.call_tool("naive_llm_chat", {"prompt": "again", "thread_id": first})
    assert [entry["thread_id"] for entry in listing["threads"]] == [third, second]
    assert forgotten.is_error and "there is no thread" in text_of(forgotten)


@pytest.mark.parametrize(
    ("thread_id", "problem"),
    [
        ("nope", "thread_id: should be a thread id from an earlier result, such as thr_... (got 'nope')"),
        ("thr_" + "x" * 200, "thread_id: should be a thread id from an earlier result"),
        (42, "thread_id: should be a valid string (got 42)"),
    ],
)
async def test_a_bad_thread_id_names_the_field_and_sends_nothing(
    client: Client, sandbox: RunningSandbox, api_key: str, thread_id: object, problem: str
) -> None:
    result = await client.call_tool("naive_llm_chat", {"prompt": "hi", "thread_id": thread_id})
    assert result.is_error
    assert problem in text_of(result)
    assert chats(sandbox, api_key) == []


async def test_a_long_answer_comes_as_its_beginning_and_a_link_read_back_whole(
    sandbox: RunningSandbox, api_key: str
) -> None:
    question = "tell me everything " * 200  # the sandbox's answer repeats it: ~3,800 characters
    async with Client(create_server(make_settings(sandbox, api_key, max_result_chars=1_000))) as client:
        result = await client.call_tool("naive_llm_chat", {"prompt": question})
        assert not result.is_error
        data = result.structured_content
        assert data is not None
        whole = f"Sandbox reply from {DEFAULT_MODEL}: {question}"
        assert data["text_chars"] == len(whole) and len(data["text"]) <= 1_000
        assert whole.startswith(data["text"]) and text_of(result) == data["text"]
        uri = data["answer_uri"]
        assert uri == f"naive://threads/{data['thread_id']}/turns/2"
        assert f"The whole answer is the resource {uri}" in text_of(result, 1)
        links = [block for block in result.content if isinstance(block, ResourceLink)]
        assert [link.uri for link in links] == [uri]
        contents = (await client.read_resource(uri)).contents[0]
    assert isinstance(contents, TextResourceContents)
    assert contents.text == whole


async def test_with_threads_off_nothing_is_written_and_a_long_answer_comes_whole(
    sandbox: RunningSandbox, api_key: str, tmp_path: Path
) -> None:
    store = tmp_path / "state.db"
    settings = make_settings(sandbox, api_key, store=str(store), threads=False, max_result_chars=1_000)
    question = "a private prompt " * 100
    async with Client(create_server(settings)) as client:
        result = await client.call_tool("naive_llm_chat", {"prompt": question})
        refused = await client.call_tool("naive_llm_chat", {"prompt": "more", "thread_id": "thr_" + "A" * 22})
        listing = await read_json(client, "naive://threads")
        assert (await usage_of(client))["total"]["calls"] == 1

    assert result.structured_content is not None and "thread_id" not in result.structured_content
    assert text_of(result).endswith(question), "whole"
    assert "comes whole: threads are off (NAIVE_THREADS=false)" in text_of(result, -1)
    assert refused.is_error and "threads are off on this server (NAIVE_THREADS=false)" in text_of(refused)
    assert listing == {
        "threads": [],
        "note": "threads are off on this server (NAIVE_THREADS=false): none is kept",
    }
    with sqlite3.connect(store) as db:
        assert db.execute("SELECT count(*) FROM threads").fetchone() == (0,)
        assert db.execute("SELECT count(*) FROM turns").fetchone() == (0,)
        dumped = "\n".join(db.iterdump())
    assert "a private prompt" not in dumped


@pytest.mark.slow
@pytest.mark.parametrize("stateless", [False, True], ids=["stateful", "stateless"])
async def test_threads_work_over_http_in_both_protocol_eras(
    sandbox: RunningSandbox, api_key: str, tmp_path: Path, stateless: bool
) -> None:
    flags = ["--stateless"] if stateless else []
    env = {**upstream_env(sandbox, api_key), "NAIVE_MAX_RESULT_CHARS": "1000"}
    with http_server(tmp_path, env, *flags) as server:
        for mode in ("auto", "legacy"):
            async with connect(server, mode=mode) as client:
                thread_id = thread_of(await client.call_tool("naive_llm_chat", {"prompt": f"era {mode}"}))
            async with connect(server, mode=mode) as client:
                again = await client.call_tool(
                    "naive_run_primitive",
                    {
                        "primitive": "llm",
                        "method": "chat",
                        "arguments": {"prompt": "x" * 1500, "thread_id": thread_id},
                    },
                )
                assert thread_of(again) == thread_id
                assert again.structured_content is not None
                whole = (await client.read_resource(again.structured_content["answer_uri"])).contents[0]
                assert isinstance(whole, TextResourceContents) and whole.text.endswith("x" * 1500)
                thread = await read_json(client, f"naive://threads/{thread_id}")
                assert thread["turns"][0]["content"] == f"era {mode}"


@pytest.mark.parametrize("engine", ["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
async def test_the_sweep_deletes_expired_threads_and_their_turns(
    engine: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    from naive_mcp.store import ThreadLimits, Turn, owned_by
    from naive_mcp.store.location import StoreLocation
    from naive_mcp.store.store import Store

    where = str(tmp_path / "state.db") if engine == "sqlite" else request.getfixturevalue("postgres_url")
    store = await Store.open(StoreLocation.parse(where))
    owner = owned_by("k" * 64, None, None)
    try:
        for ttl, new_id in ((0.2, "thr_" + "a" * 22), (3600.0, "thr_" + "b" * 22)):
            await store.keep_turns(
                owner,
                None,
                new_id,
                [
                    Turn("user", {"role": "user", "content": "hi"}),
                    Turn("assistant", {"role": "assistant", "content": "yo"}),
                ],
                ThreadLimits(ttl=ttl, per_owner=10),
                system=None,
                title="hi",
            )
        await anyio.sleep(0.3)  # past the first one's time: it can only be more expired
        await store.claim_orphans("sweeper")
        kept = await store.threads(owner, limit=10)
        gone = await store.turn("thr_" + "a" * 22, owner, 1)
        turns = await store.thread("thr_" + "b" * 22, owner)
    finally:
        await store.aclose()
    assert [record.id for record in kept] == ["thr_" + "b" * 22]
    assert gone is None
    assert turns is not None and [turn.number for turn in turns[1]] == [1, 2]


@pytest.mark.slow
async def test_threads_work_over_stdio_and_sse_across_processes(
    sandbox: RunningSandbox, api_key: str, tmp_path: Path, errlog: Any
) -> None:
    env = {**upstream_env(sandbox, api_key), "NAIVE_STORE": str(tmp_path / "state.db")}
    async with naive_mcp(errlog, env) as client:
        thread_id = thread_of(await client.call_tool("naive_llm_chat", {"prompt": "over stdio"}))
    with http_server(tmp_path, env, transport="sse") as server:
        async with connect(server) as client:
            again = await client.call_tool("naive_llm_chat", {"prompt": "over sse", "thread_id": thread_id})
            thread = await read_json(client, f"naive://threads/{thread_id}")
    assert thread_of(again) == thread_id
    assert [turn["content"] for turn in thread["turns"]][::2] == ["over stdio", "over sse"]


async def test_a_secret_in_a_prompt_never_shows_in_the_thread_read_back(client: Client, api_key: str) -> None:
    result = await client.call_tool("naive_llm_chat", {"prompt": f"my key is {api_key}"})
    thread_id = thread_of(result)
    whole = (await client.read_resource(f"naive://threads/{thread_id}")).contents[0]
    asked = (await client.read_resource(f"naive://threads/{thread_id}/turns/1")).contents[0]
    assert isinstance(whole, TextResourceContents) and isinstance(asked, TextResourceContents)
    assert api_key not in whole.text and api_key not in asked.text
    assert asked.text == "my key is [redacted]"


async def test_compare_continues_a_thread_and_each_answer_starts_a_thread_of_its_own(
    client: Client, sandbox: RunningSandbox, api_key: str
) -> None:
    thread_id = thread_of(
        await client.call_tool("naive_llm_chat", {"prompt": "Draft a plan", "system": "Be brief."})
    )
    compared = await client.call_tool(
        "naive_llm_compare",
        {
            "prompt": "Critique it",
            "thread_id": thread_id,
            "models": ["openai/gpt-5.2", "google/gemini-2.5-pro"],
        },
    )
    assert not compared.is_error, text_of(compared)
    assert compared.structured_content is not None
    answers = compared.structured_content["answers"]
    for body in chats(sandbox, api_key)[1:]:
        assert body["messages"] == [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Draft a plan"},
            {"role": "assistant", "content": f"Sandbox reply from {DEFAULT_MODEL}: Draft a plan"},
            {"role": "user", "content": "Critique it"},
        ]
    forks = [answer["thread_id"] for answer in answers]
    assert len(set(forks)) == 2 and thread_id not in forks
    assert f"thread_id {forks[1]}" in text_of(compared, 1)

    chosen = await client.call_tool("naive_llm_chat", {"prompt": "Go on", "thread_id": forks[1]})

    assert thread_of(chosen) == forks[1]
    sent = chats(sandbox, api_key)[-1]["messages"]
    assert [message["content"] for message in sent] == [
        "Be brief.",
        "Draft a plan",
        f"Sandbox reply from {DEFAULT_MODEL}: Draft a plan",
        "Critique it",
        "Sandbox reply from google/gemini-2.5-pro: Critique it",
        "Go on",
    ]
    original = await read_json(client, f"naive://threads/{thread_id}")
    assert len(original["turns"]) == 2, "the thread compared from is left as it was"


async def test_compare_refuses_a_thread_of_another_tenant_and_sends_nothing(
    client: Client, sandbox: RunningSandbox, api_key: str
) -> None:
    alices = thread_of(
        await client.call_tool("naive_llm_chat", {"prompt": "alice's", "user_id": "usr_alice"})
    )
    refused = await client.call_tool(
        "naive_llm_compare",
        {"prompt": "leak it", "thread_id": alices, "models": ["openai/gpt-5.2", "openai/gpt-5-mini"]},
    )
    assert refused.is_error and text_of(refused).startswith("thread_id: there is no thread")
    assert len(chats(sandbox, api_key)) == 1


async def test_a_long_compare_answer_comes_as_its_share_and_a_link(
    sandbox: RunningSandbox, api_key: str
) -> None:
    question = "say it all " * 200  # each answer repeats it: ~2,250 characters, past a share of 1,000
    async with Client(create_server(make_settings(sandbox, api_key, max_result_chars=2_000))) as client:
        result = await client.call_tool(
            "naive_llm_compare", {"prompt": question, "models": ["openai/gpt-5.2", "openai/gpt-5-mini"]}
        )
        assert result.structured_content is not None
        first = result.structured_content["answers"][0]
        assert len(first["text"]) <= 1_000 and first["text_chars"] > 2_000
        assert f"The whole answer is the resource {first['answer_uri']}" in text_of(result, 0)
        whole = (await client.read_resource(first["answer_uri"])).contents[0]
    assert isinstance(whole, TextResourceContents)
    assert whole.text == f"Sandbox reply from openai/gpt-5.2: {question}"


async def test_a_tool_result_keeps_its_call_when_the_thread_is_trimmed_to_fit(
    client: Client, sandbox: RunningSandbox, api_key: str
) -> None:
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    thread_id = thread_of(await client.call_tool("naive_llm_chat", {"prompt": "background " + "word " * 600}))
    # ~1,500 characters asked, and as much in the call's arguments: counted at a third of a token
    # a character, more than a 1,000-token model leaves room for.
    question = "weather? " + "word " * 300
    asked = await client.call_tool(
        "naive_llm_chat",
        {"prompt": question, "thread_id": thread_id, "tools": tools, "tool_choice": "required"},
    )
    assert asked.structured_content is not None
    [call] = asked.structured_content["tool_calls"]

    answered = await client.call_tool(
        "naive_llm_chat",
        {
            "thread_id": thread_id,
            "model": "sandbox/small-context",
            "max_tokens": 50,
            "messages": [{"role": "tool", "tool_call_id": call["id"], "content": "sunny"}],
        },
    )

    # The exchange with the call the tool result answers is sent whole, though it does not
    # seem to fit (a tool result without its call is refused by every provider); the older one
    # is left out.
    assert not answered.is_error, text_of(answered)
    sent = chats(sandbox, api_key)[-1]["messages"]
    assert [message["role"] for message in sent] == ["user", "assistant", "tool"]
    assert sent[0]["content"] == question and sent[1]["tool_calls"][0]["id"] == call["id"]
    assert answered.structured_content is not None and answered.structured_content["left_out_turns"] == 2


async def test_the_listing_of_threads_never_shows_a_secret_in_a_title(client: Client, api_key: str) -> None:
    thread_of(await client.call_tool("naive_llm_chat", {"prompt": f"my key is {api_key}"}))
    listing = await read_json(client, "naive://threads")
    assert listing["threads"][0]["title"] == "my key is [redacted]"


@pytest.mark.parametrize("number", ["0", "-1", "99999999999999999999", "²", "٣", "1%2F.."])
async def test_a_turn_that_is_not_there_is_not_found(client: Client, number: str) -> None:
    thread_id = thread_of(await client.call_tool("naive_llm_chat", {"prompt": "hi"}))
    with pytest.raises(MCPError, match="not found") as raised:
        await client.read_resource(f"naive://threads/{thread_id}/turns/{number}")
    assert raised.value.error.code == -32602


@pytest.mark.parametrize(
    ("arguments", "setting"),
    [
        (
            {"messages": [{"role": "user", "content": f"m{n}"} for n in range(9)]},
            "4 turns (NAIVE_THREAD_MAX_TURNS)",
        ),
        ({"prompt": "y" * 5_000}, "2000 characters (NAIVE_THREAD_MAX_CHARS)"),
    ],
    ids=["turns", "chars"],
)
async def test_a_call_too_big_for_a_thread_is_answered_and_kept_in_none(
    sandbox: RunningSandbox, api_key: str, arguments: dict[str, Any], setting: str
) -> None:
    settings = make_settings(sandbox, api_key, thread_max_turns=4, thread_max_chars=2_000)
    async with Client(create_server(settings)) as client:
        chat = await client.call_tool("naive_llm_chat", arguments)
        compared = await client.call_tool(
            "naive_llm_compare", {**arguments, "models": ["openai/gpt-5.2", "openai/gpt-5-mini"]}
        )
        listing = await read_json(client, "naive://threads")
    assert not chat.is_error and not compared.is_error
    assert chat.structured_content is not None and "thread_id" not in chat.structured_content
    assert f"this answer is in no thread: its messages (and its answer) would be past {setting}" in text_of(
        chat, -1
    )
    assert compared.structured_content is not None
    assert all("thread_id" not in answer for answer in compared.structured_content["answers"])
    assert setting in text_of(compared, -1)
    assert listing["threads"] == []


async def test_calls_at_once_on_one_thread_never_take_it_past_its_bounds(
    sandbox: RunningSandbox, api_key: str, tmp_path: Path
) -> None:
    settings = make_settings(sandbox, api_key, store=str(tmp_path / "state.db"), thread_max_turns=6)
    results: list[CallToolResult] = []
    async with Client(create_server(settings)) as client:
        thread_id = thread_of(await client.call_tool("naive_llm_chat", {"prompt": "start"}))

        async def continue_it(number: int) -> None:
            results.append(
                await client.call_tool(
                    "naive_llm_chat", {"prompt": f"at once {number}", "thread_id": thread_id}
                )
            )

        async with anyio.create_task_group() as calls:
            for number in range(10):
                calls.start_soon(continue_it, number)
        thread = await read_json(client, f"naive://threads/{thread_id}")

    assert len(thread["turns"]) <= 6
    kept = [
        result for result in results if result.structured_content and "thread_id" in result.structured_content
    ]
    unkept = [result for result in results if result not in kept]
    assert all(not result.is_error for result in results), "every call was answered"
    assert len(kept) == (len(thread["turns"]) - 2) // 2 and unkept
    for result in unkept:
        assert f"thread {thread_id} was filled meanwhile" in text_of(result, -1)


async def test_a_long_synthesis_comes_as_its_share_and_a_link(sandbox: RunningSandbox, api_key: str) -> None:
    question = "weigh this " * 100  # the judge's answer repeats its prompt: both answers and the question
    async with Client(create_server(make_settings(sandbox, api_key, max_result_chars=3_000))) as client:
        result = await client.call_tool(
            "naive_llm_compare",
            {
                "prompt": question,
                "models": ["openai/gpt-5.2", "openai/gpt-5-mini"],
                "judge": "google/gemini-2.5-pro",
            },
        )
        assert not result.is_error, text_of(result)
        assert result.structured_content is not None
        synthesis = result.structured_content["synthesis"]
        assert len(synthesis["text"]) <= 1_000 < synthesis["text_chars"], "a third of the limit each"
        assert f"The whole answer is the resource {synthesis['answer_uri']}" in text_of(result, 2)
        whole = (await client.read_resource(synthesis["answer_uri"])).contents[0]
    assert isinstance(whole, TextResourceContents) and len(whole.text) == synthesis["text_chars"]
    assert len(json.dumps(result.structured_content)) < 3_000 + 2_500, "the result stays near its limit"


async def test_the_judges_prompt_is_cut_to_fit_a_small_judges_context(
    client: Client, sandbox: RunningSandbox, api_key: str
) -> None:
    question = "judge me " * 150  # ~1,350 characters, each answer as long: past a 1,000-token judge
    result = await client.call_tool(
        "naive_llm_compare",
        {
            "prompt": question,
            "models": ["openai/gpt-5.2", "openai/gpt-5-mini"],
            "judge": "sandbox/small-context",
        },
    )
    assert not result.is_error, text_of(result)
    assert result.structured_content is not None
    synthesis = result.structured_content["synthesis"]
    assert "error" not in synthesis, synthesis.get("error")
    judged = chats(sandbox, api_key)[-1]
    assert judged["model"] == "sandbox/small-context"
    assert judged["messages"][-1]["content"].count("[… cut to fit the judge's context") == 2
