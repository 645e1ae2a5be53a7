"""Load over streamable HTTP against the sandbox on loopback, each server in a process of its
own, driven by the light load generator (bench/loadgen.py: raw HTTP/1.1 on kept-alive
connections), so that the figures are the servers' and not their clients'.

The floors are bench/bare_http_server.py, a bare MCPServer: its `wait` tool answers at once (or
after the upstream's latency), its `relay` tool makes the same chat request naive-mcp's call
makes and nothing else. Every server under a figure runs at once, and each round measures
them in turn, so that a ratio is taken round by round on the same machine. Server CPU time is
read from /proc (the server's process and its workers); each block of calls runs on connections
opened and warmed by a call for it (idle connections would be closed by the servers meanwhile).

- Sustained (`run`): `in_flight` connections call back to back, stateful and stateless, naive-mcp
  and the floor. Counted: latency, errors, the server's CPU per call, its resident memory.
- Burst (`burst`): `calls` connections, each with its session open and warm, call at the same
  moment, with the upstream taking 200 ms to answer; the clock runs to the last answer.
- Workers (`burst` too): the same connections calling back to back, at the same upstream latency,
  against `naive-mcp --stateless` with one worker and with two: calls/s.
"""

from __future__ import annotations

import asyncio
import math
import os
import statistics
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from bench import clients, loadgen
from bench.report import Figure
from bench.upstream import (
    connection_holders,
    cpu_seconds,
    free_port,
    machine_cpu,
    process_tree,
    rss_mb,
    sandbox_process,
    sandbox_server,
    wait_until_healthy,
)

MEMORY_GROWTH_TARGET_MB = 5.0
BURST_LATENCY = 0.2  # seconds the upstream takes to answer, in the burst and the workers' run
BURST_TARGET_MS = 1.5 * BURST_LATENCY * 1000
CPU_RATIO_TARGET = 2.0  # naive-mcp's server CPU per chat call / the floor's per trivial call
STATELESS_EXTRA_TARGET_MS = 0.0  # stateless no dearer than stateful
SETTLE_SECONDS = 0.5  # between warming a block's connections and measuring it
CHAT = loadgen.Call("naive_llm_chat", {"prompt": "load"})
TRIVIAL = loadgen.Call("wait", {"text": "load"})
RELAY = loadgen.Call("relay", {"text": "load"})
_ROOT = Path(__file__).parents[1]  # where `python -m bench.bare_http_server` runs from
_T = TypeVar("_T")


@dataclass
class Server:
    """A server under load: where it listens, its process, the call a block makes on it."""

    name: str
    url: str
    pid: int
    call: loadgen.Call
    stateful: bool

    @property
    def endpoint(self) -> loadgen.Endpoint:
        return loadgen.Endpoint.of(self.url)

    def pool(self, size: int) -> loadgen.Pool:
        return loadgen.Pool(self.endpoint, self.call, self.stateful, size)


@dataclass
class Block:
    """One block of calls on one server: what it cost the server."""

    calls: int
    errors: int
    seconds: float
    server_cpu_seconds: float
    client_cpu_seconds: float
    latencies_ms: list[float] = field(default_factory=list)
    spread: list[int] = field(default_factory=list)  # connections each worker held, most first
    upstream_cpu_seconds: float = 0.0  # the sandbox's, when counted
    machine_busy: float = 0.0  # share of all the machine's cores busy over the block (anyone's work)

    @property
    def cpu_ms_per_call(self) -> float:
        return self.server_cpu_seconds * 1000 / self.calls

    @property
    def calls_per_second(self) -> float:
        return self.calls / self.seconds


def run(calls: int, in_flight: int, rounds: int) -> tuple[list[Figure], list[str]]:
    """Sustained load, stateful and stateless, naive-mcp and the floor, `rounds` rounds."""
    per_block = max(1, math.ceil(calls / (in_flight * rounds)))  # each connection's calls in a block
    with (
        sandbox_process() as upstream,
        _servers(
            _naive_mcp(upstream, stateful=True),
            _bare(0.0, stateful=True),
            _relay(upstream, stateful=True),
            _naive_mcp(upstream, stateful=False),
            _bare(0.0, stateful=False),
            _relay(upstream, stateful=False),
        ) as started,
    ):
        servers = {"stateful": started[:3], "stateless": started[3:]}
        naive_stateful = servers["stateful"][0]
        blocks: dict[str, list[Block]] = {}
        rss: list[float] = []
        for turn in range(rounds):
            for pair in servers.values():
                for server in pair:
                    halfway = turn == rounds // 2 and server is naive_stateful

                    def note_rss(pid: int = server.pid) -> None:
                        rss.append(rss_mb(pid))

                    if turn == 0 and server is naive_stateful:
                        _drive(_block(server, in_flight, 2, None))  # warm-up: imports, pools, sessions
                        note_rss()
                    block = _drive(_block(server, in_flight, per_block, note_rss if halfway else None))
                    blocks.setdefault(server.name, []).append(block)
        rss.append(rss_mb(naive_stateful.pid))
    return _load_figures(blocks, rss, in_flight, per_block * in_flight, rounds)


def _load_figures(
    blocks: dict[str, list[Block]], rss: list[float], in_flight: int, calls: int, rounds: int
) -> tuple[list[Figure], list[str]]:
    naive_s, bare_s, relay_s = blocks["naive-mcp stateful"], blocks["bare stateful"], blocks["relay stateful"]
    naive_l, bare_l, relay_l = (
        blocks["naive-mcp stateless"],
        blocks["bare stateless"],
        blocks["relay stateless"],
    )
    figures = [
        Figure(
            f"chat over streamable HTTP, stateful, {in_flight} in flight",
            [ms for block in naive_s for ms in block.latencies_ms],
            None,
        ),
        Figure(
            f"chat over streamable HTTP, stateless, {in_flight} in flight",
            [ms for block in naive_l for ms in block.latencies_ms],
            None,
        ),
        Figure(
            "errors in the load runs",
            [float(sum(b.errors for blocks_ in blocks.values() for b in blocks_))],
            0.0,
            unit="calls",
        ),
        Figure("server memory growth after warm-up", [rss[-1] - rss[0]], MEMORY_GROWTH_TARGET_MB, unit="MB"),
    ]
    for mode, naive, bare, relay in (
        ("stateful", naive_s, bare_s, relay_s),
        ("stateless", naive_l, bare_l, relay_l),
    ):
        figures += [
            Figure(f"server CPU per chat call, {mode}, naive-mcp", [b.cpu_ms_per_call for b in naive], None),
            Figure(
                f"server CPU per trivial call, {mode}, bare MCPServer",
                [b.cpu_ms_per_call for b in bare],
                None,
            ),
            Figure(
                f"server CPU per call, {mode}, naive-mcp / bare, round by round",
                [n.cpu_ms_per_call / b.cpu_ms_per_call for n, b in zip(naive, bare, strict=True)],
                CPU_RATIO_TARGET,
                unit="x",
            ),
            Figure(
                f"server CPU per relayed chat request, {mode}, bare MCPServer",
                [b.cpu_ms_per_call for b in relay],
                None,
            ),
            Figure(
                f"server CPU per call, {mode}, naive-mcp / relay, round by round",
                [n.cpu_ms_per_call / r.cpu_ms_per_call for n, r in zip(naive, relay, strict=True)],
                None,
                unit="x",
            ),
        ]
    figures.append(
        Figure(
            "server CPU per chat call, stateless minus stateful, round by round",
            [lo.cpu_ms_per_call - st.cpu_ms_per_call for lo, st in zip(naive_l, naive_s, strict=True)],
            STATELESS_EXTRA_TARGET_MS,
        )
    )
    rates = "; ".join(
        f"{name} {statistics.median(b.calls_per_second for b in runs):.0f}" for name, runs in blocks.items()
    )
    client = statistics.median(
        b.client_cpu_seconds * 1000 / b.calls for runs in blocks.values() for b in runs
    )
    rss_text = ", ".join(f"{value:.1f}" for value in rss)
    notes = [
        f"{rounds} rounds; in each, a block of {calls} calls on {in_flight} connections per server, the "
        "servers in turn: naive-mcp and bench/bare_http_server.py's two floors (`wait`: one tool that "
        "answers at once; `relay`: one tool that makes the same chat request, nothing else), stateful "
        "and stateless. The sandbox upstream answers at once.",
        f"calls/s, median block: {rates}.",
        f"The load generator's own CPU: {client:.2f} ms a call (it shares the machine's cores with "
        "the servers and the sandbox).",
        f"naive-mcp stateful: server RSS after warm-up, halfway, at the end: {rss_text} MB.",
    ]
    return figures, notes


def burst(calls: int, rounds: int, workers_calls: int) -> tuple[list[Figure], list[str]]:
    """`rounds` bursts of `calls` simultaneous chat calls on naive-mcp and the floor (stateful),
    then calls/s at one and two workers (stateless), the upstream answering in BURST_LATENCY."""
    with (
        sandbox_server(latency=BURST_LATENCY) as (upstream, sandbox_pid),
        _servers(
            _naive_mcp(upstream, stateful=True),
            _bare(BURST_LATENCY, stateful=True),
            _naive_mcp(upstream, stateful=False, workers=1),
            _naive_mcp(upstream, stateful=False, workers=2),
        ) as (naive, bare, one, two),
    ):
        _drive(_every_worker_answers(two, 2))
        bursts: dict[str, list[tuple[loadgen.Burst, float]]] = {naive.name: [], bare.name: []}
        rates: dict[int, list[Block]] = {1: [], 2: []}
        for _ in range(rounds):
            for server in (naive, bare):
                bursts[server.name].append(_drive(_burst(server, calls)))
            for count, server in ((1, one), (2, two)):
                rates[count].append(
                    _drive(_block(server, calls, workers_calls, None, upstream_pid=sandbox_pid))
                )
    return _burst_figures(bursts[naive.name], bursts[bare.name], rates, calls, rounds, workers_calls)


def _burst_figures(
    naive: list[tuple[loadgen.Burst, float]],
    bare: list[tuple[loadgen.Burst, float]],
    rates: dict[int, list[Block]],
    calls: int,
    rounds: int,
    workers_calls: int,
) -> tuple[list[Figure], list[str]]:
    figures = [
        Figure(
            f"{calls} simultaneous chat calls, until the last answer, naive-mcp",
            [b.total_ms for b, _ in naive],
            BURST_TARGET_MS,
        ),
        Figure(
            f"{calls} simultaneous calls, until the last answer, bare MCPServer (floor)",
            [b.total_ms for b, _ in bare],
            BURST_TARGET_MS,
        ),
        Figure(
            "burst, naive-mcp / bare, round by round",
            [n.total_ms / b.total_ms for (n, _), (b, _) in zip(naive, bare, strict=True)],
            None,
            unit="x",
        ),
        Figure("server CPU time per call in the burst, naive-mcp", [cpu for _, cpu in naive], None),
        Figure("server CPU time per call in the burst, bare MCPServer", [cpu for _, cpu in bare], None),
        Figure(
            "errors in the bursts and the workers' runs",
            [
                float(
                    sum(b.errors for b, _ in naive + bare)
                    + sum(r.errors for rs in rates.values() for r in rs)
                )
            ],
            0.0,
            unit="calls",
        ),
    ]
    for count in (1, 2):
        figures.append(
            Figure(
                f"chat calls/s, stateless, {count} worker{'s' if count > 1 else ''}",
                [r.calls_per_second for r in rates[count]],
                None,
                unit="calls/s",
            )
        )
    figures.append(
        Figure(
            "chat calls/s, 2 workers / 1, round by round",
            [
                two.calls_per_second / one.calls_per_second
                for one, two in zip(rates[1], rates[2], strict=True)
            ],
            None,
            unit="x",
        )
    )
    spread = ", ".join("/".join(map(str, r.spread)) for r in rates[2])
    cpu = {count: statistics.median(r.cpu_ms_per_call for r in rates[count]) for count in (1, 2)}
    upstream = statistics.median(r.upstream_cpu_seconds * 1000 / r.calls for rs in rates.values() for r in rs)
    busy = {count: statistics.median(r.machine_busy for r in rates[count]) * 100 for count in (1, 2)}
    notes = [
        f"Burst: {calls} connections (bench/loadgen.py), each with its session open and warmed by a "
        f"call, call at once; the upstream takes {BURST_LATENCY * 1000:.0f} ms to answer; {rounds} "
        "rounds, naive-mcp and the floor (bench/bare_http_server.py, whose one tool waits as long) "
        "in turn.",
        f"Workers: `naive-mcp --stateless --workers N` on the run's SQLite file; {calls} connections "
        f"make {workers_calls} calls each back to back, same upstream latency; server CPU per call "
        f"(all its processes) {cpu[1]:.2f} ms at 1 worker, {cpu[2]:.2f} ms at 2; connections each "
        f"worker held, per round: {spread}. The {os.cpu_count()} cores are shared with the sandbox "
        f"(its CPU per call: {upstream:.2f} ms), the load generator and whatever else the machine "
        f"runs: all its cores were {busy[1]:.0f}% busy at 1 worker, {busy[2]:.0f}% at 2.",
    ]
    return figures, notes


def _drive(work: Coroutine[Any, Any, _T]) -> _T:
    """Run `work` on a fresh event loop: uvloop when installed, so that the generator costs less."""
    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:
        pass
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(work)


async def _block(
    server: Server,
    connections: int,
    calls_each: int,
    on_halfway: Callable[[], None] | None,
    *,
    upstream_pid: int | None = None,
) -> Block:
    pool = server.pool(connections)
    await pool.open()
    try:
        await loadgen.sustained(pool, 1)  # warm: every connection has made a call
        held = _spread(server, pool) if upstream_pid is not None else []
        await asyncio.sleep(SETTLE_SECONDS)
        cpu, upstream_cpu, machine = cpu_seconds(server.pid), _cpu_of(upstream_pid), machine_cpu()
        run = await loadgen.sustained(pool, calls_each, on_halfway)
        server_cpu, upstream_cpu = cpu_seconds(server.pid) - cpu, _cpu_of(upstream_pid) - upstream_cpu
        busy, total = (after - before for after, before in zip(machine_cpu(), machine, strict=True))
    finally:
        await pool.close()
    return Block(
        run.calls,
        run.errors,
        run.seconds,
        server_cpu,
        run.client_cpu_seconds,
        run.latencies_ms,
        held,
        upstream_cpu,
        busy / total if total else 0.0,
    )


def _cpu_of(pid: int | None) -> float:
    return cpu_seconds(pid) if pid is not None else 0.0


async def _burst(server: Server, calls: int) -> tuple[loadgen.Burst, float]:
    """One burst on fresh, warm connections; and the server's CPU per call over it (ms)."""
    pool = server.pool(calls)
    await pool.open()
    try:
        await loadgen.sustained(pool, 1)
        await asyncio.sleep(SETTLE_SECONDS)  # let the warm-up's stragglers settle
        cpu = cpu_seconds(server.pid)
        result = await loadgen.burst(pool)
        return result, (cpu_seconds(server.pid) - cpu) * 1000 / calls
    finally:
        await pool.close()


def _spread(server: Server, pool: loadgen.Pool) -> list[int]:
    holders = connection_holders(
        pool.endpoint.port, [c.local_port for c in pool.connections], process_tree(server.pid)
    )
    return sorted(Counter(holders.values()).values(), reverse=True)


async def _every_worker_answers(server: Server, workers: int, probes: int = 500) -> None:
    """Wait until each of the server's `workers` has answered a request: a connection is
    accepted by whichever worker is ready, and a pool opened before the last worker is would
    put all its connections on the others."""
    answered: set[int] = set()
    health = loadgen.Endpoint(server.endpoint.host, server.endpoint.port, "/health")
    for _ in range(probes):
        connection = await loadgen.Connection.open(health, TRIVIAL, stateful=False)
        try:
            response = await connection.exchange(connection.build("GET"))
            holders = connection_holders(health.port, [connection.local_port], process_tree(server.pid))
        finally:
            await connection.close()
        if response.status == 200:
            answered.update(holders.values())
        if len(answered) >= workers:
            return
        await asyncio.sleep(0.05)
    raise RuntimeError(f"{server.name}: only {len(answered)} of {workers} workers answered {probes} requests")


@dataclass(frozen=True)
class _Spec:
    """A server to start: its name, its command (given the port), its environment, its call."""

    name: str
    argv: Callable[[str], list[str]]
    env: dict[str, str]
    call: loadgen.Call
    stateful: bool


def _naive_mcp(upstream: str, *, stateful: bool, workers: int | None = None) -> _Spec:
    env = {
        "NAIVE_BASE_URL": upstream,
        "NAIVE_API_KEY": f"nv_sk_test_load_{uuid.uuid4().hex}",
        "NAIVE_DEFAULT_MODEL": "openai/gpt-5-mini",
        # The run's scratch SQLite file, the default engine: a server's load pays what its store
        # costs (one writer at a time), and never writes to the user's own store.
        **clients.server_env(),
    }
    command = [str(Path(sys.executable).with_name("naive-mcp")), "--transport", "streamable-http"]
    command += [] if stateful else ["--stateless"]
    command += [] if workers is None else ["--workers", str(workers)]
    name = f"naive-mcp {'stateful' if stateful else 'stateless'}"
    name += "" if workers is None else f", {workers} worker{'s' if workers > 1 else ''}"
    return _Spec(name, lambda port: [*command, "--port", port], env, CHAT, stateful)


def _bare(latency: float, *, stateful: bool) -> _Spec:
    mode = "stateful" if stateful else "stateless"
    argv = [sys.executable, "-m", "bench.bare_http_server"]
    return _Spec(f"bare {mode}", lambda port: [*argv, port, str(latency), mode], {}, TRIVIAL, stateful)


def _relay(upstream: str, *, stateful: bool) -> _Spec:
    """The bare server's `relay` tool: the same chat request naive-mcp's call makes, nothing else."""
    mode = "stateful" if stateful else "stateless"
    argv = [sys.executable, "-m", "bench.bare_http_server"]
    key = f"nv_sk_test_load_{uuid.uuid4().hex}"
    return _Spec(f"relay {mode}", lambda port: [*argv, port, "0", mode, upstream, key], {}, RELAY, stateful)


@contextmanager
def _servers(*specs: _Spec) -> Iterator[list[Server]]:
    """Start every server at once, each on a free port, and wait until each answers /health;
    stop them all (SIGTERM: one with workers stops them too) at the end."""
    with ExitStack() as stack:
        started = []
        for spec in specs:
            port = str(free_port())
            environment = {"PATH": os.environ.get("PATH", ""), "NAIVE_LOG_LEVEL": "WARNING", **spec.env}
            process = subprocess.Popen(
                spec.argv(port),
                env=environment,
                cwd=_ROOT,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            stack.callback(_stop, process)
            started.append((spec, port, process))
        for _, port, process in started:
            wait_until_healthy(f"http://127.0.0.1:{port}", process)
        yield [
            Server(spec.name, f"http://127.0.0.1:{port}/mcp", process.pid, spec.call, spec.stateful)
            for spec, port, process in started
        ]


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    process.wait(30)
