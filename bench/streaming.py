"""Streaming figures: upstream's first chunk → the client's first progress notification, and
the client's cancel → the upstream seeing the disconnect. In memory and over stdio.

The sandbox runs on a thread of this process and stamps, with the system-wide monotonic clock,
the moment its first chunk leaves and the moment it sees the client go; the client stamps its
notifications and its cancel with the same clock, so the differences need no synchronisation,
even across the stdio subprocess.
"""

from __future__ import annotations

import time
import uuid

import anyio
from mcp import Client

from bench import clients
from bench.report import Figure
from naive_mcp.sandbox import RunningSandbox, SandboxConfig, serve_in_thread
from naive_mcp.sandbox.ledger import RequestRecord

# A long slow answer, so that a cancel always lands mid-stream; the upstream's own latency is zero.
CONFIG = SandboxConfig(slow_chunk_delay=0.02, slow_words=600)
SLOW = {"prompt": "benchmark", "model": "sandbox/slow"}
FIRST_CHUNK_TARGET_MS = 5.0
CANCEL_TARGET_MS = 100.0


async def measure(runs: int) -> list[Figure]:
    with serve_in_thread(CONFIG) as sandbox:
        key = f"nv_sk_test_bench_{uuid.uuid4().hex}"
        figures: list[Figure] = []
        for transport, connect in (("in memory", clients.in_memory), ("stdio", clients.stdio)):
            async with connect(sandbox.url, key) as client:
                await client.call_tool("naive_llm_models", {})  # warm: connection pool, imports
                first = [await _first_progress_ms(client, sandbox, key) for _ in range(runs)]
                cancel = [await _cancel_ms(client, sandbox, key) for _ in range(runs)]
            figures += [
                Figure(f"first upstream chunk → first progress, {transport}", first, FIRST_CHUNK_TARGET_MS),
                Figure(f"cancel → upstream sees disconnect, {transport}", cancel, CANCEL_TARGET_MS),
            ]
        return figures


async def _first_progress_ms(client: Client, sandbox: RunningSandbox, key: str) -> float:
    """One call, cancelled as soon as its first progress notification arrives."""
    heard = anyio.Event()
    heard_at = 0.0

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        nonlocal heard_at
        if not heard.is_set():
            heard_at = time.monotonic()
            heard.set()

    async with anyio.create_task_group() as group:
        group.start_soon(_call, client, on_progress)
        with anyio.fail_after(10):
            await heard.wait()
        group.cancel_scope.cancel()
    record = await _ended(sandbox, key)
    assert record.first_chunk_at is not None
    return (heard_at - record.first_chunk_at) * 1000


async def _cancel_ms(client: Client, sandbox: RunningSandbox, key: str) -> float:
    """One call, cancelled mid-answer; how long until the upstream saw the connection go."""
    heard = anyio.Event()

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        heard.set()

    async with anyio.create_task_group() as group:
        group.start_soon(_call, client, on_progress)
        with anyio.fail_after(10):
            await heard.wait()
        await anyio.sleep(0.05)  # well into the answer
        cancelled_at = time.monotonic()
        group.cancel_scope.cancel()
    record = await _ended(sandbox, key)
    assert record.disconnected_at is not None, "the upstream never saw the disconnect"
    return (record.disconnected_at - cancelled_at) * 1000


async def _call(client: Client, on_progress: object) -> None:
    await client.call_tool("naive_llm_chat", SLOW, progress_callback=on_progress)  # type: ignore[arg-type]


async def _ended(sandbox: RunningSandbox, key: str) -> RequestRecord:
    # The newest chat request: not simply the newest request, since after a cancel the server
    # asks for the generation's stats in the background (to settle the call's cost).
    chats = [r for r in sandbox.sandbox.ledger.requests(key) if r.path.endswith("/chat/completions")]
    record = chats[-1]
    assert await anyio.to_thread.run_sync(record.stream_ended.wait, 10), "the upstream stream never ended"
    return record
