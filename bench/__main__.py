"""`python -m bench`: run the benchmarks, print the table, write bench/results.md.

`--smoke` runs each figure a few times without writing results: CI uses it so the entry point
never rots; thresholds live in the report, never in tests.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import anyio

from bench import streaming
from bench.report import render

RESULTS = Path(__file__).with_name("results.md")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--runs", type=int, default=30, help="runs of each figure (default 30)")
    parser.add_argument("--smoke", action="store_true", help="3 runs each, nothing written")
    args = parser.parse_args()
    runs = 3 if args.smoke else args.runs
    logging.basicConfig(level=logging.WARNING)

    figures = anyio.run(streaming.measure, runs)
    report = render(
        "Streaming",
        figures,
        notes=[
            "Sandbox upstream on loopback with zero latency; `sandbox/slow` answers in 20 ms chunks.",
            "First chunk: from the sandbox sending its first SSE chunk to the client's progress callback.",
            "Cancel: from the client cancelling the call to the sandbox seeing the connection close.",
        ],
    )
    sys.stdout.write(report)
    if not args.smoke:
        RESULTS.write_text("# naive-mcp benchmark results\n\n`python -m bench` wrote this file.\n\n" + report)
        sys.stdout.write(f"\nwritten to {RESULTS}\n")


main()
