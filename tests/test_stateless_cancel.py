"""Stateless streamable HTTP: a 2025-era client's `notifications/cancelled` stops the call it
names (the caller's own only), on the replica that runs it or, through a shared relay, from any
other; the cancelled call's stream ends as a stateful session ends it.

The end-to-end tests run `naive-mcp` subprocesses, or replicas served by uvicorn in this process,
against the sandbox upstream; the unit tests drive the endpoint wrapper over a stand-in for the
SDK, so that what must not happen can be shown without waiting for it.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import socket
import time
from collections.abc import AsyncIterator, Collection, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import httpx2
import pytest
import uvicorn
from mcp import Client
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from starlette.types import Message, Receive, Scope, Send

from naive_mcp.asgi import caller_digest
from naive_mcp.cancels import CancellableEndpoint, MemoryCancelRelay, StatelessCancels, cancel_key
from naive_mcp.remote import build_app
from naive_mcp.sandbox import RunningSandbox, SandboxConfig, serve_in_thread
from naive_mcp.sandbox.ledger import RequestRecord
from naive_mcp.server import create_server
from tests.conftest import make_settings, upstream_env
from tests.mcp_wire import (
    INITIALIZED,
    WAIT,
    answer,
    bearer,
    cancel,
    ended,
    http_client,
    initialize,
    is_answer_progress,
    last_chat,
    post,
    streamed,
    tools_call,
)
from tests.remote import connect, http_server

pytestmark = pytest.mark.anyio

CANCELLED = {"jsonrpc": "2.0", "id": 7, "error": {"code": -32800, "message": "Request cancelled"}}


@pytest.fixture(scope="module")
def paced() -> Iterator[RunningSandbox]:
    """`sandbox/slow` answers in about 2.5 s (50 chunks, 50 ms apart): short enough to wait for."""
    with serve_in_thread(SandboxConfig(slow_chunk_delay=0.05, slow_words=150)) as running:
        yield running


async def call(
    http: httpx2.AsyncClient, url: str, message: dict[str, Any], headers: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """One request's answer."""
    with anyio.fail_after(WAIT):
        async with streamed(http, url, message, headers) as stream:
            return answer(await stream.rest())


# --- end to end: a real `naive-mcp --stateless` -------------------------------------------------


async def cancel_mid_answer(
    client: Client, sandbox: RunningSandbox, api_key: str
) -> tuple[RequestRecord, float]:
    """Start a long chat, cancel it (the SDK client sends notifications/cancelled) once its answer
    streams; the upstream's record of it once its stream ended, and when the cancel was made."""
    heard = anyio.Event()

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        if is_answer_progress(message):
            heard.set()

    async def call() -> None:
        arguments = {"prompt": "long", "model": "sandbox/slow"}
        await client.call_tool("naive_llm_chat", arguments, progress_callback=on_progress)

    async with anyio.create_task_group() as group:
        group.start_soon(call)
        with anyio.fail_after(WAIT):
            await heard.wait()
        cancelled_at = time.monotonic()
        group.cancel_scope.cancel()
    record = last_chat(sandbox, api_key)
    await ended(record)
    return record, cancelled_at


@pytest.mark.slow
async def test_an_sdk_clients_cancel_closes_the_upstream_and_the_server_serves_on(
    sandbox: RunningSandbox, api_key: str, tmp_path: Path
) -> None:
    with http_server(tmp_path, upstream_env(sandbox, api_key), "--stateless") as server:
        async with http_client() as http, connect(server, mode="legacy") as client:
            assert client.protocol_version == "2025-11-25"
            record, cancelled_at = await cancel_mid_answer(client, sandbox, api_key)
            with anyio.fail_after(WAIT):
                after = await client.call_tool("naive_llm_chat", {"prompt": "next"})
            health = await http.get(f"{server.base}/health")
        logs = server.logs()

    assert record.disconnected_at is not None, "the upstream saw the call go away"
    assert cancelled_at <= record.disconnected_at, "the disconnect followed the cancel, before the end"
    assert not after.is_error and health.status_code == 200
    assert "notifications/cancelled: cancelled 1 call(s) in flight" in logs
    assert "Traceback" not in logs and "crashed" not in logs


@pytest.mark.slow
async def test_another_callers_cancel_of_the_same_id_does_not_stop_the_call(
    paced: RunningSandbox, api_key: str, tmp_path: Path
) -> None:
    alice, bob = "alice-token-0123456789", "bob-token-0123456789"
    env = {**upstream_env(paced, api_key), "NAIVE_AUTH_TOKENS": json.dumps([alice, bob])}
    with http_server(tmp_path, env, "--stateless") as server:
        async with http_client() as http:
            async with streamed(http, server.url, tools_call(7), bearer(alice)) as stream:
                await stream.answering()
                refused = await post(http, server.url, cancel(7), bearer(bob))
                left_alone = await stream.rest()
            record = last_chat(paced, api_key)
            await ended(record)

            # The same, cancelled by its own caller (with the id spelled as a string).
            async with streamed(http, server.url, tools_call(8), bearer(alice)) as stream:
                await stream.answering()
                accepted = await post(http, server.url, cancel("8"), bearer(alice))
                stopped = await stream.rest()
            own = last_chat(paced, api_key)
            await ended(own)
        logs = server.logs()

    assert refused.status_code == 202, "answered as the SDK answers any notification"
    finished = answer(left_alone)
    assert finished["id"] == 7 and "result" in finished
    assert finished["result"]["content"][0]["text"].endswith("word150"), "the whole answer"
    assert record.disconnected_at is None
    assert accepted.status_code == 202
    assert answer(stopped) == {**CANCELLED, "id": 8}
    assert own.disconnected_at is not None
    assert logs.count("cancelled 1 call(s) in flight") == 1
    assert alice not in logs and bob not in logs


@pytest.mark.slow
@pytest.mark.parametrize("stateless", [False, True], ids=["stateful", "stateless"])
async def test_a_cancelled_call_ends_as_a_stateful_session_ends_it(
    sandbox: RunningSandbox, api_key: str, tmp_path: Path, stateless: bool
) -> None:
    """What a client sees is the SDK's own stateful behaviour: 202, then -32800 for the call."""
    flags = ["--stateless"] if stateless else []
    with http_server(tmp_path, upstream_env(sandbox, api_key), *flags) as server:
        async with http_client() as http:
            opened = await post(http, server.url, initialize())
            session = {"mcp-session-id": opened.headers["mcp-session-id"]} if not stateless else {}
            assert opened.status_code == 200 and ("mcp-session-id" in opened.headers) != stateless
            initialized = await post(http, server.url, INITIALIZED, session)
            async with streamed(http, server.url, tools_call(7), session) as stream:
                await stream.answering()
                cancelled_at = time.monotonic()
                accepted = await post(http, server.url, cancel(7), session)
                tail = await stream.rest()
            record = last_chat(sandbox, api_key)
            await ended(record)

    assert initialized.status_code == 202
    assert accepted.status_code == 202 and accepted.content == b""
    assert answer(tail) == CANCELLED and tail[-1] == CANCELLED
    assert record.disconnected_at is not None
    assert cancelled_at <= record.disconnected_at, "the disconnect followed the cancel, before the end"


# --- two replicas in this process, sharing one relay ----------------------------------------------


class _InProcess(uvicorn.Server):
    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the test runner's signals stay its own


@asynccontextmanager
async def replica(sandbox: RunningSandbox, api_key: str, relay: MemoryCancelRelay) -> AsyncIterator[str]:
    """A stateless naive-mcp app served by uvicorn on loopback; its endpoint's URL."""
    settings = make_settings(sandbox, api_key, transport="streamable-http", stateless=True)
    app = build_app(create_server(settings), settings, cancel_relay=relay, cancel_poll_interval=0.05)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen()  # connections wait in the backlog until uvicorn has started: no polling
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app, lifespan="on", log_config=None, access_log=False, timeout_graceful_shutdown=5
    )
    server = _InProcess(config)
    with sock:
        async with anyio.create_task_group() as group:
            group.start_soon(server.serve, [sock])
            try:
                yield f"http://127.0.0.1:{port}/mcp"
            finally:
                server.should_exit = True


def left_behind() -> list[str]:
    """The tasks of the SDK's per-POST transports and dispatchers, and of our poller."""
    return [n for t in asyncio.all_tasks() if (n := t.get_name()).startswith(("mcp.", "naive_mcp.cancels."))]


@pytest.mark.slow
async def test_a_cancel_posted_to_another_replica_stops_the_call(
    sandbox: RunningSandbox, api_key: str, caplog: pytest.LogCaptureFixture
) -> None:
    relay = MemoryCancelRelay()
    async with (
        replica(sandbox, api_key, relay) as a,
        replica(sandbox, api_key, relay) as b,
        http_client() as http,
    ):
        tails, delays = [], []
        for cancel_on in (b, a, b):  # round robin
            async with streamed(http, a, tools_call(7)) as stream:
                await stream.answering()
                cancelled_at = time.monotonic()
                accepted = await post(http, cancel_on, cancel(7))
                assert accepted.status_code == 202
                with anyio.fail_after(WAIT):
                    tails.append(await stream.rest())
            record = last_chat(sandbox, api_key)
            await ended(record)
            assert record.disconnected_at is not None
            delays.append(record.disconnected_at - cancelled_at)
        published = len(relay)
        with anyio.fail_after(WAIT):
            # A POST's last steps may still be under way: wait them out. (Not with
            # wait_all_tasks_blocked: the replicas' pollers wake every 50 ms, and on a busy
            # machine it kept finding one awake until this wait ran out.)
            while left_behind():  # noqa: ASYNC110 - the SDK's tasks: nothing to wait on
                await anyio.sleep(0.02)
        after_a = await call(http, a, tools_call(7, "next on a", model=None))
        after_b = await call(http, b, tools_call(7, "next on b", model=None))

    assert [answer(tail) for tail in tails] == [CANCELLED] * 3
    assert min(delays) >= 0, "each disconnect followed its cancel, before the end"
    assert published == 1, "the cancels posted to b"
    # The cancel is still published, but it came before these calls: they reuse the id unharmed.
    assert after_a["result"]["content"][0]["text"].endswith("next on a")
    assert after_b["result"]["content"][0]["text"].endswith("next on b")
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


# --- the endpoint wrapper, over a stand-in for the SDK ---------------------------------------------


class StandIn:
    """Answers a request with an event stream held open until `release`, a notification with 202."""

    def __init__(self, *, answer_first: bool = False) -> None:
        self.answer_first = answer_first  # the answer goes out before the stream is held open
        self.started: dict[Any, anyio.Event] = {}
        self.release = anyio.Event()
        self.bodies: list[bytes] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        self.bodies.append(body)
        try:
            decoded = json.loads(body)
        except ValueError:
            decoded = None
        if not isinstance(decoded, dict) or "id" not in decoded:
            await send({"type": "http.response.start", "status": 202, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        result = json.dumps({"jsonrpc": "2.0", "id": decoded["id"], "result": {}})
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream")],
            }
        )
        if self.answer_first:
            await send(
                {
                    "type": "http.response.body",
                    "body": f"event: message\r\ndata: {result}\r\n\r\n".encode(),
                    "more_body": True,
                }
            )
        self.started.setdefault(decoded["id"], anyio.Event()).set()
        await self.release.wait()
        body = b"" if self.answer_first else f"event: message\r\ndata: {result}\r\n\r\n".encode()
        await send({"type": "http.response.body", "body": body, "more_body": False})

    async def wait_started(self, request_id: Any) -> None:
        with anyio.fail_after(WAIT):
            await self.started.setdefault(request_id, anyio.Event()).wait()


class SpyRelay(MemoryCancelRelay):
    """A memory relay that says what it was asked."""

    def __init__(self) -> None:
        super().__init__()
        self.questions: list[set[str]] = []
        self.asked = anyio.Event()
        self.published = anyio.Event()

    async def publish(self, key: str, at: float) -> None:
        await super().publish(key, at)
        self.published.set()

    async def cancelled(self, keys: Collection[str]) -> dict[str, float]:
        self.questions.append(set(keys))
        self.asked.set()
        return await super().cancelled(keys)

    async def wait_asked_about(self, keys: set[str]) -> None:
        with anyio.fail_after(WAIT):
            while not any(keys <= question for question in self.questions):
                self.asked = anyio.Event()
                await self.asked.wait()


def user_of(token: str) -> AuthenticatedUser:
    """What the SDK's auth middleware leaves in the scope for a valid token."""
    return AuthenticatedUser(AccessToken(token=token, client_id="test", scopes=[]))


def key_of(request_id: int | str, token: str | None = None) -> str:
    return cancel_key(caller_digest(user_of(token) if token else None), request_id)


def scope_of(token: str | None, version: str | None = "2025-11-25", length: int | None = None) -> Scope:
    headers = [(b"content-type", b"application/json")]
    if version is not None:
        headers.append((b"mcp-protocol-version", version.encode()))
    if length is not None:
        headers.append((b"content-length", str(length).encode()))
    scope: Scope = {"type": "http", "method": "POST", "path": "/mcp", "headers": headers}
    if token is not None:
        scope["user"] = user_of(token)
    return scope


async def send_to(
    endpoint: CancellableEndpoint, message: Any, token: str | None = None, **scope: Any
) -> list[Message]:
    """POST `message` (bytes as they are) to `endpoint`; what it sent back."""
    body = message if isinstance(message, bytes) else json.dumps(message).encode()
    pending: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]
    sent: list[Message] = []

    async def receive() -> Message:
        if pending:
            return pending.pop(0)
        await anyio.sleep_forever()  # the client stays
        raise AssertionError

    async def send(message: Message) -> None:
        sent.append(message)

    await endpoint(scope_of(token, **scope), receive, send)
    return sent


def events(sent: list[Message]) -> list[dict[str, Any]]:
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return [json.loads(line[5:]) for line in body.splitlines() if line.startswith(b"data:")]


def status(sent: list[Message]) -> int:
    return int(next(m["status"] for m in sent if m["type"] == "http.response.start"))


def ended_properly(sent: list[Message]) -> bool:
    bodies = [m for m in sent if m["type"] == "http.response.body"]
    return bool(bodies) and not bodies[-1].get("more_body", False)


async def test_only_the_callers_own_cancel_stops_its_call_and_its_stream_ends_with_minus_32800() -> None:
    sdk = StandIn()
    cancels = StatelessCancels()
    endpoint = CancellableEndpoint(sdk, cancels, max_body_bytes=10_000)
    outcome: list[Message] = []
    async with cancels.running(), anyio.create_task_group() as group:

        async def alices_call() -> None:
            outcome.extend(await send_to(endpoint, tools_call(7), "alice"))

        group.start_soon(alices_call)
        await sdk.wait_started(7)
        refused = await send_to(endpoint, cancel(7), "bob")
        anonymous = await send_to(endpoint, cancel(7))
        modern = await send_to(endpoint, cancel(7), "alice", version="2026-07-28")
        await anyio.wait_all_tasks_blocked()
        assert not outcome and cancels.in_flight == 1, "still running"
        accepted = await send_to(endpoint, cancel("7"), "alice")

    assert [status(refused), status(anonymous), status(modern), status(accepted)] == [202] * 4
    assert events(outcome) == [CANCELLED] and ended_properly(outcome)
    assert cancels.in_flight == 0


async def test_a_cancel_after_the_answer_went_out_adds_nothing_to_the_stream() -> None:
    sdk = StandIn(answer_first=True)
    cancels = StatelessCancels()
    endpoint = CancellableEndpoint(sdk, cancels, max_body_bytes=10_000)
    outcome: list[Message] = []
    async with cancels.running(), anyio.create_task_group() as group:

        async def the_call() -> None:
            outcome.extend(await send_to(endpoint, tools_call(7)))

        group.start_soon(the_call)
        await sdk.wait_started(7)
        await send_to(endpoint, cancel(7))

    assert events(outcome) == [{"jsonrpc": "2.0", "id": 7, "result": {}}] and ended_properly(outcome)


async def test_a_cancel_from_another_replica_is_polled_for_and_stops_the_call() -> None:
    relay = SpyRelay()
    sdk_a, sdk_b = StandIn(), StandIn()
    a, b = StatelessCancels(relay, poll_interval=0.01), StatelessCancels(relay, poll_interval=0.01)
    endpoint_a = CancellableEndpoint(sdk_a, a, max_body_bytes=10_000)
    endpoint_b = CancellableEndpoint(sdk_b, b, max_body_bytes=10_000)
    outcome: list[Message] = []
    async with a.running(), b.running():
        async with anyio.create_task_group() as group:

            async def the_call() -> None:
                outcome.extend(await send_to(endpoint_a, tools_call(7), "alice"))

            group.start_soon(the_call)
            await sdk_a.wait_started(7)
            assert a.polling and not b.polling
            accepted = await send_to(endpoint_b, cancel(7), "alice")
            with anyio.fail_after(WAIT):
                await relay.published.wait()
        await anyio.wait_all_tasks_blocked()
        assert not a.polling, "nothing polls once nothing is in flight"

    assert status(accepted) == 202
    assert events(outcome) == [CANCELLED] and ended_properly(outcome)
    assert {key_of(7, "alice")} in relay.questions


async def test_a_cancel_older_than_the_call_does_not_stop_a_call_that_reuses_the_id() -> None:
    """Clients number requests from 1 in every session: a cancel that came too late for its own
    call must not cancel the next call with that id, though it stays published for minutes."""
    relay = SpyRelay()
    clock = itertools.count(1000).__next__
    sdk_a, sdk_b = StandIn(), StandIn()
    a = StatelessCancels(relay, poll_interval=0.01, clock=lambda: float(clock()))
    b = StatelessCancels(relay, poll_interval=0.01, clock=lambda: float(clock()))
    endpoint_a = CancellableEndpoint(sdk_a, a, max_body_bytes=10_000)
    endpoint_b = CancellableEndpoint(sdk_b, b, max_body_bytes=10_000)
    key = key_of(7)
    outcome: list[Message] = []
    async with a.running(), b.running():
        await send_to(endpoint_b, cancel(7))  # for a call that is over
        with anyio.fail_after(WAIT):
            await relay.published.wait()
        async with anyio.create_task_group() as group:

            async def the_call() -> None:
                outcome.extend(await send_to(endpoint_a, tools_call(7)))

            group.start_soon(the_call)
            await sdk_a.wait_started(7)
            await relay.wait_asked_about({key})
            assert (await relay.cancelled([key])).keys() == {key}, "still published"
            sdk_a.release.set()

    assert events(outcome) == [{"jsonrpc": "2.0", "id": 7, "result": {}}], "not cancelled"


async def test_one_poller_asks_about_every_call_in_flight_at_once() -> None:
    relay = SpyRelay()
    sdk = StandIn()
    cancels = StatelessCancels(relay, poll_interval=0.01)
    endpoint = CancellableEndpoint(sdk, cancels, max_body_bytes=10_000)
    keys = {key_of(1, "alice"), key_of(2, "alice"), key_of(1)}
    assert len(keys) == 3
    async with cancels.running():
        async with anyio.create_task_group() as group:
            group.start_soon(send_to, endpoint, tools_call(1), "alice")
            group.start_soon(send_to, endpoint, tools_call(2), "alice")
            group.start_soon(send_to, endpoint, tools_call(1))
            await sdk.wait_started(1)
            await sdk.wait_started(2)
            await anyio.wait_all_tasks_blocked()
            assert cancels.in_flight == 3 and cancels.polling
            await relay.wait_asked_about(keys)
            sdk.release.set()
        await anyio.wait_all_tasks_blocked()
        assert cancels.in_flight == 0 and not cancels.polling
        asked = len(relay.questions)
        await anyio.wait_all_tasks_blocked()
        assert len(relay.questions) == asked


@pytest.mark.parametrize(
    ("body", "scope"),
    [
        pytest.param(json.dumps([tools_call(7)]).encode(), {}, id="batch"),
        pytest.param(b"{not json", {}, id="not-json"),
        pytest.param(json.dumps(tools_call(7)).encode(), {"version": "2026-07-28"}, id="2026-era"),
        pytest.param(json.dumps(tools_call(7)).encode(), {"length": 10_001}, id="too-big"),
    ],
)
async def test_what_is_not_a_2025_era_call_or_cancel_goes_to_the_sdk_untouched(
    body: bytes, scope: dict[str, Any]
) -> None:
    sdk = StandIn()
    sdk.release.set()
    cancels = StatelessCancels()
    endpoint = CancellableEndpoint(sdk, cancels, max_body_bytes=10_000)
    registered: list[int] = []
    original = cancels._register
    cancels._register = lambda call: (registered.append(1), original(call))[1]  # type: ignore[method-assign]
    async with cancels.running():
        await send_to(endpoint, body, **scope)
    assert sdk.bodies == [body] and not registered


async def test_the_memory_relay_keeps_the_latest_time_for_ten_minutes_and_a_bounded_count() -> None:
    now = [0.0]
    relay = MemoryCancelRelay(limit=3, clock=lambda: now[0])
    await relay.publish("a", 10.0)
    await relay.publish("a", 5.0)
    await relay.publish("b", 11.0)
    assert await relay.cancelled(["a", "b", "c"]) == {"a": 10.0, "b": 11.0}
    now[0] = 599.0
    await relay.publish("c", 12.0)
    await relay.publish("d", 13.0)
    await relay.publish("e", 14.0)
    assert len(relay) == 3 and (await relay.cancelled(["a", "b"])) == {}, "the oldest went first"
    now[0] = 1200.0
    assert await relay.cancelled(["c", "d", "e"]) == {} and len(relay) == 0


@pytest.mark.slow
async def test_a_failing_relay_costs_only_the_cross_replica_cancel(caplog: pytest.LogCaptureFixture) -> None:
    class Broken(MemoryCancelRelay):
        asked = anyio.Event()

        async def publish(self, key: str, at: float) -> None:
            raise ConnectionError("the store is down")

        async def cancelled(self, keys: Collection[str]) -> dict[str, float]:
            self.asked.set()
            raise ConnectionError("the store is down")

    sdk = StandIn()
    relay = Broken()
    cancels = StatelessCancels(relay, poll_interval=0.01)
    endpoint = CancellableEndpoint(sdk, cancels, max_body_bytes=10_000)
    outcome: list[Message] = []
    async with cancels.running():
        accepted = await send_to(endpoint, cancel(3))  # for nothing here: published, which fails
        async with anyio.create_task_group() as group:

            async def the_call() -> None:
                outcome.extend(await send_to(endpoint, tools_call(7)))

            group.start_soon(the_call)
            await sdk.wait_started(7)
            with anyio.fail_after(WAIT):
                await relay.asked.wait()
            await anyio.wait_all_tasks_blocked()
            await send_to(endpoint, cancel(7))  # the call here is still cancelled

    assert status(accepted) == 202
    assert events(outcome) == [CANCELLED]
    assert "could not pass a cancel on to the other replicas" in caplog.text
    assert caplog.text.count("could not ask the relay") == 1, "said once, not at every poll"
