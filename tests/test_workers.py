"""`--workers N`: stateless streamable HTTP served by N processes on one socket and one store.

What a worker cannot share is refused at start (exit 2, one line naming the setting and the
fix). The rest runs real `naive-mcp` processes over loopback against the sandbox: which worker
answered a call is read from Linux's /proc (the worker holding the server's end of the call's
connection), never guessed from timing.
"""

from __future__ import annotations

import hashlib
import inspect
import os
import re
import resource
import signal
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors.multiprocess import Multiprocess, Process

from bench import loadgen
from bench.upstream import connection_holders, free_port, process_tree
from naive_mcp.cli import main
from naive_mcp.sandbox import RunningSandbox
from naive_mcp.settings import MAX_WORKERS
from naive_mcp.workers import _Supervisor, _Worker
from tests.conftest import NAIVE_MCP, upstream_env
from tests.remote import HttpServer, http_server

WAIT = 120  # generous, for a busy machine; no test is paced by it
# What finds the workers' connections: a call that spends nothing (none counts against a cap).
PROBE = loadgen.Call("naive_search_primitives", {})
SANDBOX_CREDITS_PER_USD = 2.1


# --- refused at start ------------------------------------------------------------------------


def refusal(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """What `naive-mcp ARGS` says on stderr as it exits 2 (in this process: it stops before serving)."""
    with pytest.raises(SystemExit) as exited:
        main(list(args))
    assert exited.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("naive-mcp: bad setting: NAIVE_WORKERS: "), lines[0]
    return lines[0]


@pytest.mark.parametrize(
    ("args", "fix"),
    [
        ((), "set NAIVE_TRANSPORT=streamable-http with NAIVE_STATELESS=true (--stateless)"),
        (("--transport", "stdio"), "stdio is one client's pipe to one process"),
        (("--transport", "streamable-http"), "Add --stateless (NAIVE_STATELESS=true)"),
        (
            ("--transport", "streamable-http"),
            "replicas of one worker each behind haproxy (deploy/haproxy.cfg)",
        ),
        (("--transport", "sse"), "a legacy SSE session lives in one process"),
        (("--transport", "sse"), "Serve NAIVE_TRANSPORT=streamable-http with --stateless"),
        (("--transport", "sse"), "behind haproxy (deploy/haproxy.cfg)"),
        (
            ("--transport", "streamable-http", "--stateless", "--store", "memory"),
            "NAIVE_STORE=memory is each process's own: a cap would hold per worker, not in all",
        ),
    ],
)
def test_two_workers_are_refused_where_state_lives_in_one_process(
    capsys: pytest.CaptureFixture[str], args: tuple[str, ...], fix: str
) -> None:
    assert fix in refusal(capsys, "--workers", "2", *args)


def test_two_workers_on_the_sandbox_need_a_store_they_share(capsys: pytest.CaptureFixture[str]) -> None:
    line = refusal(capsys, "--sandbox", "--transport", "streamable-http", "--stateless", "--workers", "2")
    assert "--sandbox keeps its state in each process's memory unless one is named: set NAIVE_STORE" in line


@pytest.mark.parametrize(
    ("value", "what"),
    [
        ("0", "should be greater than or equal to 1"),
        ("-3", "should be greater than or equal to 1"),
        ("2.5", "should be a valid integer"),
        ("two", "should be a valid integer"),
        (str(MAX_WORKERS + 1), f"at most {MAX_WORKERS}: each worker is a whole server process"),
        ("100000", f"at most {MAX_WORKERS}"),
    ],
)
def test_a_bad_number_of_workers_is_refused_naming_the_setting(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, value: str, what: str
) -> None:
    args = ("--transport", "streamable-http", "--stateless")
    assert what in refusal(capsys, *args, "--workers", value)
    monkeypatch.setenv("NAIVE_WORKERS", value)
    assert what in refusal(capsys, *args)


# --- what workers.py takes from uvicorn ------------------------------------------------------

# uvicorn 0.55's source of the Multiprocess methods that make a worker, which `_Supervisor`
# copies with its own worker in place of uvicorn's `Process`.
COPIED = {
    "init_processes": "6c69f2a36bf5",
    "restart_all": "438dec6d95be",
    "keep_subprocess_alive": "3ba4980aa33b",
    "handle_ttin": "ebfc0650752a",
}


def test_the_uvicorn_supervisor_internals_the_workers_rely_on_are_unchanged() -> None:
    """workers.py subclasses uvicorn's `Multiprocess` and its `Process`, which uvicorn does not
    export. If this fails, uvicorn changed: re-read uvicorn/supervisors/multiprocess.py and bring
    `_Supervisor` and `_Worker` in line (then update the digests)."""
    makers = {
        name
        for name, member in vars(Multiprocess).items()
        if inspect.isfunction(member) and "Process(" in inspect.getsource(member)
    }
    assert makers == set(COPIED), "uvicorn makes its workers somewhere else now"
    assert all(name in vars(_Supervisor) for name in makers)
    digests = {
        name: hashlib.sha256(inspect.getsource(getattr(Multiprocess, name)).encode()).hexdigest()[:12]
        for name in makers
    }
    assert digests == COPIED, "uvicorn changed a method that _Supervisor copies"
    # The worker: made with (config, sockets), its target run in the child, the ping pipe's two
    # ends, and a `server` whose `started` answers the ping.
    assert list(inspect.signature(Process.__init__).parameters) == ["self", "config", "sockets"]
    assert "get_subprocess(config, self.target, sockets)" in inspect.getsource(Process.__init__)
    assert "self.parent_conn, self.child_conn = Pipe()" in inspect.getsource(Process.__init__)
    assert "self.child_conn.send(self.server.started)" in inspect.getsource(Process.pong)
    assert "self.pong()" in inspect.getsource(Process.always_pong)
    assert isinstance(inspect.getattr_static(Process, "server"), property)
    assert issubclass(_Worker, Process) and issubclass(_Supervisor, Multiprocess)
    assert STARTUP_FAILURE == 3


# --- real processes --------------------------------------------------------------------------


def worker_pids(supervisor: int) -> set[int]:
    """The supervisor's workers: its children that multiprocessing spawned (not its resource tracker)."""
    pids = set()
    for pid in process_tree(supervisor)[1:]:
        try:
            if b"--multiprocessing-fork" in Path(f"/proc/{pid}/cmdline").read_bytes():
                pids.add(pid)
        except OSError:
            continue
    return pids


def serving_pids(server: HttpServer) -> set[int]:
    """The processes that logged, at start, that they serve (each worker does, with its pid)."""
    return {
        int(pid) for pid in re.findall(r" \[(\d+)\] naive_mcp\.remote: naive-mcp serving ", server.logs())
    }


def gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state in ("Z", "X")  # a zombie: it has exited, and its parent has not reaped it yet


async def until(condition: Callable[[], bool], what: str) -> None:
    """Wait for `condition`, looking again every 50 ms, up to a generous bound."""
    with anyio.fail_after(WAIT):
        while not condition():  # noqa: ASYNC110 - other processes, seen in /proc: nothing to wait on
            await anyio.sleep(0.05)


async def serving_workers(
    server: HttpServer, count: int = 2, not_these: frozenset[int] = frozenset()
) -> set[int]:
    """Wait until the supervisor has `count` workers (none of `not_these`), each of which has said
    it serves; their pids."""

    def ready() -> bool:
        workers = worker_pids(server.process.pid)
        return len(workers) == count and not workers & not_these and workers <= serving_pids(server)

    await until(ready, f"{count} workers serving")
    return worker_pids(server.process.pid)


@asynccontextmanager
async def one_connection_on_each(
    server: HttpServer, workers: set[int]
) -> AsyncIterator[dict[int, loadgen.Connection]]:
    """A kept-alive connection held by each of `workers`: connections are opened one after another
    (the kernel gives each to whichever worker accepts it first), each made to carry a call so
    that it has been accepted, until every worker holds one."""
    endpoint = loadgen.Endpoint.of(server.url)
    held: dict[int, loadgen.Connection] = {}
    spare: list[loadgen.Connection] = []
    try:
        with anyio.fail_after(WAIT):
            for _ in range(200):
                connection = await loadgen.Connection.open(endpoint, PROBE, stateful=False)
                assert await connection.call(), "a call on a new connection is answered"
                holders = connection_holders(endpoint.port, [connection.local_port], workers)
                holder = holders.get(connection.local_port)
                assert holder in workers, "a worker holds the connection it answered on"
                if holder in held:
                    spare.append(connection)
                else:
                    held[holder] = connection
                if len(held) == len(workers):
                    break
        assert set(held) == workers, f"200 connections all landed on {set(held)}"
        yield held
    finally:
        for connection in [*held.values(), *spare]:
            await connection.close()


async def answer(connection: loadgen.Connection, arguments: dict[str, Any]) -> dict[str, Any]:
    """The result of one naive_llm_chat call on `connection`."""
    message = {
        "jsonrpc": "2.0",
        "id": 9,
        "method": "tools/call",
        "params": {"name": "naive_llm_chat", "arguments": arguments},
    }
    with anyio.fail_after(WAIT):
        response = await connection.exchange(connection.build("POST", message))
    assert response.status == 200, response.body
    answered = response.message()
    assert answered is not None and "result" in answered, response.body
    result: dict[str, Any] = answered["result"]
    return result


def text(result: dict[str, Any]) -> str:
    return str(result["content"][0]["text"])


def store_env(sandbox: RunningSandbox, api_key: str, tmp_path: Path) -> dict[str, str]:
    return {**upstream_env(sandbox, api_key), "NAIVE_STORE": str(tmp_path / "store.sqlite3")}


@contextmanager
def two_workers(tmp_path: Path, env: dict[str, str]) -> Iterator[HttpServer]:
    """`naive-mcp --stateless --workers 2` against the sandbox, on a SQLite file."""
    with http_server(tmp_path, env, "--stateless", "--workers", "2") as server:
        yield server


@pytest.mark.slow
@pytest.mark.anyio
async def test_both_workers_answer_calls_and_sigterm_stops_every_one(
    sandbox: RunningSandbox, api_key: str, tmp_path: Path
) -> None:
    with two_workers(tmp_path, store_env(sandbox, api_key, tmp_path)) as server:
        workers = await serving_workers(server)
        async with one_connection_on_each(server, workers) as held:
            results = {
                pid: await answer(connection, {"prompt": f"to {pid}"}) for pid, connection in held.items()
            }
        server.process.send_signal(signal.SIGTERM)
        status = await anyio.to_thread.run_sync(server.process.wait, WAIT)
        await until(lambda: all(gone(pid) for pid in workers), "every worker gone")
        logs = server.logs()

    for pid, result in results.items():
        assert not result["isError"] and text(result).endswith(f"to {pid}"), "each worker answered its call"
    assert status == 0, logs
    assert f"[{server.process.pid}] naive_mcp.workers: naive-mcp serving streamable-http on" in logs
    assert "(stateless) in 2 worker processes" in logs
    assert serving_pids(server) == workers, "each worker said at start that it serves"
    for pid in workers:
        assert f"[{pid}] naive_mcp.remote: naive-mcp stopped" in logs, "each worker drained and stopped"
    assert f"[{server.process.pid}] naive_mcp.workers: naive-mcp stopped: every worker has" in logs
    assert api_key not in logs


@pytest.mark.slow
@pytest.mark.anyio
async def test_a_credit_cap_set_on_the_server_holds_across_its_workers(
    sandbox: RunningSandbox, api_key: str, tmp_path: Path
) -> None:
    # The cap fits one call's worst case (50 tokens of openai/gpt-5-mini), and a few of what a
    # call settles for: spending through one worker runs it out for the other too.
    env = {
        **store_env(sandbox, api_key, tmp_path),
        "NAIVE_MAX_TOTAL_CREDITS": "0.0003",
        "NAIVE_CREDITS_PER_USD": str(SANDBOX_CREDITS_PER_USD),
    }
    arguments = {"prompt": "hi", "model": "openai/gpt-5-mini", "max_tokens": 50}
    with two_workers(tmp_path, env) as server:
        workers = await serving_workers(server)
        async with one_connection_on_each(server, workers) as held:
            spending, other = (held[pid] for pid in sorted(workers))
            spent = []
            while not (result := await answer(spending, arguments))["isError"]:
                spent.append(result)
                assert len(spent) < 50, "the cap never ran out"
            through_other = await answer(other, arguments)
    billed = sandbox.sandbox.ledger.generations(api_key)

    assert "NAIVE_MAX_TOTAL_CREDITS" in text(result), text(result)
    assert through_other["isError"], "the other worker counts what was spent through the first"
    assert "NAIVE_MAX_TOTAL_CREDITS (0.0003;" in text(through_other), text(through_other)
    assert spent, "the calls that fit are answered"
    assert len(billed) == len(spent), "no refused call reached the upstream"


@pytest.mark.slow
@pytest.mark.anyio
async def test_a_worker_killed_with_sigkill_is_replaced_and_service_goes_on(
    sandbox: RunningSandbox, api_key: str, tmp_path: Path
) -> None:
    with two_workers(tmp_path, store_env(sandbox, api_key, tmp_path)) as server:
        first = await serving_workers(server)
        killed = min(first)
        os.kill(killed, signal.SIGKILL)
        now = await serving_workers(server, not_these=frozenset({killed}))
        async with one_connection_on_each(server, now) as held:
            results = [await answer(connection, {"prompt": "after"}) for connection in held.values()]
        logs = server.logs()

    assert first - now == {killed} and len(now - first) == 1, "the killed worker's place went to a new one"
    assert all(not result["isError"] for result in results), "the survivor and the new worker answer"
    assert f"worker [{killed}] died (exit status -9): starting another" in logs


@pytest.mark.slow
@pytest.mark.anyio
async def test_sighup_replaces_every_worker_one_by_one_and_service_goes_on(
    sandbox: RunningSandbox, api_key: str, tmp_path: Path
) -> None:
    with two_workers(tmp_path, store_env(sandbox, api_key, tmp_path)) as server:
        first = await serving_workers(server)
        server.process.send_signal(signal.SIGHUP)
        now = await serving_workers(server, not_these=frozenset(first))
        await until(lambda: all(gone(pid) for pid in first), "the old workers gone")
        async with one_connection_on_each(server, now) as held:
            results = [await answer(connection, {"prompt": "after"}) for connection in held.values()]
        logs = server.logs()
    assert all(not result["isError"] for result in results)
    for pid in first:
        assert f"[{pid}] naive_mcp.remote: naive-mcp stopped" in logs, "an old worker drained and stopped"


@pytest.mark.slow
@pytest.mark.anyio
async def test_workers_stop_when_their_supervisor_is_killed(
    sandbox: RunningSandbox, api_key: str, tmp_path: Path
) -> None:
    with two_workers(tmp_path, store_env(sandbox, api_key, tmp_path)) as server:
        workers = await serving_workers(server)
        server.process.kill()  # SIGKILL: no chance to stop them
        await until(lambda: all(gone(pid) for pid in workers), "every worker gone")
        logs = server.logs()
    for pid in workers:
        assert f"[{pid}] naive_mcp.workers: the supervisor is gone: stopping" in logs
        assert f"[{pid}] naive_mcp.remote: naive-mcp stopped" in logs, "an orphan drains and stops"


def _forty_files() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (40, 40))


@pytest.mark.slow
def test_workers_that_cannot_start_stop_the_server_with_status_3(
    sandbox: RunningSandbox, api_key: str, tmp_path: Path
) -> None:
    # 40 files: the supervisor starts, and each worker finds no room for HTTP connections.
    run = subprocess.run(
        [
            str(NAIVE_MCP),
            "--transport",
            "streamable-http",
            "--stateless",
            "--workers",
            "2",
            "--port",
            str(free_port()),
        ],
        env={"PATH": os.environ["PATH"], **store_env(sandbox, api_key, tmp_path)},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=WAIT,
        preexec_fn=_forty_files,
    )
    assert run.returncode == STARTUP_FAILURE, run.stderr
    assert (
        "a worker could not start: the file-descriptor limit (40) leaves no room for HTTP connections"
        in run.stderr
    )
    assert "could not start: stopping" in run.stderr
    assert "died" not in run.stderr, "a worker that cannot start is not started again"
