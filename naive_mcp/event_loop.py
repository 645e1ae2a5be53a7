"""The event loop the server runs on: uvloop where it is installed (the `fast` extra), else
asyncio's own; NAIVE_EVENT_LOOP chooses. uvloop is never required: `auto` without it is asyncio."""

from __future__ import annotations

import importlib.util
from collections.abc import Awaitable, Callable
from typing import Literal, TypeVarTuple, Unpack

import anyio

from naive_mcp.errors import ConfigurationError

_Args = TypeVarTuple("_Args")
EventLoop = Literal["auto", "asyncio", "uvloop"]


def uses_uvloop(choice: EventLoop) -> bool:
    """Whether `choice` runs on uvloop here; `uvloop` without it installed is a configuration error."""
    installed = importlib.util.find_spec("uvloop") is not None
    if choice == "uvloop" and not installed:
        raise ConfigurationError(
            "NAIVE_EVENT_LOOP=uvloop, but uvloop is not installed: install naive-mcp[fast] "
            "(or uvloop), or set NAIVE_EVENT_LOOP=auto"
        )
    return installed and choice != "asyncio"


def run(choice: EventLoop, main: Callable[[Unpack[_Args]], Awaitable[object]], *args: *_Args) -> None:
    """`anyio.run(main, *args)` on the loop `choice` names."""
    anyio.run(main, *args, backend="asyncio", backend_options={"use_uvloop": uses_uvloop(choice)})
