"""What one client can make the HTTP server hold (sessions, SSE streams), calls whose client
dropped its connection, and requests with a malformed JSON-RPC id (issue 11, holes 2, 3, 10).

Each attack runs against a real `naive-mcp` on loopback, bounded in count; the figures it
measured are printed (`pytest -s`), never asserted against the clock.
"""

from __future__ import annotations

import json
import socket
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager

from naive_mcp.remote import build_app
from naive_mcp.sandbox import RunningSandbox, SandboxConfig, serve_in_thread
from naive_mcp.server import create_server
from naive_mcp.sessions import SdkSessions, SessionCounts, SessionLimits
from tests.conftest import make_settings, upstream_env
from tests.mcp_wire import (
    HEADERS,
    INITIALIZED,
    WAIT,
    EventStream,
    bearer,
    ended,
    http_client,
    initialize,
    last_chat,
    post,
    streamed,
    tools_call,
)
from tests.remote import HttpServer, http_server

pytestmark = pytest.mark.anyio

ALICE, BOB, CAROL, DAVE = (f"{name}-token-0123456789" for name in ("alice", "bob", "carol", "dave"))


def report(figure: str) -> None:
    """A figure an attack measured, for the reader of the run (`pytest -s`); never asserted."""
    print(f"\n[figure] {figure}")  # noqa: T201 - a test's output, not the protocol's


def tokens(*names: str) -> dict[str, str]:
    return {"NAIVE_AUTH_TOKENS": json.dumps(list(names))}


async def open_session(http: httpx2.AsyncClient, url: str, token: str | None) -> httpx2.Response:
    return await post(http, url, initialize(), bearer(token))


def session_of(opened: httpx2.Response, token: str | None = None) -> dict[str, str]:
    return {"mcp-session-id": opened.headers["mcp-session-id"], **bearer(token)}


MODERN = "2026-07-28"


def in_2026_era(message: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """A 2026-era request (no session, no handshake: the envelope rides in `_meta`) and its headers."""
    params = message.setdefault("params", {})
    params.setdefault("_meta", {}).update(
        {
            "io.modelcontextprotocol/protocolVersion": MODERN,
            "io.modelcontextprotocol/clientInfo": {"name": "raw", "version": "0"},
            "io.modelcontextprotocol/clientCapabilities": {},
        }
    )
    return message, {"MCP-Protocol-Version": MODERN, "Mcp-Method": message["method"]}


def error_of(response: httpx2.Response) -> str:
    body = response.json()
    assert body["id"] is None and body["jsonrpc"] == "2.0"
    message: str = body["error"]["message"]
    return message


# --- hole 2: sessions and SSE streams, in all and per client ---------------------------------------


@pytest.mark.slow
async def test_one_token_cannot_take_every_session_and_others_still_get_theirs(
    sandbox: RunningSandbox, api_key: str, tmp_path: Path
) -> None:
    env = {
        **upstream_env(sandbox, api_key),
        **tokens(ALICE, BOB, CAROL, DAVE),
        "NAIVE_MAX_SESSIONS": "25",
        "NAIVE_MAX_SESSIONS_PER_CLIENT": "10",
    }
    with http_server(tmp_path, env) as server:
        async with http_client(limits=httpx2.Limits(max_connections=200)) as http:
            # The attack: 100 opening requests at once from one token.
            opened: list[httpx2.Response] = []

            async def one() -> None:
                opened.append(await open_session(http, server.url, ALICE))

            async with anyio.create_task_group() as group:
                for _ in range(100):
                    group.start_soon(one)
            alices = [r for r in opened if r.status_code == 200]
            refused = [r for r in opened if r.status_code != 200]

            started = time.monotonic()
            bobs = await open_session(http, server.url, BOB)
            bob_waited = time.monotonic() - started
            works = await post(http, server.url, INITIALIZED, session_of(bobs, BOB))

            # Room again for alice once she ends a session of hers.
            ended_one = await http.delete(server.url, headers={**HEADERS, **session_of(alices[0], ALICE)})
            again = await open_session(http, server.url, ALICE)

            # The server's own limit: 10 + 1 (bob) + 10 (carol) + 4 (dave) = 25, the 26th is refused.
            carols = [await open_session(http, server.url, CAROL) for _ in range(10)]
            daves = [await open_session(http, server.url, DAVE) for _ in range(5)]

    report(
        f"sessions per client: alice opened {len(alices)} of 100 at once ({len(refused)} refused); "
        f"bob opened his in {bob_waited * 1000:.0f} ms"
    )
    assert len(alices) == 10 and len(refused) == 90
    assert {r.status_code for r in refused} == {429}
    assert "NAIVE_MAX_SESSIONS_PER_CLIENT" in error_of(refused[0]) and "DELETE" in error_of(refused[0])
    assert bobs.status_code == 200 and works.status_code == 202
    assert ended_one.status_code == 200 and again.status_code == 200
    assert [r.status_code for r in carols] == [200] * 10
    assert [r.status_code for r in daves] == [200] * 4 + [503]
    assert "NAIVE_MAX_SESSIONS" in error_of(daves[-1])
    assert ALICE not in server.logs()


@pytest.mark.slow
async def test_an_idle_session_expires_and_gives_its_client_room_again(
    sandbox: RunningSandbox, api_key: str, tmp_path: Path
) -> None:
    env = {
        **upstream_env(sandbox, api_key),
        **tokens(ALICE),
        "NAIVE_MAX_SESSIONS_PER_CLIENT": "2",
        "NAIVE_SESSION_IDLE_TIMEOUT": "0.5",
    }
    with http_server(tmp_path, env) as server:
        async with http_client() as http:
            first = await open_session(http, server.url, ALICE)
            second = await open_session(http, server.url, ALICE)
            refused = await open_session(http, server.url, ALICE)
            # No request in flight holds either session (opening another touches neither): both
            # expire, and the client has room again.
            with anyio.fail_after(WAIT):
                while (again := await open_session(http, server.url, ALICE)).status_code == 429:  # noqa: ASYNC110
                    await anyio.sleep(0.05)
            gone = await post(http, server.url, INITIALIZED, session_of(first, ALICE))

    assert [first.status_code, second.status_code, refused.status_code] == [200, 200, 429]
    assert again.status_code == 200 and gone.status_code == 404
    assert "idle timeout" in server.logs()


@pytest.mark.slow
async def test_without_auth_the_one_client_gets_the_totals_not_the_per_client_limits(
    sandbox: RunningSandbox, api_key: str, tmp_path: Path
) -> None:
    """Without auth every client is the operator's one: a per-client limit there would only
    shrink the server (the bench's 200 calls at once got 429 past 100)."""
    env = {**upstream_env(sandbox, api_key), "NAIVE_MAX_SESSIONS": "4", "NAIVE_MAX_SESSIONS_PER_CLIENT": "2"}
    with http_server(tmp_path, env) as server:
        async with http_client() as http:
            opened = [await open_session(http, server.url, None) for _ in range(5)]
    assert [response.status_code for response in opened] == [200, 200, 200, 200, 503]
    assert "NAIVE_MAX_SESSIONS" in error_of(opened[-1])


@asynccontextmanager
async def sse_stream(
    stack: AsyncExitStack, url: str, token: str | None, headers: dict[str, str] | None = None
) -> AsyncIterator[httpx2.Response]:
    """A GET stream held open (its own connection), or the refusal it got."""
    http = await stack.enter_async_context(http_client())
    response = await stack.enter_async_context(
        http.stream("GET", url, headers={"Accept": "text/event-stream", **bearer(token), **(headers or {})})
    )
    if response.status_code != 200:
        await response.aread()
    yield response


async def hold_streams(
    stack: AsyncExitStack, url: str, token: str | None, count: int, headers: dict[str, str] | None = None
) -> list[httpx2.Response]:
    held = []
    for _ in range(count):
        held.append(await stack.enter_async_context(sse_stream(stack, url, token, headers)))
    return held


@pytest.mark.slow
async def test_legacy_sse_streams_are_limited_per_client_and_in_all(
    sandbox: RunningSandbox, api_key: str, tmp_path: Path
) -> None:
    env = {
        **upstream_env(sandbox, api_key),
        **tokens(ALICE, BOB, CAROL),
        "NAIVE_MAX_SSE_STREAMS": "8",
        "NAIVE_MAX_SSE_STREAMS_PER_CLIENT": "5",
    }
    with http_server(tmp_path, env, transport="sse") as server:
        async with AsyncExitStack() as bobs_and_carols:
            async with AsyncExitStack() as alices_streams:
                alices = await hold_streams(alices_streams, server.url, ALICE, 30)
                started = time.monotonic()
                bobs = await hold_streams(bobs_and_carols, server.url, BOB, 3)
                bob_waited = time.monotonic() - started
                carol_refused = await hold_streams(bobs_and_carols, server.url, CAROL, 1)
            # alice's streams closed: room for carol again (once the server has seen them go)
            with anyio.fail_after(WAIT):
                while True:
                    async with AsyncExitStack() as attempt:
                        (carols,) = await hold_streams(attempt, server.url, CAROL, 1)
                        if carols.status_code == 200:
                            break
                    await anyio.sleep(0.05)

    statuses = [r.status_code for r in alices]
    report(
        f"SSE streams per client: alice held {statuses.count(200)} of 30; bob's 3 opened in {bob_waited * 1000:.0f} ms"
    )
    assert statuses == [200] * 5 + [429] * 25
    assert [r.status_code for r in bobs] == [200] * 3
    assert carol_refused[0].status_code == 503
    assert "NAIVE_MAX_SSE_STREAMS_PER_CLIENT" in alices[-1].json()["error"]["message"]
    assert "NAIVE_MAX_SSE_STREAMS" in carol_refused[0].json()["error"]["message"]


@pytest.mark.slow
@pytest.mark.parametrize("stateless", [False, True], ids=["stateful", "stateless"])
async def test_streamable_http_get_streams_count_as_sse_streams(
    sandbox: RunningSandbox, api_key: str, tmp_path: Path, stateless: bool
) -> None:
    env = {**upstream_env(sandbox, api_key), **tokens(ALICE, BOB), "NAIVE_MAX_SSE_STREAMS_PER_CLIENT": "3"}
    with http_server(tmp_path, env, *(["--stateless"] if stateless else [])) as server:
        async with http_client() as http, AsyncExitStack() as stack:
            held = []
            for _ in range(5):
                session: dict[str, str] = {}
                if not stateless:
                    opened = await open_session(http, server.url, ALICE)
                    session = session_of(opened)
                    await post(http, server.url, INITIALIZED, {**session, **bearer(ALICE)})
                held.append(await stack.enter_async_context(sse_stream(stack, server.url, ALICE, session)))
            (bobs,) = await hold_streams(
                stack,
                server.url,
                BOB,
                1,
                {} if stateless else session_of(await open_session(http, server.url, BOB)),
            )

    assert [r.status_code for r in held] == [200] * 3 + [429] * 2
    assert bobs.status_code == 200


async def test_the_sdk_still_keeps_its_sessions_where_the_count_per_client_reads_them(
    sandbox: RunningSandbox, api_key: str
) -> None:
    """`SdkSessions` reads a private attribute of the SDK's session manager: this fails loudly
    when the SDK moves it, instead of letting clients' counts go wrong quietly."""
    settings = make_settings(sandbox, api_key, transport="streamable-http")
    server = create_server(settings)
    app = build_app(server, settings)
    manager = server.session_manager
    assert isinstance(manager, StreamableHTTPSessionManager)
    sessions = SdkSessions(manager)
    transport = httpx2.ASGITransport(app=app)
    async with (
        manager.run(),
        httpx2.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as http,
    ):
        opened = await open_session(http, "/mcp", None)
        session_id = opened.headers["mcp-session-id"]
        assert session_id in sessions.open_ids()
        deleted = await http.delete("/mcp", headers={**HEADERS, **session_of(opened)})
        assert deleted.status_code == 200 and session_id not in sessions.open_ids()

    class Moved:
        pass

    with pytest.raises(RuntimeError, match="_server_instances"):
        SdkSessions(Moved())  # type: ignore[arg-type]


@pytest.mark.slow
async def test_a_2026_era_request_opens_no_session_and_no_session_limit_refuses_it(
    sandbox: RunningSandbox, api_key: str, tmp_path: Path
) -> None:
    """Only a 2025-era `initialize` opens a session: a 2026-era request has none, so neither the
    server's session limit nor its client's refuses it (review of issue 11: it got 503 or 429)."""
    env = {
        **upstream_env(sandbox, api_key),
        **tokens(ALICE, BOB, CAROL),
        "NAIVE_MAX_SESSIONS": "3",
        "NAIVE_MAX_SESSIONS_PER_CLIENT": "2",
    }
    with http_server(tmp_path, env) as server:
        async with http_client() as http:
            alices = [await open_session(http, server.url, ALICE) for _ in range(2)]
            # alice is at her limit: a 2025-era request without a session that is not an
            # initialize is the SDK's to refuse, not a session refused
            not_opening = await post(http, server.url, {**tools_list, "id": 1}, bearer(ALICE))
            alice_over = await open_session(http, server.url, ALICE)
            bobs = await open_session(http, server.url, BOB)  # the server is full now
            carol_over = await open_session(http, server.url, CAROL)
            modern = [
                await post(http, server.url, *_with_token(in_2026_era({**tools_list, "id": n}), token))
                for n, token in enumerate((ALICE, BOB, CAROL))
            ]

    assert [r.status_code for r in alices] == [200, 200] and bobs.status_code == 200
    assert not_opening.status_code == 400 and "session" in error_of(not_opening).lower()
    assert alice_over.status_code == 429 and carol_over.status_code == 503
    assert [r.status_code for r in modern] == [200] * 3
    assert all("tools" in r.json()["result"] for r in modern)


def _with_token(
    request: tuple[dict[str, Any], dict[str, str]], token: str
) -> tuple[dict[str, Any], dict[str, str]]:
    message, headers = request
    return message, {**headers, **bearer(token)}


@pytest.mark.slow
async def test_one_token_cannot_take_every_connection_with_calls_in_flight(
    paced: RunningSandbox, api_key: str, tmp_path: Path
) -> None:
    """The review's attack: one token sends more slow calls at once than the server has
    connections. Its requests in flight are limited (here to 12: NAIVE_MAX_REQUESTS_PER_CLIENT's
    default 100, lowered to half of NAIVE_MAX_CONNECTIONS=24); the rest get 429 at once, and
    /health and another token's calls are answered throughout."""
    env = {**upstream_env(paced, api_key), **tokens(ALICE, BOB), "NAIVE_MAX_CONNECTIONS": "24"}
    with http_server(tmp_path, env, "--stateless") as server:
        async with (
            http_client(limits=httpx2.Limits(max_connections=100)) as http,
            anyio.create_task_group() as group,
        ):
            held: list[int] = []
            refused: list[httpx2.Response] = []
            release = anyio.Event()

            async def slow_call(n: int) -> None:
                async with http.stream(
                    "POST", server.url, json=tools_call(n), headers={**HEADERS, **bearer(ALICE)}
                ) as response:
                    if response.status_code == 200:
                        held.append(n)
                        await release.wait()  # then drop it: the call is cancelled
                    else:
                        await response.aread()
                        refused.append(response)

            for n in range(20):
                group.start_soon(slow_call, n)
            with anyio.fail_after(WAIT):  # the answers take about 50 s: none ends by itself here
                while len(held) + len(refused) < 20:  # noqa: ASYNC110
                    await anyio.sleep(0.05)
            health = await http.get(f"{server.base}/health")
            bobs = await post(http, server.url, tools_call(1, "hi", model=None), bearer(BOB))
            release.set()
        async with http_client() as http:
            alices_list = {**tools_list, "id": 2}
            with anyio.fail_after(WAIT):  # room again once the server has seen alice's calls go
                while (again := await post(http, server.url, alices_list, bearer(ALICE))).status_code == 429:  # noqa: ASYNC110
                    await anyio.sleep(0.05)
        logs = server.logs()

    report(f"requests in flight per client: alice held {len(held)} of 20 slow calls, {len(refused)} got 429")
    assert len(held) == 12 and len(refused) == 8
    assert {r.status_code for r in refused} == {429}
    assert refused[0].headers["retry-after"] == "1"
    assert "NAIVE_MAX_REQUESTS_PER_CLIENT" in error_of(refused[0])
    assert health.status_code == 200
    assert bobs.status_code == 200 and "result" in streamed_answer(bobs)
    assert again.status_code == 200
    assert "requests in flight 12 per client" in logs and "Traceback" not in logs


def streamed_answer(response: httpx2.Response) -> dict[str, Any]:
    """The JSON-RPC answer in a POST's SSE response (after any progress notifications)."""
    messages = [json.loads(line[5:]) for line in response.text.splitlines() if line.startswith("data:")]
    answer: dict[str, Any] = next(m for m in messages if "method" not in m)
    return answer


# --- hole 3: a dropped connection stops its call on every transport and mode ------------------------


@pytest.fixture(scope="module")
def paced() -> Iterator[RunningSandbox]:
    """`sandbox/slow` answers over about 50 s (1000 chunks, 50 ms apart): the drop comes long before."""
    with serve_in_thread(SandboxConfig(slow_chunk_delay=0.05, slow_words=3000)) as running:
        yield running


def modern_tools_call(request_id: int) -> tuple[dict[str, Any], dict[str, str]]:
    """A 2026-era tools/call and its headers."""
    message, headers = in_2026_era(tools_call(request_id))
    return message, {**headers, "Mcp-Name": "naive_llm_chat"}


async def drop_mid_answer(server: HttpServer, mode: str, session: dict[str, str]) -> float:
    """Start a long chat, and once its answer streams, drop the connection (no cancel, no DELETE:
    the client is simply gone); when it dropped."""
    if mode == "sse":
        return await _drop_sse(server)
    message, headers = modern_tools_call(7) if mode == "2026" else (tools_call(7), session)
    async with http_client() as dropping, streamed(dropping, server.url, message, headers) as stream:
        await stream.answering()
        dropped_at = time.monotonic()
    return dropped_at  # leaving both blocks closed the connection mid-answer


async def _drop_sse(server: HttpServer) -> float:
    async with (
        http_client() as setup,
        http_client() as dropping,
        dropping.stream("GET", server.url, headers={"Accept": "text/event-stream"}) as response,
    ):
        stream = EventStream(response)
        event = await stream.next_event()
        assert event is not None and event[0] == "endpoint"
        messages = f"{server.base}{event[1]}"
        assert (await setup.post(messages, json=initialize())).status_code == 202
        assert (await stream.next() or {}).get("id") == 0
        assert (await setup.post(messages, json=INITIALIZED)).status_code == 202
        assert (await setup.post(messages, json=tools_call(7))).status_code == 202
        await stream.answering()
        return time.monotonic()


def ledger_and_holds(store: Path) -> tuple[list[str], int]:
    with sqlite3.connect(store) as db:
        outcomes = [row[0] for row in db.execute("SELECT outcome FROM ledger")]
        holds = db.execute("SELECT count(*) FROM holds").fetchone()[0]
    return outcomes, int(holds)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["stateful", "stateless", "2026", "sse"])
async def test_a_dropped_connection_stops_its_call_and_settles_its_reservation(
    paced: RunningSandbox, api_key: str, tmp_path: Path, mode: str
) -> None:
    store = tmp_path / "store.sqlite3"
    env = {**upstream_env(paced, api_key), "NAIVE_STORE": str(store)}
    args = ["--stateless"] if mode == "stateless" else []
    with http_server(tmp_path, env, *args, transport="sse" if mode == "sse" else "streamable-http") as server:
        async with http_client() as http:
            session: dict[str, str] = {}
            if mode == "stateful":
                session = session_of(await open_session(http, server.url, None))
                assert (await post(http, server.url, INITIALIZED, session)).status_code == 202
            dropped_at = await drop_mid_answer(server, mode, session)
            record = last_chat(paced, api_key)
            await ended(record)  # the whole answer would take about 50 s
            with anyio.fail_after(WAIT):  # settled from the generation's stats, which come a little later
                while not (settled := await anyio.to_thread.run_sync(ledger_and_holds, store))[0]:  # noqa: ASYNC110
                    await anyio.sleep(0.05)
            if mode == "stateful":  # the session serves on
                async with streamed(http, server.url, tools_call(8, "next", model=None), session) as stream:
                    after = (await stream.rest())[-1]
                assert after["id"] == 8 and after["result"]["content"][0]["text"].endswith("next")
        logs = server.logs()

    assert record.disconnected_at is not None, "the upstream saw the call go away"
    report(
        f"{mode}: from the client's drop to the upstream's disconnect: "
        f"{(record.disconnected_at - dropped_at) * 1000:.0f} ms"
    )
    assert settled == (["cancelled"], 0), "settled as cancelled, nothing left held"
    assert "Traceback" not in logs


# --- hole 10: a request whose id is not a string or an integer ----------------------------------

MALFORMED_IDS = ['{"a": 1}', "[1]", "null", "NaN", "1e308", "1.5", "true"]


def raw_request(request_id: str, method: str = "tools/list") -> bytes:
    return f'{{"jsonrpc": "2.0", "id": {request_id}, "method": "{method}"}}'.encode()


async def answers_to_malformed_ids(
    http: httpx2.AsyncClient, url: str, headers: dict[str, str], method: str = "tools/list"
) -> list[httpx2.Response]:
    return [
        await http.post(url, content=raw_request(i, method), headers={**HEADERS, **headers})
        for i in MALFORMED_IDS
    ]


def refused_as_invalid(responses: list[httpx2.Response]) -> bool:
    return all(
        r.status_code == 400 and r.json()["id"] is None and r.json()["error"]["code"] == -32600
        for r in responses
    )


@pytest.mark.slow
@pytest.mark.parametrize("stateless", [False, True], ids=["stateful", "stateless"])
async def test_a_request_with_a_malformed_id_gets_a_jsonrpc_error_over_streamable_http(
    sandbox: RunningSandbox, api_key: str, tmp_path: Path, stateless: bool
) -> None:
    env = {**upstream_env(sandbox, api_key), "NAIVE_MAX_SESSIONS_PER_CLIENT": "2"}
    with http_server(tmp_path, env, *(["--stateless"] if stateless else [])) as server:
        async with http_client() as http:
            session: dict[str, str] = {}
            if not stateless:
                session = session_of(await open_session(http, server.url, None))
                await post(http, server.url, INITIALIZED, session)
            in_session = await answers_to_malformed_ids(http, server.url, session)
            opening = await answers_to_malformed_ids(http, server.url, {}, method="initialize")
            modern = [
                await http.post(
                    server.url,
                    content=raw_request(i),
                    headers={**HEADERS, "MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/list"},
                )
                for i in MALFORMED_IDS
            ]
            well_formed = [await post(http, server.url, {**tools_list, "id": i}, session) for i in (7, "x")]
            # None of the refused openings held a session: room for one more (the limit is 2).
            another = await open_session(http, server.url, None)

    assert refused_as_invalid(in_session) and refused_as_invalid(opening)
    assert "must be a string or an integer, not an object" in in_session[0].json()["error"]["message"]
    assert refused_as_invalid(modern), "the 2026-era protocol refuses them on its own"
    assert [r.status_code for r in well_formed] == [200, 200]
    assert another.status_code == 200


tools_list: dict[str, Any] = {"jsonrpc": "2.0", "method": "tools/list"}


@pytest.mark.slow
async def test_a_malformed_id_or_no_jsonrpc_message_gets_a_jsonrpc_error_over_legacy_sse(
    sandbox: RunningSandbox, api_key: str, tmp_path: Path
) -> None:
    with http_server(tmp_path, upstream_env(sandbox, api_key), transport="sse") as server:
        async with (
            http_client() as http,
            http.stream("GET", server.url, headers={"Accept": "text/event-stream"}) as response,
        ):
            stream = EventStream(response)
            event = await stream.next_event()
            assert event is not None and event[0] == "endpoint"
            messages = f"{server.base}{event[1]}"
            assert (await http.post(messages, json=initialize())).status_code == 202
            assert (await stream.next() or {}).get("id") == 0
            assert (await http.post(messages, json=INITIALIZED)).status_code == 202
            refused = await answers_to_malformed_ids(http, messages, {})
            # No JSON-RPC message at all: the SDK logged a traceback for each and ended the session.
            unreadable = [
                await http.post(messages, content=body, headers=HEADERS)
                for body in (b"not json", b"[" * 100_000 + b"]" * 100_000, b"[]", b'{"jsonrpc": "2.0"}')
            ]
            accepted = await http.post(messages, json={**tools_list, "id": 9})
            with anyio.fail_after(WAIT):
                listed = await stream.next()
        logs = server.logs()

    assert refused_as_invalid(refused)
    assert [(r.status_code, r.json()["error"]["code"]) for r in unreadable] == [(400, -32700)] * 3 + [
        (400, -32600)
    ]
    assert accepted.status_code == 202 and listed is not None and listed["id"] == 9 and "result" in listed
    assert "Traceback" not in logs


# --- bodies that never come whole, and JSON nested too deep (review of issue 11) ----------------


def drop_mid_body(port: int, token: str, version: str) -> None:
    """A POST's headers with a valid token and the start of its body, then the client is gone."""
    head = (
        f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n"
        "Accept: application/json, text/event-stream\r\nContent-Type: application/json\r\n"
        f"MCP-Protocol-Version: {version}\r\nContent-Length: 100\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(head.encode() + b'{"jsonrpc"')


DROPS = 40  # per protocol era


@pytest.mark.slow
@pytest.mark.parametrize("stateless", [False, True], ids=["stateful", "stateless"])
async def test_bodies_that_never_come_whole_or_nest_too_deep_cause_no_traceback(
    sandbox: RunningSandbox, api_key: str, tmp_path: Path, stateless: bool
) -> None:
    """A client that sends a POST's headers and part of its body, then leaves, is served nothing
    (the SDK used to log a traceback for each); JSON nested 100,000 deep gets the SDK's 400
    `-32700` (it used to be a RecursionError: 500 and a traceback)."""
    env = {**upstream_env(sandbox, api_key), **tokens(ALICE), "NAIVE_LOG_LEVEL": "DEBUG"}
    with http_server(tmp_path, env, *(["--stateless"] if stateless else [])) as server:
        port = int(server.base.rsplit(":", 1)[1])
        for version in ("2025-11-25", MODERN):
            for _ in range(DROPS):
                await anyio.to_thread.run_sync(drop_mid_body, port, ALICE, version)
        with anyio.fail_after(WAIT):  # until the server has seen every one of them go
            while server.logs().count("before its request's body was whole") < 2 * DROPS:  # noqa: ASYNC110
                await anyio.sleep(0.05)
        async with http_client() as http:
            deep = await http.post(
                server.url,
                content=b"[" * 100_000 + b"]" * 100_000,
                headers={**HEADERS, **bearer(ALICE)},
            )
            serves = await open_session(http, server.url, ALICE)
        logs = server.logs()

    report(f"{2 * DROPS} bodies dropped midway: {logs.count('Traceback')} tracebacks on stderr")
    assert "Traceback" not in logs and "ClientDisconnect" not in logs
    assert deep.status_code == 400 and deep.json()["error"]["code"] == -32700
    assert serves.status_code == 200


def test_the_count_per_client_forgets_ended_sessions_and_its_memory_stays_bounded() -> None:
    open_in_sdk: dict[str, object] = {}

    class Manager:  # what SdkSessions reads of the SDK's session manager
        _server_instances = open_in_sdk

    limits = SessionLimits(
        max_sessions=3,
        max_sessions_per_client=2,
        idle_timeout=600,
        max_sse_streams=3,
        max_sse_streams_per_client=2,
    )
    counts = SessionCounts(limits, SdkSessions(Manager()))  # type: ignore[arg-type]
    kept = []
    for n in range(100):  # 100 clients, each opens one session, which ends; none comes back
        with counts.opening(f"client-{n}") as opening:
            assert counts.of(f"client-{n}") == 1, "an opening request counts at once"
            open_in_sdk[f"session-{n}"] = object()
            counts.opened(opening, f"session-{n}")
        assert counts.of(f"client-{n}") == 1
        del open_in_sdk[f"session-{n}"]
        kept.append(counts.kept)
    assert counts.of("client-99") == 0
    assert max(kept) <= 2 * limits.max_sessions + 1

    with counts.opening("alice"), counts.opening("alice"):
        refused = counts.refusal("alice")
    assert refused is not None and refused.status_code == 429, "a burst of openings cannot overshoot"
    assert counts.refusal("alice") is None and counts.of("alice") == 0
