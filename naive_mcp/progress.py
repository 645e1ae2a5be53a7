"""Progress notifications for one tool call: throttled updates, and heartbeats through silences.

A tool says that it has news (`update(describe)`); a background loop sends it as an MCP progress
notification — the first news at once, later news at most every `interval` seconds, coalesced,
with the message built (by `describe`) only when it is sent — and, when nothing new has come for
`heartbeat` seconds, says so anyway, so a client that gives up on silence does not kill a call
that is alive. Progress values count the notifications sent, so they only ever increase.
Without a progress token the SDK drops each send: the same call, no notifications. Progress is
best-effort: a notification that cannot be sent never fails the call.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import anyio

logger = logging.getLogger(__name__)

SendProgress = Callable[[float, str], Awaitable[None]]
Describe = Callable[[], str]


class ProgressReporter:
    def __init__(self, send: SendProgress, *, interval: float, heartbeat: float) -> None:
        self._send = send
        self._interval = interval
        self._heartbeat = heartbeat
        self._describe: Describe | None = None
        self._answer: Describe | None = None
        self._last_answer = ""
        self._changed = anyio.Event()
        self._sent = 0
        self._started = time.monotonic()

    def update(self, describe: Describe, answer: Describe | None = None) -> None:
        """There is news; `describe()` says what, when it is sent; `answer()`, the answer so far
        (for a call run in the background: `naive_mcp.jobs`)."""
        self._describe = describe
        if answer is not None:
            self._answer = answer
        self._changed.set()

    def answer_so_far(self) -> str:
        """The answer as far as it has come (as `update`'s `answer` says), or "" if none was given."""
        if self._answer is not None:
            self._last_answer = self._answer()
        return self._last_answer

    @asynccontextmanager
    async def running(self, *, enabled: bool = True) -> AsyncIterator[ProgressReporter]:
        """Send notifications while the block runs; stop when it ends. Not `enabled`: updates are
        taken and dropped, and no task runs."""
        try:
            if not enabled:
                yield self
                return
            async with anyio.create_task_group() as task_group:
                task_group.start_soon(self._loop)
                try:
                    yield self
                finally:
                    task_group.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            # Only the block can fail (the loop never raises); let its error be itself, not a group.
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise
        finally:
            self.answer_so_far()  # kept as it is now: the answer's source goes with the call
            self._describe = self._answer = None  # they hold the answer (a ChatStream): not past the call

    async def _loop(self) -> None:
        while True:
            with anyio.move_on_after(self._heartbeat):
                await self._changed.wait()
            if self._changed.is_set() and self._describe is not None:
                self._changed = anyio.Event()
                message = self._describe()
            else:
                message = f"Still working ({time.monotonic() - self._started:.0f} s)"
            self._sent += 1
            try:
                await self._send(self._sent, message)
            except Exception:
                # Best-effort by design: the answer matters more than news of it.
                logger.debug("progress notification not sent; no more for this call", exc_info=True)
                return
            await anyio.sleep(self._interval)
