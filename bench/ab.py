"""`python -m bench.ab CHECKOUT[:NAME=VALUE] …`: one stdio chat figure for several checkouts of
naive-mcp (or one checkout under several settings), side by side in one run.

Each checkout's `naive_mcp` is served over stdio by this environment's Python (`python -m
naive_mcp`, run from the checkout, so its code is the one imported); the calls go in alternating
blocks, each paired with the direct request made just before it, and the figure is what the call
adds over that request (bench/overhead.py's "added, stdio"). How the before/after rows of
bench/history.md are taken for a change that touches the server's own code.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import time
import uuid
from contextlib import AsyncExitStack
from typing import TextIO

import anyio
import httpx2
from mcp import Client
from mcp.client.stdio import StdioServerParameters, stdio_client

from bench import clients, overhead
from bench.upstream import direct_chat, sandbox_process


async def _measure(url: str, variants: list[str], runs: int, rounds: int) -> dict[str, list[float]]:
    key = f"nv_sk_test_bench_{uuid.uuid4().hex}"
    added: dict[str, list[float]] = {variant: [] for variant in variants}
    with open(os.devnull, "w") as quiet:  # noqa: ASYNC230 (opening /dev/null does not block)
        return await _blocks(url, variants, runs, rounds, key, added, quiet)


async def _blocks(
    url: str,
    variants: list[str],
    runs: int,
    rounds: int,
    key: str,
    added: dict[str, list[float]],
    quiet: TextIO,
) -> dict[str, list[float]]:
    async with httpx2.AsyncClient() as http, AsyncExitStack() as stack:
        served: dict[str, Client] = {}
        for variant in variants:
            checkout, _, setting = variant.partition(":")
            extra = dict([setting.split("=", 1)]) if setting else {}
            env = {
                "PATH": os.environ.get("PATH", ""),
                "NAIVE_LOG_LEVEL": "WARNING",
                "NAIVE_BASE_URL": url,
                "NAIVE_API_KEY": key,
                **clients.server_env(),
                **extra,
            }
            params = StdioServerParameters(
                command=sys.executable, args=["-m", "naive_mcp"], env=env, cwd=checkout
            )
            served[variant] = await stack.enter_async_context(Client(stdio_client(params, errlog=quiet)))
        for client in served.values():
            for _ in range(20):
                await overhead._chat(client)
        for round_ in range(rounds):
            for variant in variants if round_ % 2 == 0 else variants[::-1]:
                for _ in range(runs):
                    started = time.perf_counter()
                    await direct_chat(http, url, key)
                    between = time.perf_counter()
                    await overhead._chat(served[variant])
                    ended = time.perf_counter()
                    added[variant].append(((ended - between) - (between - started)) * 1000)
    return added


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__)
    parser.add_argument("variants", nargs="+", help="a checkout's directory, optionally :NAIVE_SETTING=value")
    parser.add_argument("--runs", type=int, default=40, help="calls per block (default 40)")
    parser.add_argument("--rounds", type=int, default=6, help="blocks per variant (default 6)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, force=True)
    with sandbox_process() as url:
        added = anyio.run(_measure, url, args.variants, args.runs, args.rounds)
    for variant, samples in added.items():
        median = statistics.median(samples)
        sys.stdout.write(f"{variant:50s} added over the direct request, stdio: {median:.2f} ms\n")


if __name__ == "__main__":
    main()
