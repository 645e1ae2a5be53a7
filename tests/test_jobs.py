"""Background jobs through the Python SDK's client in memory: `background: true` on chat and
compare, `naive_llm_result` (the result, the status and the answer so far, cancel), whose a job is,
the per-caller bound, expiry, and every bad value. Restarts and replicas: test_jobs_processes.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from sqlalchemy.exc import OperationalError

from naive_mcp.sandbox import RunningSandbox
from naive_mcp.server import create_server
from naive_mcp.store.store import Store
from tests.conftest import DEFAULT_MODEL, make_settings
from tests.helpers import settled_as, text_of, usage_of

pytestmark = pytest.mark.anyio

WAIT = 60  # generous: a bound, never a pace


async def start(client: Client, prompt: str, model: str | None = None, **more: Any) -> str:
    arguments = {"prompt": prompt, "background": True, **({"model": model} if model else {}), **more}
    started = await client.call_tool("naive_llm_chat", arguments)
    assert not started.is_error, text_of(started)
    assert started.structured_content is not None
    job_id: str = started.structured_content["job"]["job_id"]
    return job_id


async def result(client: Client, job_id: str, **more: Any) -> Any:
    return await client.call_tool("naive_llm_result", {"job_id": job_id, **more})


async def until(client: Client, job_id: str, done: Any, **more: Any) -> Any:
    with anyio.fail_after(WAIT):
        while True:
            answer = await result(client, job_id, wait_seconds=0, **more)
            if done(answer):
                return answer
            await anyio.sleep(0.02)


async def test_a_background_chat_answers_at_once_and_its_result_is_the_plain_calls(
    client: Client, sandbox: RunningSandbox, api_key: str
) -> None:
    started = await client.call_tool("naive_llm_chat", {"prompt": "later, please", "background": True})

    assert not started.is_error
    assert started.structured_content is not None
    job = started.structured_content["job"]
    assert job["status"] == "working" and job["tool"] == "naive_llm_chat"
    assert started.structured_content["text"] == "", "the schema's required field, empty: no answer yet"
    assert f'naive_llm_result(job_id="{job["job_id"]}"' in text_of(started)

    finished = await result(client, job["job_id"], wait_seconds=50)
    plain = await client.call_tool("naive_llm_chat", {"prompt": "later, please"})
    assert not finished.is_error
    assert text_of(finished) == text_of(plain) == f"Sandbox reply from {DEFAULT_MODEL}: later, please"
    assert finished.structured_content is not None and plain.structured_content is not None
    assert finished.structured_content["text"] == plain.structured_content["text"]
    assert finished.structured_content["usage"] == plain.structured_content["usage"]
    sent = [r for r in sandbox.sandbox.ledger.requests(api_key) if r.path.endswith("/chat/completions")]
    assert len(sent) == 2, "the job made its call once, as the plain call did"
    assert (await usage_of(client))["total"]["calls"] == 2


async def test_while_it_works_the_result_says_so_with_the_answer_so_far_and_cancel_stops_it(
    client: Client, sandbox: RunningSandbox, api_key: str
) -> None:
    job_id = await start(client, "a long one", "sandbox/slow")

    working = await until(client, job_id, lambda answer: "Sandbox reply" in text_of(answer))

    assert not working.is_error
    assert working.structured_content["job"]["status"] == "working"
    assert working.structured_content["partial_chars"] > 0
    assert f"Job {job_id} is still working" in text_of(working)
    assert "The answer so far" in text_of(working)

    cancelled = await result(client, job_id, cancel=True)

    assert cancelled.structured_content["job"]["status"] == "cancelled"
    assert "cancelled" in text_of(cancelled) and "Sandbox reply" in text_of(cancelled)
    (record,) = [r for r in sandbox.sandbox.ledger.requests(api_key) if r.path.endswith("/chat/completions")]
    with anyio.fail_after(WAIT):
        await anyio.to_thread.run_sync(record.stream_ended.wait)
    assert record.disconnected_at is not None, "the upstream saw the call go away"
    assert (await settled_as(client, "cancelled"))["calls"] == 1
    again = await result(client, job_id, cancel=True)
    assert again.structured_content["job"]["status"] == "cancelled", "an ended job is answered as it is"


async def test_a_wait_ends_as_soon_as_the_job_does(client: Client) -> None:
    job_id = await start(client, "soon")
    with anyio.fail_after(WAIT):  # far less than the 50 s asked: it ends when the job does
        finished = await result(client, job_id, wait_seconds=50)
    assert text_of(finished) == f"Sandbox reply from {DEFAULT_MODEL}: soon"


async def test_a_failed_background_call_gives_the_plain_calls_error(client: Client) -> None:
    arguments = {"prompt": "x", "model": "sandbox/fail-insufficient-credits"}
    job_id = await start(client, **arguments)
    failed = await result(client, job_id, wait_seconds=50)
    plain = await client.call_tool("naive_llm_chat", arguments)
    assert failed.is_error and plain.is_error
    assert text_of(failed) == text_of(plain)


async def test_compare_runs_in_the_background_too(client: Client) -> None:
    arguments = {"prompt": "both", "models": [DEFAULT_MODEL, "openai/gpt-5.4"], "background": True}
    started = await client.call_tool("naive_llm_compare", arguments)
    assert not started.is_error, text_of(started)
    assert started.structured_content is not None
    assert started.structured_content["answers"] == []
    finished = await result(client, started.structured_content["job"]["job_id"], wait_seconds=50)
    assert not finished.is_error
    assert [answer["model_asked"] for answer in finished.structured_content["answers"]] == arguments["models"]


async def test_the_generic_pair_starts_a_job_as_the_typed_tool_does(client: Client) -> None:
    started = await client.call_tool(
        "naive_run_primitive",
        {"primitive": "llm", "method": "chat", "arguments": {"prompt": "via run", "background": True}},
    )
    assert started.structured_content is not None
    finished = await result(client, started.structured_content["job"]["job_id"], wait_seconds=50)
    assert text_of(finished) == f"Sandbox reply from {DEFAULT_MODEL}: via run"


async def test_another_caller_can_neither_read_nor_cancel_a_job(client: Client) -> None:
    job_id = await start(client, "mine", "sandbox/slow", user_id="usr_alice")

    as_unknown = await result(client, "job_" + "x" * 24)
    for other in ({}, {"user_id": "usr_bob"}, {"project_id": "prj_1"}):
        for asked in ({}, {"cancel": True}):
            refused = await result(client, job_id, **other, **asked)
            assert refused.is_error
            assert text_of(refused).replace(job_id, "ID") == text_of(as_unknown).replace(
                "job_" + "x" * 24, "ID"
            )
    mine = await result(client, job_id, user_id="usr_alice", wait_seconds=0)
    assert mine.structured_content["job"]["status"] == "working", "nobody else stopped it"
    await result(client, job_id, user_id="usr_alice", cancel=True)


async def test_a_caller_has_at_most_its_limit_of_jobs_working(sandbox: RunningSandbox, api_key: str) -> None:
    settings = make_settings(sandbox, api_key, jobs_per_caller=2)
    async with Client(create_server(settings)) as client:
        first = await start(client, "one", "sandbox/slow")
        await start(client, "two", "sandbox/slow")

        refused = await client.call_tool(
            "naive_llm_chat", {"prompt": "three", "model": "sandbox/slow", "background": True}
        )
        other = await start(client, "a tenant of its own", "sandbox/slow", user_id="usr_carol")

        assert refused.is_error
        assert "2 jobs working" in text_of(refused) and "NAIVE_JOBS_PER_CALLER" in text_of(refused)
        assert "Nothing was sent upstream" in text_of(refused)
        prompts = [
            r.body["messages"][-1]["content"] for r in sandbox.sandbox.ledger.requests(api_key) if r.body
        ]
        assert "three" not in prompts
        await result(client, first, cancel=True)
        again = await start(client, "three", "sandbox/slow")  # room again: one ended
        for job_id in (again, other):
            await result(client, job_id, cancel=True, **({"user_id": "usr_carol"} if job_id == other else {}))


async def test_an_ended_job_expires_after_its_ttl(sandbox: RunningSandbox, api_key: str) -> None:
    settings = make_settings(sandbox, api_key, job_ttl=0.2)
    async with Client(create_server(settings)) as client:
        job_id = await start(client, "brief")
        assert not (await result(client, job_id, wait_seconds=50)).is_error
        gone = await until(client, job_id, lambda answer: answer.is_error)
    assert "there is no job" in text_of(gone) and "0.2 seconds (NAIVE_JOB_TTL)" in text_of(gone)


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"job_id": "nope"}, "job_id"),
        ({"job_id": "job_" + "x" * 24 + "/../"}, "job_id"),
        ({}, "job_id"),
        ({"job_id": "job_" + "x" * 24, "wait_seconds": -1}, "wait_seconds"),
        ({"job_id": "job_" + "x" * 24, "wait_seconds": 51}, "wait_seconds"),
        ({"job_id": "job_" + "x" * 24, "wait_seconds": "soon"}, "wait_seconds"),
        ({"job_id": "job_" + "x" * 24, "cancel": "maybe"}, "cancel"),
        ({"job_id": "job_" + "x" * 24, "user_id": "has spaces"}, "user_id"),
        ({"job_id": "job_" + "x" * 24, "job": "x"}, "job"),
    ],
)
async def test_a_bad_value_for_naive_llm_result_is_refused_by_name(
    client: Client, sandbox: RunningSandbox, api_key: str, arguments: dict[str, Any], field: str
) -> None:
    refused = await client.call_tool("naive_llm_result", arguments)
    assert refused.is_error
    assert field in text_of(refused)
    assert sandbox.sandbox.ledger.requests(api_key) == []


@pytest.mark.parametrize("background", ["maybe", 2, {}])
async def test_a_bad_background_is_refused_by_name_and_nothing_starts(
    client: Client, sandbox: RunningSandbox, api_key: str, background: Any
) -> None:
    refused = await client.call_tool("naive_llm_chat", {"prompt": "x", "background": background})
    assert refused.is_error and "background" in text_of(refused)
    assert sandbox.sandbox.ledger.requests(api_key) == []


async def test_bad_arguments_with_background_are_refused_at_once_and_nothing_starts(
    client: Client, sandbox: RunningSandbox, api_key: str
) -> None:
    refused = await client.call_tool("naive_llm_chat", {"prompt": "x", "background": True, "temperature": 9})
    assert refused.is_error and "temperature" in text_of(refused)
    assert "job" not in text_of(refused).lower()
    assert sandbox.sandbox.ledger.requests(api_key) == []


async def test_a_process_runs_at_most_its_limit_of_jobs_of_all_callers(
    sandbox: RunningSandbox, api_key: str
) -> None:
    settings = make_settings(sandbox, api_key, max_jobs=1)
    async with Client(create_server(settings)) as client:
        first = await start(client, "one", "sandbox/slow", user_id="usr_a")
        refused = await client.call_tool(
            "naive_llm_chat",
            {"prompt": "two", "model": "sandbox/slow", "background": True, "user_id": "usr_b"},
        )
        assert refused.is_error and "NAIVE_MAX_JOBS" in text_of(refused)
        assert "Nothing was sent upstream" in text_of(refused)
        await result(client, first, user_id="usr_a", cancel=True)


async def test_starts_arriving_together_cannot_all_pass_the_process_limit(
    sandbox: RunningSandbox, api_key: str, tmp_path: Path
) -> None:
    # A SQLite file: each start waits for its write on a worker thread, where the others' checks
    # would find the room it is about to take.
    settings = make_settings(sandbox, api_key, max_jobs=2, store=str(tmp_path / "store.db"))
    answers: dict[str, Any] = {}
    async with Client(create_server(settings)) as client:

        async def one(user: str) -> None:
            answers[user] = await client.call_tool(
                "naive_llm_chat",
                {"prompt": user, "model": "sandbox/slow", "background": True, "user_id": user},
            )

        async with anyio.create_task_group() as starting:
            for n in range(8):
                starting.start_soon(one, f"usr_{n}")
        started = {user: answer for user, answer in answers.items() if not answer.is_error}
        refused = [answer for answer in answers.values() if answer.is_error]
        for user, answer in started.items():
            await result(client, answer.structured_content["job"]["job_id"], user_id=user, cancel=True)

    assert len(started) == 2, [text_of(answer) for answer in answers.values()]
    assert all("NAIVE_MAX_JOBS" in text_of(answer) for answer in refused)


async def test_a_job_s_own_errors_say_what_to_do_not_that_the_upstream_failed(
    sandbox: RunningSandbox, api_key: str
) -> None:
    settings = make_settings(sandbox, api_key, jobs_per_caller=1)
    async with Client(create_server(settings)) as client:
        unknown = await result(client, "job_" + "x" * 24)
        first = await start(client, "one", "sandbox/slow")
        too_many = await client.call_tool(
            "naive_llm_chat", {"prompt": "two", "model": "sandbox/slow", "background": True}
        )
        await result(client, first, cancel=True)

    assert unknown.is_error and "use the job_id a background call gave you" in text_of(unknown).lower()
    assert too_many.is_error and "call without background" in text_of(too_many)
    for answer in (unknown, too_many):
        assert "upstream failed" not in text_of(answer), text_of(answer)


async def test_a_job_whose_end_the_store_missed_reads_as_it_ended_and_is_written_later(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The store is away the moment the job ends (a PostgreSQL failover): the job must not read as
    # working for ever, which its row says while this process's lease lives.
    finish = Store.finish_job
    calls: list[str] = []

    async def away_once(self: Store, job_id: str, *args: Any, **kwargs: Any) -> None:
        calls.append(job_id)
        if len(calls) == 1:
            raise OperationalError("UPDATE jobs", {}, Exception("the store is away"))
        await finish(self, job_id, *args, **kwargs)

    monkeypatch.setattr(Store, "finish_job", away_once)
    job_id = await start(client, "while the store blinks")

    first = await result(client, job_id, wait_seconds=50)
    later = await result(client, job_id, wait_seconds=0)

    for answer in (first, later):
        assert not answer.is_error, text_of(answer)
        assert text_of(answer) == f"Sandbox reply from {DEFAULT_MODEL}: while the store blinks"
    with anyio.fail_after(WAIT):
        while len(calls) < 2:  # noqa: ASYNC110 - the retry has no event
            await anyio.sleep(0.05)
    written = await result(client, job_id, wait_seconds=0)  # from the store now
    assert text_of(written) == text_of(first)
