"""`python -m naive_mcp.doctor`: a good setup passes; each broken one is named with its fix."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import anyio
import pytest

from naive_mcp.caller import secret_digest
from naive_mcp.store import CallRecord, CallResult, StoreLocation
from naive_mcp.store.store import Store
from tests.conftest import NAIVE_MCP

# Each test runs naive-mcp subprocesses, each with a sandbox.
pytestmark = pytest.mark.slow

KEY = "nv_sk_test_d0ctor_key_never_shown_77"


def run(home: Path, module: str, *args: str, **env_vars: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NAIVE_", "XDG_", "CLAUDE_"))}
    env.update(HOME=str(home), APPDATA=str(home / "AppData"), XDG_CONFIG_HOME=str(home / ".config"))
    env.setdefault("XDG_DATA_HOME", str(home / ".local" / "share"))
    env.update(env_vars)
    return subprocess.run(
        [str(NAIVE_MCP), module.removeprefix("naive_mcp."), *args],  # `naive-mcp install|doctor …`
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def line(done: subprocess.CompletedProcess[str], start: str) -> str:
    found = [text for text in done.stdout.splitlines() if text.startswith(start)]
    assert found, done.stdout + done.stderr
    return found[0]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_good_setup_passes(tmp_path: Path) -> None:
    assert run(tmp_path, "naive_mcp.install", "cursor", "--sandbox").returncode == 0

    done = run(tmp_path, "naive_mcp.doctor", "--sandbox")

    assert done.returncode == 0, done.stdout + done.stderr
    assert "problem" not in done.stdout
    assert "answers the Naive API and takes the key" in line(done, "ok: upstream:")
    assert "not known yet" in line(done, "ok: balance:")
    assert "has 'naive'" in line(done, "ok: Cursor:") and "--sandbox; sandbox)" in line(done, "ok: Cursor:")
    assert "not found" in line(done, "ok: Claude Desktop:")
    assert done.stdout.rstrip().endswith("all good")


def test_no_key_and_no_client(tmp_path: Path) -> None:
    done = run(tmp_path, "naive_mcp.doctor", NAIVE_BASE_URL=f"http://127.0.0.1:{closed_port()}")

    assert done.returncode == 1
    assert "fix: export NAIVE_API_KEY=nv_sk_live_…" in line(done, "problem: key: NAIVE_API_KEY is not set")
    assert "fix: naive-mcp install claude-desktop" in line(done, "problem: clients:")


def test_a_malformed_key_is_named_and_never_shown(tmp_path: Path) -> None:
    bad = f"Bearer {KEY}"
    done = run(tmp_path, "naive_mcp.doctor", "--sandbox", NAIVE_API_KEY=bad, NAIVE_STORE="memory")

    assert done.returncode == 1
    problem = line(done, "problem: key:")
    assert 'starts with "Bearer"' in problem and "fix: set NAIVE_API_KEY to the key exactly" in problem
    assert "refused the key" in line(done, "problem: upstream:")  # the sandbox does not take it either
    assert KEY not in done.stdout + done.stderr and "d0ctor" not in done.stdout + done.stderr


def test_a_closed_port_is_unreachable(tmp_path: Path) -> None:
    port = closed_port()
    done = run(tmp_path, "naive_mcp.doctor", NAIVE_API_KEY=KEY, NAIVE_BASE_URL=f"http://127.0.0.1:{port}")

    assert done.returncode == 1
    problem = line(done, "problem: upstream:")
    assert f"could not reach http://127.0.0.1:{port}" in problem
    assert "fix: check that NAIVE_BASE_URL" in problem
    assert line(done, "ok: key:")  # the key itself is fine
    assert KEY not in done.stdout + done.stderr


def test_an_unwritable_store(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")  # a directory that is a file: not even root can create the store in it
    done = run(
        tmp_path, "naive_mcp.doctor", "--sandbox", NAIVE_API_KEY=KEY, NAIVE_STORE=str(blocker / "store.db")
    )

    assert done.returncode == 1
    problem = line(done, "problem: store:")
    assert str(blocker / "store.db") in problem and "fix: make the directory" in problem
    assert "set NAIVE_STORE to a file path" in problem


def test_the_balance_the_store_kept(tmp_path: Path) -> None:
    store_path = tmp_path / "store.db"

    async def seed(credits: float) -> None:
        store = await Store.open(StoreLocation.parse(str(store_path)))
        call = CallRecord(
            call_id=f"c{credits}",
            started_at=time.time(),
            key_digest=secret_digest(KEY),
            user_id=None,
            project_id=None,
            model_asked="sandbox/echo",
        )
        await store.reserve([call], "test", [], lambda index, figures: 0.0)
        await store.settle(call, CallResult("answered", 0.1, True), balance=credits)
        await store.aclose()

    anyio.run(seed, 42.5)
    done = run(tmp_path, "naive_mcp.doctor", "--sandbox", NAIVE_API_KEY=KEY, NAIVE_STORE=str(store_path))
    assert "42.5 credits, as last reported" in line(done, "ok: balance:")

    anyio.run(seed, 0.0)
    done = run(tmp_path, "naive_mcp.doctor", "--sandbox", NAIVE_API_KEY=KEY, NAIVE_STORE=str(store_path))
    assert done.returncode == 1
    assert "fix: top up credits" in line(done, "problem: balance: 0 credits")


def test_a_bad_setting_and_a_broken_client_entry(tmp_path: Path) -> None:
    config = tmp_path / ".cursor" / "mcp.json"
    config.parent.mkdir()
    config.write_text('{"mcpServers": {"naive": {"command": "/gone/naive-mcp"}}}')

    done = run(tmp_path, "naive_mcp.doctor", "--sandbox", NAIVE_BASE_URL="ftp://x")

    assert done.returncode == 1
    assert "fix: correct or unset NAIVE_BASE_URL" in line(done, "problem: setting NAIVE_BASE_URL")
    assert "fix: naive-mcp install cursor" in line(done, "problem: Cursor:")


def test_client_checks_what_that_clients_entry_gives_the_server(tmp_path: Path) -> None:
    port = closed_port()
    installed = run(
        tmp_path,
        "naive_mcp.install",
        "cursor",
        "--env",
        f"NAIVE_BASE_URL=http://127.0.0.1:{port}",
        NAIVE_API_KEY=KEY,
    )
    assert installed.returncode == 0, installed.stderr

    done = run(tmp_path, "naive_mcp.doctor")  # this shell has no key: the entry has one
    assert "fix: check the one a client uses with `naive-mcp doctor --client cursor`" in line(
        done, "problem: key: NAIVE_API_KEY is not set in this environment (the entry of Cursor sets one"
    )

    done = run(tmp_path, "naive_mcp.doctor", "--client", "cursor")
    assert done.returncode == 1
    assert line(done, "ok: key: NAIVE_API_KEY is set and well-formed")
    assert f"could not reach http://127.0.0.1:{port}" in line(done, "problem: upstream:")
    assert KEY not in done.stdout + done.stderr

    done = run(tmp_path, "naive_mcp.doctor", "--client", "claude-desktop")
    assert done.returncode == 1
    assert "fix: naive-mcp install claude-desktop" in line(done, "problem: Claude Desktop's config has no")
