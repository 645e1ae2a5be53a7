"""`python -m bench`: run the benchmarks, print the tables, write bench/results.md.

`--smoke` runs each figure a few times without writing results: CI uses it so the entry point
never rots; thresholds live in the report, never in tests.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import anyio

from bench import clients, load, overhead, sizes, startup, store, streaming
from bench.report import render
from bench.upstream import sandbox_process

RESULTS = Path(__file__).with_name("results.md")
SECTIONS = ("overhead", "streaming", "sizes", "startup", "load", "burst", "store")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--runs", type=int, default=30, help="runs of each latency figure (default 30)")
    parser.add_argument(
        "--calls", type=int, default=1000, help="chat calls on each server in the load run (default 1000)"
    )
    parser.add_argument(
        "--in-flight", type=int, default=50, help="calls in flight in the load run (default 50)"
    )
    parser.add_argument(
        "--burst", type=int, default=200, help="simultaneous calls in the burst (default 200)"
    )
    parser.add_argument("--smoke", action="store_true", help="a few runs of everything, nothing written")
    parser.add_argument(
        "--only",
        action="append",
        choices=SECTIONS,
        help="run only this section (repeatable); the results file is then not written",
    )
    args = parser.parse_args()
    if args.smoke:
        runs, calls, in_flight, burst, rounds, memory_calls, block, workers_calls = 1, 20, 5, 10, 1, 20, 5, 2
    else:
        runs, calls, in_flight, burst, rounds, memory_calls, block, workers_calls = (
            args.runs,
            args.calls,
            args.in_flight,
            args.burst,
            3,
            10_000,
            20,
            5,
        )
    chosen = set(args.only or SECTIONS)
    # force: importing a bare MCPServer (bench/bare_server.py) already set the root logger to INFO,
    # and logging every HTTP request would load the client side of every figure.
    logging.basicConfig(level=logging.WARNING, force=True)
    # Every server the bench starts names its store (bench/clients.py: the run's scratch SQLite
    # file unless a figure needs another); this catches any in-process one that does not (the
    # output sizes', whose bytes no store changes), and overrides a NAIVE_STORE of the user's.
    os.environ["NAIVE_STORE"] = clients.scratch_store()

    sections: list[str] = []
    if "overhead" in chosen:
        sections.append(_overhead(runs, memory_calls))
    if "streaming" in chosen:
        sections.append(_streaming(runs))
    if "sizes" in chosen:
        sections.append(render("Output sizes", anyio.run(sizes.measure)))
    if "startup" in chosen:
        sections.append(_startup(runs))
    if "load" in chosen:
        figures, notes = load.run(calls, in_flight, rounds)
        sections.append(render("Load over streamable HTTP", figures, notes=notes))
    if "burst" in chosen:
        figures, notes = load.burst(burst, rounds, workers_calls)
        sections.append(render("Burst and workers over streamable HTTP", figures, notes=notes))
    if "store" in chosen:
        figures, notes = anyio.run(store.measure, runs * 10, runs, block)
        sections.append(render("State store", figures, notes=notes))
    report = "\n".join(sections)
    sys.stdout.write(report)
    if not args.smoke and args.only is None:
        RESULTS.write_text("# naive-mcp benchmark results\n\n`python -m bench` wrote this file.\n\n" + report)
        sys.stdout.write(f"\nwritten to {RESULTS}\n")


def _overhead(runs: int, memory_calls: int) -> str:
    return render(
        "Overhead of one call",
        anyio.run(overhead.measure, runs * 3, memory_calls),
        notes=[
            "A block of runs per client; in each run of the chat and relay blocks the direct "
            'request is made just before the call, and "added" is the call minus that request.',
            "No progress token or callback is sent, as most calls go; a call that asks for "
            "progress also runs the progress reporter (~0.5 ms in memory, bench/history.md).",
            "Direct: httpx2 posts the chat request and reads the SSE stream, as a program calling "
            "Naive itself would. The sandbox runs in a process of its own.",
            "naive-mcp's store: a SQLite file (the default engine) in a temp dir of the run.",
            "Floor: the same SDK client calling bench/bare_server.py's one trivial tool.",
            "Memory: this process's RSS (client and in-memory server) after 100 warm-up calls and "
            "after the rest.",
        ],
    )


def _streaming(runs: int) -> str:
    return render(
        "Streaming",
        anyio.run(streaming.measure, runs),
        notes=[
            "Sandbox upstream on loopback with zero latency; `sandbox/slow` answers in 20 ms chunks.",
            "First chunk: from the sandbox sending its first SSE chunk to the progress callback.",
            "Cancel: from the client cancelling the call to the sandbox seeing the connection close.",
        ],
    )


def _startup(runs: int) -> str:
    with sandbox_process() as upstream:
        figures = startup.measure(runs, upstream)
    return render(
        "Cold start, idle memory and the first call",
        figures,
        notes=[
            "Spawn to the first tools/list answer over stdio; RSS read then. Floor: "
            "bench/bare_server.py, spawned in turn with naive-mcp; the ratio is taken run by run.",
            "First call: a fresh naive-mcp (its store the run's scratch SQLite file) against the "
            "sandbox in a process of its own; the pause runs from the tools/list answer to the call.",
        ],
    )


main()
