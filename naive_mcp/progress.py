"""Progress notifications for one tool call: throttled updates, and heartbeats through silences.

A tool reports what it has (`update(message)`); a background loop sends it as an MCP progress
notification — the first one at once, later ones at most every `interval` seconds, coalesced —
and, when nothing new has come for `heartbeat` seconds, says so anyway, so a client that gives
up on silence does not kill a call that is alive. Progress values count the notifications
sent, so they only ever increase. Without a progress token the SDK drops each send: the same
call, no notifications.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import anyio

SendProgress = Callable[[float, str], Awaitable[None]]


class ProgressReporter:
    def __init__(self, send: SendProgress, *, interval: float, heartbeat: float) -> None:
        self._send = send
        self._interval = interval
        self._heartbeat = heartbeat
        self._latest: str | None = None
        self._changed = anyio.Event()
        self._sent = 0
        self._started = time.monotonic()

    def update(self, message: str) -> None:
        """The newest state of the work; sent at once if the last send was long enough ago."""
        self._latest = message
        self._changed.set()

    @asynccontextmanager
    async def running(self) -> AsyncIterator[ProgressReporter]:
        """Send notifications while the block runs; stop when it ends."""
        try:
            async with anyio.create_task_group() as task_group:
                task_group.start_soon(self._loop)
                try:
                    yield self
                finally:
                    task_group.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            # Only the block can fail (the loop just sends); let its error be itself, not a group.
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise

    async def _loop(self) -> None:
        while True:
            with anyio.move_on_after(self._heartbeat):
                await self._changed.wait()
            if self._changed.is_set():
                self._changed = anyio.Event()
                message = self._latest or ""
            else:
                message = f"Still working ({time.monotonic() - self._started:.0f} s)"
            self._sent += 1
            await self._send(self._sent, message)
            await anyio.sleep(self._interval)
