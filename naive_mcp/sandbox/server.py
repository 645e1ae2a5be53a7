"""Serve a sandbox on loopback, on a thread of its own, for `--sandbox`, tests and benchmarks."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import uvicorn
from starlette.types import ASGIApp

from naive_mcp.sandbox.app import Sandbox, SandboxConfig


@dataclass(frozen=True, slots=True)
class RunningSandbox:
    url: str
    sandbox: Sandbox


@contextmanager
def serve_in_thread(
    config: SandboxConfig | None = None, *, host: str = "127.0.0.1", port: int = 0
) -> Iterator[RunningSandbox]:
    """Run a sandbox until the block ends. Port 0 picks a free port; `url` says which."""
    sandbox = Sandbox(config)
    with serve_app_in_thread(sandbox.app, host=host, port=port) as url:
        yield RunningSandbox(url=url, sandbox=sandbox)


@contextmanager
def serve_app_in_thread(app: ASGIApp, *, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve any ASGI app over real HTTP until the block ends; yields its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound_port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(
            app, log_level="warning", access_log=False, lifespan="off", timeout_graceful_shutdown=1
        )
    )
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="naive-sandbox", daemon=True
    )
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("the sandbox server did not start")
            threading.Event().wait(0.005)
        yield f"http://{host}:{bound_port}"
    finally:
        server.should_exit = True
        thread.join(timeout=5)
        sock.close()
