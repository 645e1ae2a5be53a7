"""Clients this project did not write, installed by `scripts/bootstrap --dev` into tests/interop:
the official MCP Inspector CLI and the TypeScript SDK's client (driven by tests/interop/ts_client.mjs)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

INTEROP = Path(__file__).parent / "interop"
INSPECTOR = INTEROP / "node_modules" / ".bin" / "mcp-inspector"
TS_CLIENT = INTEROP / "ts_client.mjs"
EXIT_TOOL_ERROR = 5  # the Inspector's exit code for a result with isError: true


def run_inspector(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`mcp-inspector --cli --format json ARGS`; HOME is `home` so its own files land there."""
    return node(home, str(INSPECTOR), "--cli", "--format", "json", *args)


def run_ts_client(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return node(home, "node", str(TS_CLIENT), *args)


def result_of(run: subprocess.CompletedProcess[str], *, exit_code: int = 0) -> dict[str, Any]:
    """The `result` of the one JSON object on stdout, after checking the exit code."""
    assert run.returncode == exit_code, f"exit {run.returncode}\nstdout: {run.stdout}\nstderr: {run.stderr}"
    envelope: dict[str, Any] = json.loads(run.stdout)
    result: dict[str, Any] = envelope["result"]
    return result


def node(home: Path, *command: str) -> subprocess.CompletedProcess[str]:
    if not INSPECTOR.exists():
        pytest.fail(f"{INSPECTOR} is missing: run `scripts/bootstrap --dev` to install the interop clients")
    return subprocess.run(
        list(command),
        cwd=INTEROP,
        env={"PATH": os.environ["PATH"], "HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
