"""The durable store: what NAIVE_STORE names, migrations, state that survives restarts and a
process killed mid-call, and state shared by several processes on one SQLite file."""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time
import uuid
from contextlib import suppress
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from mcp import Client
from mcp.types import CallToolResult

from naive_mcp.errors import ConfigurationError
from naive_mcp.sandbox import RunningSandbox, SandboxConfig, serve_in_thread
from naive_mcp.server import create_server
from naive_mcp.settings import Settings
from naive_mcp.store import CallRecord, CallResult, Figures, JobLimits, JobRecord, StoreLocation, owned_by
from naive_mcp.store.engine import SCHEMA_REVISION
from naive_mcp.store.store import Store
from tests.conftest import SESSION_TIMEOUT, TOOL_NAMES, make_settings, naive_mcp, upstream_env
from tests.helpers import text_of, usage_of
from tests.remote import connect, http_server
from tests.test_remote import sigterm_mid_call

pytestmark = pytest.mark.anyio

WAIT = 60  # generous, for a busy machine
# The sandbox bills usage.cost times 1.05, at $0.50 a credit.
SANDBOX_CREDITS_PER_USD = 2.1


# --- what NAIVE_STORE names ---------------------------------------------------------------------


def test_the_default_store_is_a_file_in_the_users_data_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", "/data/home")
    location = StoreLocation.parse(None)
    assert (location.kind, location.shown) == ("sqlite", "/data/home/naive-mcp/store.sqlite3")


def test_a_postgresql_url_is_shown_without_its_password() -> None:
    location = StoreLocation.parse("postgresql://naive:s3cr%40t@db.internal:5432/naive")
    assert location.kind == "postgresql"
    assert location.shown == "postgresql+psycopg://naive:***@db.internal:5432/naive"
    assert location.password == "s3cr@t"


@pytest.mark.parametrize("value", ["mysql://u:p@h/db", "redis://h"])
def test_an_unknown_kind_of_store_is_refused_naming_the_choices(value: str) -> None:
    with pytest.raises(ConfigurationError) as refused:
        StoreLocation.parse(value)
    assert refused.value.kind == "bad_store"
    assert "use a file path, `memory`, or postgresql://" in refused.value.message


async def test_a_new_store_is_migrated_and_one_newer_than_the_code_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state" / "store.sqlite3"
    store = await Store.open(StoreLocation.parse(str(path)))
    await store.aclose()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT version_num FROM alembic_version").fetchall() == [(SCHEMA_REVISION,)]
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        db.execute("UPDATE alembic_version SET version_num = '9999'")
    with pytest.raises(ConfigurationError) as refused:
        await Store.open(StoreLocation.parse(str(path)))
    assert refused.value.kind == "store_too_new"
    assert f"has schema revision 9999, newer than this naive-mcp knows (up to {SCHEMA_REVISION})" in (
        refused.value.message
    )


async def test_a_store_of_an_earlier_revision_is_migrated_forward_keeping_its_rows(tmp_path: Path) -> None:
    """A store made by the naive-mcp before threads (revision 0001) gains them, its ledger kept."""
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import create_engine

    import naive_mcp.store.engine as engine_module

    path = tmp_path / "store.sqlite3"
    config = Config()
    config.set_main_option("script_location", str(Path(engine_module.__file__).with_name("migrations")))
    with create_engine(f"sqlite:///{path}").begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0001")
    with sqlite3.connect(path) as db:
        db.execute(
            "INSERT INTO ledger (call_id, started_at, ended_at, key_digest, model_asked, credits_reported, "
            "outcome) VALUES ('c1', 1, 2, 'k', 'm', 0, 'answered')"
        )

    store = await Store.open(StoreLocation.parse(str(path)))
    await store.aclose()

    with sqlite3.connect(path) as db:
        assert db.execute("SELECT version_num FROM alembic_version").fetchall() == [(SCHEMA_REVISION,)]
        assert db.execute("SELECT call_id FROM ledger").fetchall() == [("c1",)]
        assert db.execute("SELECT count(*) FROM threads").fetchone() == (0,)
        assert db.execute("SELECT count(*) FROM jobs").fetchone() == (0,)


@pytest.mark.slow
async def test_a_store_that_cannot_be_opened_fails_the_call_and_never_shows_its_password(
    sandbox: RunningSandbox, api_key: str, errlog: Any
) -> None:
    password = f"pw-{uuid.uuid4().hex}"
    env = {
        **upstream_env(sandbox, api_key),
        "NAIVE_STORE": f"postgresql://naive:{password}@127.0.0.1:9/naive",
    }
    async with naive_mcp(errlog, env) as client:
        assert len((await client.list_tools()).tools) == len(TOOL_NAMES), "tools are listed without a store"
        result = await client.call_tool("naive_llm_chat", {"prompt": "hi"})
    errlog.flush()
    logs = await anyio.Path(errlog.name).read_text()
    assert result.is_error
    assert text_of(result).startswith("bad_store: cannot open the store at postgresql+psycopg://")
    assert "The operator must fix NAIVE_STORE" in text_of(result)
    assert password not in text_of(result) and password not in logs
    assert not sandbox.sandbox.ledger.requests(api_key), "nothing was sent upstream"


async def test_each_memory_store_is_its_own_migrated_database() -> None:
    """Memory stores start as copies of one migrated template: what one writes, no other sees."""
    memory = StoreLocation.parse("memory")
    first, second = await Store.open(memory), await Store.open(memory)
    try:
        await first.set_balance("key", 12.5)
        assert (await first.balance("key") or (None,))[0] == 12.5
        assert await second.balance("key") is None
        third = await Store.open(memory)  # its tables are there: reading them fails otherwise
        assert await third.balance("key") is None, "the template itself was never written to"
        await third.aclose()
    finally:
        await first.aclose()
        await second.aclose()


# --- one memory for several processes -----------------------------------------------------------


async def test_a_generation_made_through_one_process_is_waited_for_through_another(
    sandbox: RunningSandbox, api_key: str, tmp_path: Path
) -> None:
    settings = make_settings(sandbox, api_key, store=str(tmp_path / "shared.sqlite3"))
    async with Client(create_server(settings)) as first, Client(create_server(settings)) as second:
        chat = await first.call_tool("naive_llm_chat", {"prompt": "hi"})
        assert chat.structured_content is not None
        # The sandbox has no stats for 0.2 s after a completion: the second process waits them out.
        stats = await second.call_tool("naive_llm_generation", {"id": chat.structured_content["id"]})
        usage_first, usage_second = await usage_of(first), await usage_of(second)
    assert not stats.is_error, text_of(stats)
    assert usage_first == usage_second and usage_first["total"]["calls"] == 1


async def test_a_calls_transactions_wait_their_turn_on_the_loop_and_run_there(tmp_path: Path) -> None:
    """While another transaction of this process holds the SQLite file's turn, a call's own ones
    wait for it on the event loop and then run there. Sent to a worker thread instead, each made
    the next find the turn taken too, and under load every call paid the hop from then on."""
    store = await Store.open(StoreLocation.parse(str(tmp_path / "store.sqlite3")))
    holding, release = threading.Event(), threading.Event()
    ran_on: list[int] = []

    def hold() -> None:
        holding.set()
        release.wait(SESSION_TIMEOUT)

    def quick(_: object) -> None:
        ran_on.append(threading.get_ident())

    try:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(store._run, hold)
            await anyio.to_thread.run_sync(holding.wait, SESSION_TIMEOUT)
            for _ in range(3):
                tasks.start_soon(store._run_quick, quick)
            await anyio.wait_all_tasks_blocked()
            assert ran_on == []  # their turn has not come
            release.set()
    finally:
        release.set()
        await store.aclose()
    assert ran_on == [threading.get_ident()] * 3


async def test_a_call_waits_for_another_processes_write_lock_instead_of_failing(tmp_path: Path) -> None:
    """A call's transaction first tries the file on the event loop, without waiting for its lock;
    taken by another process, it waits for it on the worker thread, and nothing was done twice."""
    path = tmp_path / "shared.sqlite3"
    store = await Store.open(StoreLocation.parse(str(path)))
    other = sqlite3.connect(path, isolation_level=None)
    try:
        (call,) = _calls(1)
        held: list[list[float]] = []
        other.execute("BEGIN IMMEDIATE")  # another process, writing
        async with anyio.create_task_group() as group:

            async def reserve() -> None:
                held.append(await store.reserve([call], "owner", [("total", "all")], lambda _i, _f: 1.0))

            group.start_soon(reserve)
            await anyio.lowlevel.checkpoint()  # its attempt on the loop ran: it found the lock taken
            assert not held
            other.execute("COMMIT")
        assert held == [[1.0]]
        assert await store.settle(call, CallResult("answered", 0.5, credits_reported=True))
        assert other.execute("SELECT spent, reserved FROM caps").fetchall() == [(0.5, 0.0)]
    finally:
        other.close()
        await store.aclose()


@pytest.mark.slow
async def test_two_stdio_processes_on_one_sqlite_file_never_spend_past_the_cap(
    api_key: str, tmp_path: Path, errlog: Any
) -> None:
    # Each call's worst case is 100 tokens at $0.4/M and 2.1 credits per USD: 0.000084 credits.
    cap = 0.000084 * 5 + 0.00001
    with serve_in_thread(SandboxConfig(slow_chunk_delay=0.01, slow_words=20)) as slow:
        env = {
            **upstream_env(slow, api_key),
            "NAIVE_STORE": str(tmp_path / "shared.sqlite3"),
            "NAIVE_MAX_TOTAL_CREDITS": str(cap),
            "NAIVE_CREDITS_PER_USD": str(SANDBOX_CREDITS_PER_USD),
        }
        outcomes: list[CallToolResult] = []
        async with naive_mcp(errlog, env) as one, naive_mcp(errlog, env) as two:

            async def call(client: Client) -> None:
                arguments = {"prompt": "go", "model": "sandbox/slow", "max_tokens": 100}
                outcomes.append(await client.call_tool("naive_llm_chat", arguments))

            with anyio.fail_after(WAIT):
                async with anyio.create_task_group() as group:
                    for n in range(30):
                        group.start_soon(call, one if n % 2 else two)
            usage_one, usage_two = await usage_of(one), await usage_of(two)
        billed = slow.sandbox.ledger.generations(api_key)
    answered = [o for o in outcomes if not o.is_error]
    assert len(answered) >= 5, "the calls that fit are answered"
    assert all("NAIVE_MAX_TOTAL_CREDITS" in text_of(o) for o in outcomes if o.is_error)
    billed_credits = sum(g.total_cost for g in billed) * SANDBOX_CREDITS_PER_USD
    assert billed_credits <= cap, "the upstream's own billing stays within the cap"
    assert len(billed) == len(answered), "no refused call reached the upstream"
    assert usage_one == usage_two and usage_one["total"]["calls"] == len(answered)


# --- restarts ------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
async def test_caps_and_the_ledger_survive_a_restart(
    sandbox: RunningSandbox, api_key: str, tmp_path: Path, stop: signal.Signals
) -> None:
    # A long prompt, echoed back and cut at max_tokens: each call costs about the same.
    arguments = {"prompt": "x" * 2000, "model": "openai/gpt-5.2", "max_tokens": 50}
    async with Client(create_server(make_settings(sandbox, f"{api_key}_probe"))) as probe:
        one_call = (await probe.call_tool("naive_llm_chat", arguments)).structured_content
    assert one_call is not None
    cap = 2.8 * one_call["credits_used"]  # two calls fit, with the worst case of the second
    env = {
        **upstream_env(sandbox, api_key),
        "NAIVE_STORE": str(tmp_path / "store.sqlite3"),
        "NAIVE_MAX_TOTAL_CREDITS": str(cap),
        "NAIVE_CREDITS_PER_USD": str(SANDBOX_CREDITS_PER_USD),
        "NAIVE_CAP_WAIT": "0",
    }
    outcomes: list[CallToolResult] = []
    for _ in range(3):
        with http_server(tmp_path, env) as server:
            async with connect(server, terminate_on_close=False) as client:
                for _ in range(2):
                    outcomes.append(await client.call_tool("naive_llm_chat", arguments))
            server.process.send_signal(stop)
            server.process.wait(WAIT)
    with http_server(tmp_path, env) as server:
        async with connect(server) as client:
            usage = await usage_of(client)
    answered = [o for o in outcomes if not o.is_error]
    spent = sum(o.structured_content["credits_used"] for o in answered if o.structured_content)
    assert len(answered) == 2, "restarts did not start the caps at zero"
    assert spent <= cap
    assert all("NAIVE_MAX_TOTAL_CREDITS" in text_of(o) for o in outcomes if o.is_error)
    assert usage["total"]["calls"] == 2 == len(sandbox.sandbox.ledger.generations(api_key))
    assert usage["total"]["credits"] == pytest.approx(spent)
    assert usage["by_outcome"]["refused"]["calls"] == 4


@pytest.mark.slow
async def test_a_call_killed_mid_answer_is_settled_from_its_generation_by_the_next_process(
    api_key: str, tmp_path: Path
) -> None:
    env_extra = {
        "NAIVE_STORE": str(tmp_path / "store.sqlite3"),
        "NAIVE_STORE_LEASE": "1",
        "NAIVE_MAX_TOTAL_CREDITS": "10",
    }
    with serve_in_thread(SandboxConfig(slow_chunk_delay=0.05, slow_words=400)) as paced:
        env = {**upstream_env(paced, api_key), **env_extra}
        with http_server(tmp_path, env) as server:
            async with connect(server, terminate_on_close=False) as client:
                first = await client.call_tool("naive_llm_chat", {"prompt": "teach the rate"})
                assert not first.is_error, text_of(first)

            async def doomed() -> None:
                with suppress(Exception):  # its server is killed under it
                    async with connect(server, terminate_on_close=False) as client:
                        await client.call_tool("naive_llm_chat", {"prompt": "go", "model": "sandbox/slow"})

            async with anyio.create_task_group() as group:
                group.start_soon(doomed)
                record = await _first_chunk_sent(paced, api_key, "sandbox/slow")
                await _generation_id_written(tmp_path / "store.sqlite3")
                os.kill(server.process.pid, signal.SIGKILL)
                server.process.wait(WAIT)
        assert await anyio.to_thread.run_sync(record.stream_ended.wait, WAIT)
        killed = next(g for g in paced.sandbox.ledger.generations(api_key) if g.model == "sandbox/slow")
        with http_server(tmp_path, env) as server:
            async with connect(server) as client:
                with anyio.fail_after(WAIT):
                    # The next process settles it once the killed one's lease has run out.
                    while "cut_off" not in (usage := await usage_of(client))["by_outcome"]:  # noqa: ASYNC110
                        await anyio.sleep(0.1)
    cut_off = usage["by_outcome"]["cut_off"]
    assert killed.cancelled and killed.total_cost > 0, "the upstream billed the part it sent"
    assert cut_off["calls"] == 1
    assert cut_off["cost_usd"] == pytest.approx(killed.total_cost)
    assert cut_off["credits"] == pytest.approx(killed.total_cost * SANDBOX_CREDITS_PER_USD, rel=0.01)
    assert usage["total"]["calls"] == 2


async def _generation_id_written(path: Path) -> None:
    """Until the hold of the call in flight carries its generation id (written just after the
    first chunk named it)."""

    def written() -> bool:
        with sqlite3.connect(path) as db:
            return db.execute("SELECT 1 FROM holds WHERE generation_id IS NOT NULL").fetchone() is not None

    with anyio.fail_after(WAIT):
        while not await anyio.to_thread.run_sync(written):  # noqa: ASYNC110 - another process's database
            await anyio.sleep(0.02)


async def _first_chunk_sent(sandbox: RunningSandbox, api_key: str, model: str) -> Any:
    with anyio.fail_after(WAIT):
        while True:
            for record in sandbox.sandbox.ledger.requests(api_key):
                if (
                    isinstance(record.body, dict)
                    and record.body.get("model") == model
                    and record.first_chunk_at
                ):
                    return record
            await anyio.sleep(0.02)


async def test_fresh_stores_opened_at_once_in_one_process_are_all_migrated(tmp_path: Path) -> None:
    opened: list[Store] = []

    async def open_one(n: int) -> None:
        opened.append(await Store.open(StoreLocation.parse(str(tmp_path / f"store-{n}.sqlite3"))))

    async with anyio.create_task_group() as group:
        for n in range(4):
            group.start_soon(open_one, n)
    for store in opened:
        assert await store.rate() is None
        await store.aclose()
    assert len(opened) == 4


@pytest.mark.slow
async def test_a_call_cut_off_by_sigterm_is_in_the_ledger_at_what_the_upstream_billed(
    api_key: str, tmp_path: Path
) -> None:
    store = tmp_path / "store.sqlite3"
    with serve_in_thread(SandboxConfig(slow_chunk_delay=0.05, slow_words=3000)) as paced:
        env = {**upstream_env(paced, api_key), "NAIVE_STORE": str(store), "NAIVE_SHUTDOWN_GRACE": "1"}
        with http_server(tmp_path, env) as server:
            _, code = await sigterm_mid_call(server, wait_for_exit=True)
        cut = next(g for g in paced.sandbox.ledger.generations(api_key) if g.model == "sandbox/slow")
        with http_server(tmp_path, env) as server:
            async with connect(server) as client:
                usage = await usage_of(client)
    assert code == 0 and cut.cancelled and cut.total_cost > 0
    cancelled = usage["by_outcome"]["cancelled"]
    assert cancelled["calls"] == 1 == usage["total"]["calls"]
    assert cancelled["cost_usd"] == pytest.approx(cut.total_cost), "settled from the generation's stats"


def test_a_password_given_as_a_query_parameter_is_a_secret_and_never_shown() -> None:
    value = "postgresql://naive@db.internal/naive?password=Hunter2Secret&sslmode=require"
    location = StoreLocation.parse(value)
    assert "Hunter2Secret" not in location.shown and "sslmode=require" in location.shown
    assert "Hunter2Secret" in Settings(store=value).secrets()
    decoded = StoreLocation.parse("postgresql://naive:pa%2Fss%23word@db/naive")
    assert "pa/ss#word" in Settings(store="postgresql://naive:pa%2Fss%23word@db/naive").secrets()
    assert "pa/ss#word" not in decoded.shown and "pa%2Fss%23word" not in decoded.shown


# --- a set of calls reserved together (llm.compare's) --------------------------------------------


class _Full(Exception):
    pass


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def store_location(request: pytest.FixtureRequest, tmp_path: Path) -> StoreLocation:
    if request.param == "sqlite":
        return StoreLocation.parse(str(tmp_path / "store.sqlite3"))
    return StoreLocation.parse(request.getfixturevalue("postgres_url"))


def _calls(count: int) -> list[CallRecord]:
    return [
        CallRecord(
            call_id=uuid.uuid4().hex,
            started_at=time.time(),
            key_digest="key",
            user_id=None,
            project_id=None,
            model_asked=f"openai/model-{index}",
        )
        for index in range(count)
    ]


async def test_a_set_of_calls_is_reserved_whole_each_decided_on_what_the_ones_before_it_hold(
    store_location: StoreLocation,
) -> None:
    rows = [("total", "all"), ("key:key", "all")]
    store = await Store.open(store_location)
    try:
        seen: list[float] = []

        def decide(index: int, figures: Figures) -> float:
            seen.append(figures.rows[("total", "all")][1])
            return 1.0 + index

        admitted = _calls(3)
        assert await store.reserve(admitted, "owner", rows, decide) == [1.0, 2.0, 3.0]
        assert seen == [0.0, 1.0, 3.0], "each call sees the holds of the calls before it"

        def refuse_the_third(index: int, figures: Figures) -> float:
            if index == 2:
                raise _Full
            return 1.0

        refused = _calls(3)
        with pytest.raises(_Full):
            await store.reserve(refused, "owner", rows, refuse_the_third)
        for call in refused:  # nothing of the refused set was written: no hold to settle
            assert not await store.settle(call, CallResult("failed", 0.0, credits_reported=False))

        for call, spent in zip(admitted, (0.5, 0.0, 1.5), strict=True):
            assert await store.settle(call, CallResult("answered", spent, credits_reported=True))
        after: list[tuple[float, float]] = []

        def look(index: int, figures: Figures) -> float:
            after.append(figures.rows[("key:key", "all")])
            return 0.0

        (probe,) = _calls(1)
        await store.reserve([probe], "owner", rows, look)
        await store.settle(probe, CallResult("failed", 0.0, credits_reported=False))
    finally:
        await store.aclose()
    assert after == [(2.0, 0.0)], "each settled on its own: spent what it cost, nothing held"


async def test_sets_reserved_at_once_never_overdraw_a_cap(store_location: StoreLocation) -> None:
    # Ten sets of three calls of 1 credit each, at once, under a cap of 10: three sets fit whole.
    cap, rows = 10.0, [("total", "all"), ("key:key", "all")]
    store = await Store.open(store_location)
    admitted: list[list[float]] = []
    try:

        def decide(index: int, figures: Figures) -> float:
            spent, reserved = figures.rows[("total", "all")]
            if spent + reserved + 1.0 > cap:
                raise _Full
            return 1.0

        async def reserve_a_set() -> None:
            with suppress(_Full):
                admitted.append(await store.reserve(_calls(3), "owner", rows, decide))

        async with anyio.create_task_group() as group:
            for _ in range(10):
                group.start_soon(reserve_a_set)
    finally:
        await store.aclose()
    assert admitted == [[1.0, 1.0, 1.0]] * 3


# --- jobs, on each engine -------------------------------------------------------------------------


def _job(runner: str, *, user: str | None = None, key: str = "key", status: str = "working") -> JobRecord:
    now = time.time()
    return JobRecord(
        id=f"job_{uuid.uuid4().hex}",
        key_digest=key,
        user_id=user,
        project_id=None,
        tool="naive_llm_chat",
        status=status,  # type: ignore[arg-type]
        status_message=None,
        partial_text=None,
        result=None,
        created_at=now,
        updated_at=now,
        expires_at=now + 60,
        runner=runner,
        cancel_asked_at=None,
    )


async def test_a_caller_keeps_its_limit_of_jobs_and_only_its_own(store_location: StoreLocation) -> None:
    store = await Store.open(store_location)
    try:
        limits = JobLimits(ttl=60, per_owner=2)
        first, second = _job("me"), _job("me")
        assert await store.add_job(first, limits) is None
        assert await store.add_job(second, limits) is None
        assert await store.add_job(_job("me"), limits) == 2, "two working: no third"
        assert await store.add_job(_job("me", user="usr_other"), limits) is None, "another tenant's own"

        await store.finish_job(first.id, "completed", None, "done", '{"content": []}', ttl=60)
        third = _job("me")
        assert await store.add_job(third, limits) is None, "the ended one is forgotten to make room"
        mine = owned_by("key", None, None)
        assert await store.job(first.id, mine) is None
        assert {job.id for job in await store.jobs(mine, 10)} == {second.id, third.id}
        assert await store.job(second.id, owned_by("key", "usr_other", None)) is None
        assert await store.job(second.id, owned_by("other-key", None, None)) is None
    finally:
        await store.aclose()


async def test_a_cancel_asked_anywhere_is_seen_and_a_dead_processs_jobs_fail_keeping_their_text(
    store_location: StoreLocation,
) -> None:
    store = await Store.open(store_location)
    try:
        limits = JobLimits(ttl=60, per_owner=10)
        await store.renew_lease("alive", 60)
        alive, dead = _job("alive"), _job("dead")
        for job in (alive, dead):
            assert await store.add_job(job, limits) is None
        await store.job_progress(dead.id, "Still working (3 s)", "the answer so far")
        mine = owned_by("key", None, None)
        asked = await store.ask_job_cancel(alive.id, mine)
        assert asked is not None and asked.cancel_asked_at is not None
        assert await store.ask_job_cancel(alive.id, owned_by("key", "usr_other", None)) is None
        assert await store.job_cancels([alive.id, dead.id]) == [alive.id]

        await store.claim_orphans("sweeper")

        found = await store.job(dead.id, mine)
        assert found is not None and found.status == "failed"
        assert found.partial_text == "the answer so far" and "stopped" in (found.status_message or "")
        still = await store.job(alive.id, mine)
        assert still is not None and still.status == "working", "its process's lease is live"
    finally:
        await store.aclose()


async def test_an_ended_job_is_deleted_by_the_sweep_once_it_expired(store_location: StoreLocation) -> None:
    store = await Store.open(store_location)
    try:
        await store.renew_lease("me", 60)
        ended, working = _job("me"), _job("me")
        for job in (ended, working):
            assert await store.add_job(job, JobLimits(ttl=60, per_owner=10)) is None
        await store.finish_job(ended.id, "completed", None, "", "{}", ttl=0.0)
        await store.claim_orphans("me")
        mine = owned_by("key", None, None)
        assert await store.job(ended.id, mine) is None
        assert await store.job(working.id, mine) is not None, "a working job is kept however old"
    finally:
        await store.aclose()
