"""Background jobs across real `naive-mcp` processes, on loopback: a job outlives the process that
ran it in the store (a SIGTERM keeps its result; a SIGKILL leaves it failed with the text that had
arrived, its spend settled by the next process); a job is read, grown and cancelled through
another replica on one PostgreSQL, and is nobody else's; the Inspector CLI starts a job and reads
its result in two runs; the Python SDK's client does both over stdio.

The in-memory behaviour (every argument, the bounds, expiry) is test_jobs.py's.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

import anyio
import pytest
from mcp import Client
from mcp.types import CallToolResult

from naive_mcp.sandbox import RunningSandbox, SandboxConfig, serve_in_thread
from tests.conftest import DEFAULT_MODEL, naive_mcp, upstream_env
from tests.helpers import settled_as, text_of, usage_of
from tests.mcp_wire import ended, last_chat
from tests.outside_clients import result_of, run_inspector
from tests.remote import connect, http_server

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

WAIT = 60  # generous, for a busy machine: a bound, never a pace
ALICE, BOB = "jobs-alice-token", "jobs-bob-token"
TOKENS = {ALICE: {"user_id": "usr_alice"}, BOB: {"user_id": "usr_bob"}}
UNKNOWN_JOB = "job_nobodysjobatallhere"
SLOW_REPLY = "Sandbox reply from sandbox/slow"


@pytest.fixture(scope="module")
def paced() -> Iterator[RunningSandbox]:
    """`sandbox/slow` drips 3 words every 50 ms, for about 30 s: it is still answering whenever a
    test stops it, and it never paces one (each stops it, or never calls it)."""
    with serve_in_thread(
        SandboxConfig(slow_chunk_delay=0.05, slow_words=2000, generation_delay=0.2)
    ) as running:
        yield running


async def start(client: Client, prompt: str, model: str | None = None) -> str:
    arguments = {"prompt": prompt, "background": True, **({"model": model} if model else {})}
    started = await client.call_tool("naive_llm_chat", arguments)
    assert not started.is_error, text_of(started)
    assert started.structured_content is not None
    assert started.structured_content["job"]["status"] == "working"
    job_id: str = started.structured_content["job"]["job_id"]
    return job_id


async def result(client: Client, job_id: str, **more: Any) -> CallToolResult:
    return await client.call_tool("naive_llm_result", {"job_id": job_id, **more})


def job_of(answer: CallToolResult) -> dict[str, Any]:
    assert answer.structured_content is not None, text_of(answer)
    job: dict[str, Any] = answer.structured_content["job"]
    return job


def partial_chars(answer: CallToolResult) -> int:
    assert answer.structured_content is not None, text_of(answer)
    chars: int = answer.structured_content["partial_chars"]
    return chars


def so_far(answer: CallToolResult) -> str:
    """The answer so far in a job's status text."""
    _, marker, partial = text_of(answer).partition(" characters):\n")
    assert marker, text_of(answer)
    assert len(partial) == partial_chars(answer)
    return partial


async def until(client: Client, job_id: str, done: Callable[[CallToolResult], bool]) -> CallToolResult:
    """naive_llm_result, looked at again (a short wait each time) until `done` holds."""
    with anyio.fail_after(WAIT):
        while True:
            answer = await result(client, job_id, wait_seconds=0.2)
            if done(answer):
                return answer


def working(answer: CallToolResult) -> bool:
    return answer.structured_content is not None and job_of(answer)["status"] == "working"


# --- a restart, on a SQLite file ----------------------------------------------------------------


async def test_a_job_survives_a_restart_its_result_kept_or_failed_with_its_text_and_settled(
    paced: RunningSandbox, api_key: str, tmp_path: Path
) -> None:
    store = tmp_path / "store.sqlite3"
    # A short lease (its minimum is 1 s): a killed process's lease lapses soon, and the next
    # process sweeps every third of it.
    # A short grace: a SIGTERM lets the calls in flight (a job's too) run on that long, then stops them.
    env = {
        **upstream_env(paced, api_key),
        "NAIVE_STORE": str(store),
        "NAIVE_STORE_LEASE": "1",
        "NAIVE_SHUTDOWN_GRACE": "1",
    }

    # Process A ends one job, and stops normally while another answers.
    with http_server(tmp_path, env) as a:
        async with connect(a) as client:
            kept_id = await start(client, "kept")
            finished = await result(client, kept_id, wait_seconds=50)
            stopped_id = await start(client, "stopped", "sandbox/slow")
            await until(client, stopped_id, lambda answer: partial_chars(answer) > 0)
        a.process.send_signal(signal.SIGTERM)
        assert await anyio.to_thread.run_sync(a.process.wait, WAIT) == 0
        stop_line = a.logs()
    await ended(last_chat(paced, api_key))

    # Process B reads both; starts a long one, and is killed while it answers.
    with http_server(tmp_path, env) as b:
        async with connect(b) as client:
            kept = await result(client, kept_id, wait_seconds=0)
            stopped = await result(client, stopped_id, wait_seconds=0)
            slow_id = await start(client, "a long one", "sandbox/slow")
            seen = await until(client, slow_id, lambda answer: partial_chars(answer) > 0)
        stored = await _partial_stored(store, slow_id)
        os.kill(b.process.pid, signal.SIGKILL)
        await anyio.to_thread.run_sync(b.process.wait, WAIT)
    record = last_chat(paced, api_key)
    await ended(record)
    interrupted, killed = [g for g in paced.sandbox.ledger.generations(api_key) if g.model == "sandbox/slow"]

    # Process C: the killed job fails with its text once B's lease lapsed; its spend is settled.
    with http_server(tmp_path, env) as c:
        async with connect(c) as client:
            failed = await until(client, slow_id, lambda answer: not working(answer))
            cut_off = await settled_as(client, "cut_off")
            cancelled = await settled_as(client, "cancelled")
            usage = await usage_of(client)

    assert not finished.is_error and text_of(finished) == f"Sandbox reply from {DEFAULT_MODEL}: kept"
    assert kept.content == finished.content, "the result of a job that ended is kept across a restart"
    assert kept.structured_content == finished.structured_content
    assert stopped.is_error and job_of(stopped)["status"] == "failed"
    assert f"Job {stopped_id} failed: The server stopped before this job ended" in text_of(stopped)
    assert so_far(stopped).startswith(SLOW_REPLY), "a job a SIGTERM stopped keeps its text"
    assert interrupted.cancelled and cancelled["calls"] == 1, "the stopping process settled its call"
    assert cancelled["cost_usd"] == pytest.approx(interrupted.total_cost)
    assert "usage: 2 chat calls" in stop_line, "the stop's usage line counts the job it settled"
    assert job_of(seen)["status"] == "working"

    assert failed.is_error and job_of(failed)["status"] == "failed"
    assert f"Job {slow_id} failed: The server process running this job stopped" in text_of(failed)
    partial = so_far(failed)
    assert partial.startswith(stored), "the text that had arrived is kept (it only grew after)"
    assert partial.startswith(SLOW_REPLY)
    assert partial.startswith(so_far(seen)) or so_far(seen).startswith(partial), "one answer"

    assert record.disconnected_at is not None and killed.cancelled, "the kill closed the upstream call"
    assert cut_off["calls"] == 1
    assert cut_off["cost_usd"] == pytest.approx(killed.total_cost), "settled from the upstream's figures"
    assert usage["total"]["calls"] == 3 == len(paced.sandbox.ledger.generations(api_key))
    assert _holds(store) == 0, "no reservation is left"


async def _partial_stored(store: Path, job_id: str) -> str:
    """The job's answer so far once the store holds some (flushed about once a second), and the
    generation id of its call's hold too (written just after the first chunk named it)."""

    def stored() -> str | None:
        with sqlite3.connect(store) as db:
            (partial,) = db.execute("SELECT partial_text FROM jobs WHERE id = ?", (job_id,)).fetchone()
            named = db.execute("SELECT 1 FROM holds WHERE generation_id IS NOT NULL").fetchone()
        return partial if partial and named else None

    with anyio.fail_after(WAIT):
        while (partial := await anyio.to_thread.run_sync(stored)) is None:  # noqa: ASYNC110 - another process's database
            await anyio.sleep(0.05)
    return partial


def _holds(store: Path) -> int:
    with sqlite3.connect(store) as db:
        (count,) = db.execute("SELECT count(*) FROM holds").fetchone()
    return int(count)


# --- another replica, on PostgreSQL -------------------------------------------------------------


async def test_another_replica_reads_the_job_as_it_grows_and_cancels_it_and_nobody_else_can(
    paced: RunningSandbox, api_key: str, tmp_path: Path, postgres_url: str
) -> None:
    env = {
        **upstream_env(paced, api_key),
        "NAIVE_STORE": postgres_url,
        "NAIVE_AUTH_TOKENS": json.dumps(TOKENS),
    }
    with http_server(tmp_path, env, "--stateless") as a, http_server(tmp_path, env, "--stateless") as b:
        async with connect(a, ALICE) as on_a, connect(b, ALICE) as on_b, connect(b, BOB) as bob:
            job_id = await start(on_a, "alice's long one", "sandbox/slow")
            first = await until(on_b, job_id, lambda answer: partial_chars(answer) > 0)
            grown = await until(on_b, job_id, lambda answer: partial_chars(answer) > partial_chars(first))
            bob_reads = await result(bob, job_id, wait_seconds=0)
            bob_cancels = await result(bob, job_id, cancel=True)
            unknown = await result(bob, UNKNOWN_JOB, wait_seconds=0)
            after_bob = await result(on_b, job_id, wait_seconds=0)
            cancelling = await result(on_b, job_id, cancel=True)
            cancelled = await until(on_b, job_id, lambda answer: not working(answer))
            record = last_chat(paced, api_key)
            await ended(record)
            settled = await settled_as(on_b, "cancelled")

    assert job_of(first)["status"] == job_of(grown)["status"] == "working"
    assert so_far(grown).startswith(so_far(first)) and so_far(first).startswith(SLOW_REPLY)

    unknown_words = text_of(unknown).replace(UNKNOWN_JOB, "ID")
    for refused in (bob_reads, bob_cancels):
        assert refused.is_error and refused.structured_content is None
        assert text_of(refused).replace(job_id, "ID") == unknown_words, "another's job reads as none"
    assert "job_id: there is no job ID of yours" in unknown_words
    assert job_of(after_bob)["status"] == "working", "bob's cancel did not stop it"

    assert not cancelling.is_error, text_of(cancelling)
    assert job_of(cancelled)["status"] == "cancelled" and not cancelled.is_error
    assert f"Job {job_id} was cancelled" in text_of(cancelled)
    assert so_far(cancelled).startswith(so_far(grown)), "its answer so far is kept"
    assert record.disconnected_at is not None, "the upstream saw the call go away"
    assert settled["calls"] == 1 and settled["cost_usd"] > 0
    assert "cancel asked through another process" in a.logs()


# --- the Inspector CLI, one run to start a job and one to read it ---------------------------------


async def test_the_inspector_starts_a_job_in_one_run_and_reads_its_result_in_another(
    paced: RunningSandbox, api_key: str, tmp_path: Path
) -> None:
    env = {**upstream_env(paced, api_key), "NAIVE_AUTH_TOKENS": json.dumps([ALICE])}
    with http_server(tmp_path, env) as server:
        connection = [
            "--transport",
            "http",
            "--server-url",
            server.url,
            "--header",
            f"Authorization: Bearer {ALICE}",
        ]

        def call(tool: str, *pairs: str) -> dict[str, Any]:
            run = run_inspector(
                tmp_path, *connection, "--method", "tools/call", "--tool-name", tool, "--tool-arg", *pairs
            )
            return result_of(run)

        started = await anyio.to_thread.run_sync(call, "naive_llm_chat", "prompt=later", "background=true")
        job_id = started["structuredContent"]["job"]["job_id"]
        finished = await anyio.to_thread.run_sync(
            call, "naive_llm_result", f"job_id={job_id}", "wait_seconds=50"
        )
        async with connect(server, ALICE) as client:
            plain = await client.call_tool("naive_llm_chat", {"prompt": "later"})

    assert started["isError"] is False and started["structuredContent"]["job"]["status"] == "working"
    assert f'naive_llm_result(job_id="{job_id}"' in started["content"][0]["text"]
    assert finished["isError"] is False
    assert finished["content"][0]["text"] == text_of(plain) == f"Sandbox reply from {DEFAULT_MODEL}: later"
    assert plain.structured_content is not None
    assert finished["structuredContent"]["text"] == plain.structured_content["text"]
    assert finished["structuredContent"]["usage"] == plain.structured_content["usage"]


# --- the Python SDK's client over stdio ---------------------------------------------------------


async def test_the_sdk_client_over_stdio_starts_a_job_and_gets_its_result_in_one_session(
    paced: RunningSandbox, api_key: str, errlog: TextIO
) -> None:
    async with naive_mcp(errlog, upstream_env(paced, api_key)) as client:
        job_id = await start(client, "over stdio")
        finished = await result(client, job_id, wait_seconds=50)
        plain = await client.call_tool("naive_llm_chat", {"prompt": "over stdio"})
        compared = await client.call_tool(
            "naive_llm_compare",
            {"prompt": "both", "models": [DEFAULT_MODEL, "openai/gpt-5.4"], "background": True},
        )
        assert compared.structured_content is not None, text_of(compared)
        both = await result(client, job_of(compared)["job_id"], wait_seconds=50)

    assert not finished.is_error
    assert text_of(finished) == text_of(plain) == f"Sandbox reply from {DEFAULT_MODEL}: over stdio"
    assert finished.structured_content is not None and plain.structured_content is not None
    assert finished.structured_content["usage"] == plain.structured_content["usage"]
    assert not both.is_error and both.structured_content is not None
    assert [answer["model_asked"] for answer in both.structured_content["answers"]] == [
        DEFAULT_MODEL,
        "openai/gpt-5.4",
    ]
