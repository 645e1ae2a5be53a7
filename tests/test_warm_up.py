"""The warm-up: what the first call would pay (SQLAlchemy, the HTTP stack and the CA bundle, the
wire models, the store) is paid as serving begins, and a call that comes meanwhile waits for it
instead of sharing the CPU with it."""

from __future__ import annotations

import threading

import anyio
import pytest
from mcp import Client

from naive_mcp import guard as guard_module
from naive_mcp.sandbox import RunningSandbox
from naive_mcp.server import create_server
from naive_mcp.services import Services
from naive_mcp.settings import Settings
from tests.conftest import SESSION_TIMEOUT

pytestmark = pytest.mark.anyio


def chat_paths(sandbox: RunningSandbox, api_key: str) -> list[str]:
    return [r.path for r in sandbox.sandbox.ledger.requests(api_key) if r.path.endswith("/chat/completions")]


async def test_serving_opens_the_store_and_makes_the_http_client_before_any_call(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(guard_module, "_OPEN_AFTER_SECONDS", 3600.0)  # only the warm-up opens it
    services = Services.create(settings)
    async with services.running():
        with anyio.fail_after(SESSION_TIMEOUT):
            await services.warm_up.wait()
            while not services.guard.store_is_open:  # noqa: ASYNC110 (a condition, no event)
                await anyio.sleep(0.01)
        assert services.client._own_http is not None


async def test_a_call_during_the_warm_up_waits_for_it_then_is_answered(
    settings: Settings, sandbox: RunningSandbox, api_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    started, release = threading.Event(), threading.Event()
    warm = Services._warm_in_thread

    def held_warm_up(self: Services) -> None:
        started.set()
        release.wait(SESSION_TIMEOUT)
        warm(self)

    monkeypatch.setattr(Services, "_warm_in_thread", held_warm_up)
    async with Client(create_server(settings)) as client, anyio.create_task_group() as tasks:
        answered = anyio.Event()

        async def call() -> None:
            result = await client.call_tool("naive_llm_chat", {"prompt": "hello"})
            assert not result.is_error, result.content
            answered.set()

        await anyio.to_thread.run_sync(started.wait, SESSION_TIMEOUT)
        tasks.start_soon(call)
        await anyio.sleep(0.2)  # time for the call to go upstream, were it not waiting
        assert chat_paths(sandbox, api_key) == [] and not answered.is_set()
        release.set()
        with anyio.fail_after(SESSION_TIMEOUT):
            await answered.wait()
    assert len(chat_paths(sandbox, api_key)) == 1


async def test_a_failed_warm_up_is_not_fatal(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self: Services) -> None:
        raise OSError("no CA bundle")

    monkeypatch.setattr(Services, "_warm_in_thread", broken)
    async with Client(create_server(settings)) as client:
        result = await client.call_tool("naive_llm_chat", {"prompt": "hello"})
    assert not result.is_error, result.content
