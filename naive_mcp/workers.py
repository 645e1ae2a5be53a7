"""`--workers N`: HTTP served by N processes on one listening socket, sharing the state store, so
that calls/s grows with cores.

uvicorn's own supervisor (`uvicorn.supervisors.Multiprocess`) runs them: the socket is bound once,
here; each worker is spawned with it and pinged by the supervisor (a thread of the worker
answers, so a busy event loop still does); a worker that dies or stops answering is replaced;
SIGINT/SIGTERM stop every worker (SIGTERM each, which drains its calls) and wait for them.
What a worker runs is ours: `serve_http`, exactly as one process serves, handed the shared
socket. uvicorn's own workers would run a plain `uvicorn.Server` on an app it imports: so
`_Supervisor` makes a `_Worker` wherever `Multiprocess` makes its `Process` (at start, for a dead
one, on SIGHUP and SIGTTIN), and a test fails loudly if uvicorn's methods change.

A worker whose supervisor is gone (killed by SIGKILL or the OOM killer) stops as on SIGTERM: an
orphan would keep the port and serve on, unsupervised, past any restart.

Only what no process keeps to itself can be spread so: stateless streamable HTTP on a store the
workers share (the settings refuse the rest). Limits that a process counts (connections,
sessions, SSE streams, requests in flight) are each worker's own.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
import threading
from functools import partial

import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors.multiprocess import Multiprocess, Process

from naive_mcp import event_loop
from naive_mcp.errors import ConfigurationError
from naive_mcp.exposure import check_exposure, url_host
from naive_mcp.logs import configure_logging
from naive_mcp.redaction import Redactor
from naive_mcp.settings import Settings

logger = logging.getLogger(__name__)

# Seconds a worker has to answer the supervisor's ping before it is taken for hung and replaced
# (uvicorn's default is 5): a worker answers from a thread of its own, but a spawned worker's
# first answer waits for its interpreter to start, which a loaded machine can make slow.
HEALTHCHECK_SECONDS = 20


class _Worker(Process):
    """One worker: in its own process, `serve_http` on the shared socket."""

    def __init__(self, config: uvicorn.Config, sockets: list[socket.socket], settings: Settings) -> None:
        self._settings = settings
        self._serving: uvicorn.Server | None = None
        self._not_yet: uvicorn.Server | None = None
        # `start()` pickles this object, settings and all, for the worker process (spawned, not forked).
        super().__init__(config, sockets)

    @property
    def server(self) -> uvicorn.Server:
        """The server whose `started` the supervisor's ping is answered with."""
        if self._serving is not None:
            return self._serving
        if self._not_yet is None:
            self._not_yet = uvicorn.Server(self.config)  # never run: it only says "not started"
        return self._not_yet

    def target(self, sockets: list[socket.socket] | None = None) -> None:
        """The worker process's whole life (uvicorn calls it there, with the shared socket)."""
        settings = self._settings
        # The supervisor's end of the ping pipe came along: closed here, the pipe ends when the
        # supervisor does, and the ping thread hears it.
        self.parent_conn.close()
        configure_logging(settings.log_level, Redactor(settings.secrets()), process_ids=True)
        threading.Thread(target=self._answer_pings, name="supervisor-ping", daemon=True).start()
        from naive_mcp.remote import serve_http  # the MCP SDK, only in the workers

        try:
            event_loop.run(
                settings.event_loop, partial(serve_http, settings, sockets=sockets, serving=self._set)
            )
        except Exception as error:
            if self._serving is not None and self._serving.started:
                raise  # a worker that served and failed: the supervisor replaces it
            # One that cannot start would fail the same way each time it is replaced: the
            # supervisor stops instead, on this exit status.
            reason = error.message if isinstance(error, ConfigurationError) else repr(error)
            logger.error(
                "a worker could not start: %s", reason, exc_info=not isinstance(error, ConfigurationError)
            )
            sys.exit(STARTUP_FAILURE)

    def _set(self, server: uvicorn.Server) -> None:
        self._serving = server

    def _answer_pings(self) -> None:
        with contextlib.suppress(EOFError, OSError):
            self.always_pong()
        # The pipe ended: the supervisor is stopping this worker (its SIGTERM came first), or is
        # gone. Stop as SIGTERM stops a server (its calls drained), or at once if not serving yet.
        if self._serving is None or not self._serving.should_exit:
            logger.warning("the supervisor is gone: stopping")
        os.kill(os.getpid(), signal.SIGTERM)


class _Supervisor(Multiprocess):
    """uvicorn's `Multiprocess`, making `_Worker`s. Each method here is uvicorn's own (0.55),
    but for the worker it makes; a test compares them with uvicorn's so a change is seen."""

    def __init__(self, config: uvicorn.Config, sockets: list[socket.socket], settings: Settings) -> None:
        super().__init__(config, sockets)
        self._settings = settings
        self.failed_to_start = False

    def _new_worker(self) -> _Worker:
        return _Worker(self.config, self.sockets, self._settings)

    def init_processes(self) -> None:
        for _ in range(self.processes_num):
            process = self._new_worker()
            process.start()
            self.processes.append(process)

    def restart_all(self) -> None:
        for idx, old_process in enumerate(self.processes):
            if self.should_exit.is_set():
                return
            new_process = self._new_worker()
            new_process.start()
            if not new_process.wait_until_ready(self.config.timeout_worker_healthcheck, self.should_exit):
                new_process.kill()
                new_process.join()
                if not self.should_exit.is_set():
                    logger.error(
                        "new worker [%s] was not ready in time; keeping worker [%s] and stopping the restart",
                        new_process.pid,
                        old_process.pid,
                    )
                return
            old_process.terminate()
            old_process.join()
            self.processes[idx] = new_process

    def keep_subprocess_alive(self) -> None:
        if self.should_exit.is_set():
            return
        for idx, process in enumerate(self.processes):
            if process.is_alive(timeout=self.config.timeout_worker_healthcheck):
                continue
            process.kill()  # hung: kill it
            process.join()
            if process.exitcode == STARTUP_FAILURE:
                # It failed before it served: its replacement would fail the same way.
                logger.error("worker [%s] could not start: stopping", process.pid)
                self.failed_to_start = True
                self.should_exit.set()
                return
            if self.should_exit.is_set():
                return
            logger.warning(
                "worker [%s] died (exit status %s): starting another", process.pid, process.exitcode
            )
            process = self._new_worker()
            process.start()
            self.processes[idx] = process

    def handle_ttin(self) -> None:
        logger.info("SIGTTIN: one more worker")
        self.processes_num += 1
        process = self._new_worker()
        process.start()
        self.processes.append(process)


def serve_workers(settings: Settings) -> None:
    """Serve HTTP in `settings.workers` processes until SIGINT/SIGTERM stops them all.

    What every worker would refuse is refused here first, once (as a `ConfigurationError`);
    a worker that still cannot start stops them all, and this exits with uvicorn's
    start-up failure status (3)."""
    check_exposure(settings)
    event_loop.uses_uvloop(settings.event_loop)
    config = uvicorn.Config(
        "naive_mcp.remote:serve_http",  # never loaded: each worker builds its own app
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_config=None,  # ours: stderr, redacted
        timeout_worker_healthcheck=HEALTHCHECK_SECONDS,
    )
    listening = config.bind_socket()
    supervisor = _Supervisor(config, [listening], settings)
    logger.info(
        "naive-mcp serving %s on http://%s:%d%s (stateless) in %d worker processes",
        settings.transport,
        url_host(settings.host),
        listening.getsockname()[1],
        settings.endpoint_path,
        settings.workers,
    )
    try:
        supervisor.run()
    finally:
        listening.close()
    if supervisor.failed_to_start:
        raise SystemExit(STARTUP_FAILURE)
    logger.info("naive-mcp stopped: every worker has")
