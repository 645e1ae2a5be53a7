"""`python -m naive_mcp.install`: each client's config edited in place, in temporary homes."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

from naive_mcp.install import config_path
from tests.conftest import NAIVE_MCP

KEY = "nv_sk_live_k3y_that_must_never_show_9f8e7d"


def run_install(home: Path, *args: str, key: str | None = KEY) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NAIVE_", "XDG_", "CLAUDE_"))}
    env.update(HOME=str(home), APPDATA=str(home / "AppData"), XDG_CONFIG_HOME=str(home / ".config"))
    if key is not None:
        env["NAIVE_API_KEY"] = key
    return subprocess.run(
        [str(NAIVE_MCP), "install", *args],  # the command a user types
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def assert_key_hidden(done: subprocess.CompletedProcess[str]) -> None:
    assert KEY not in done.stdout and KEY not in done.stderr
    assert "k3y_that" not in done.stdout + done.stderr


@pytest.mark.parametrize(
    ("client", "where"),
    [
        ("claude-desktop", ".config/Claude/claude_desktop_config.json"),
        ("claude-code", ".claude.json"),
        ("cursor", ".cursor/mcp.json"),
    ],
)
@pytest.mark.slow
def test_each_client_keeps_other_servers_and_keys_and_backs_up(
    tmp_path: Path, client: str, where: str
) -> None:
    path = tmp_path / where
    path.parent.mkdir(parents=True, exist_ok=True)
    before = {
        "theme": "dark",  # ~/.claude.json holds much more than servers: all of it stays
        "mcpServers": {"other": {"command": "/usr/bin/other", "env": {"OTHER_TOKEN": "t0k"}}},
    }
    path.write_text(json.dumps(before))
    path.chmod(0o640)

    done = run_install(tmp_path, client)

    assert done.returncode == 0, done.stderr
    assert_key_hidden(done)
    after = json.loads(path.read_text())
    assert after["theme"] == "dark"
    assert after["mcpServers"]["other"] == before["mcpServers"]["other"]
    entry = after["mcpServers"]["naive"]
    assert Path(entry["command"]).is_absolute()
    assert entry["env"] == {"NAIVE_API_KEY": KEY}
    assert entry.get("type") == ("stdio" if client == "claude-code" else None)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640  # the original's permissions
    backups = list(path.parent.glob(f"{path.name}.bak-*"))
    assert len(backups) == 1 and json.loads(backups[0].read_text()) == before
    assert "kept 1 other server(s): other" in done.stdout
    assert "nv_sk_live_…(set)" in done.stdout


def test_the_default_paths_per_os(tmp_path: Path) -> None:
    home = Path("/home/u")
    assert config_path("claude-desktop", platform="darwin", environ={}, home=home) == Path(
        "/home/u/Library/Application Support/Claude/claude_desktop_config.json"
    )
    assert config_path(
        "claude-desktop", platform="win32", environ={"APPDATA": "/w/Roaming"}, home=home
    ) == Path("/w/Roaming/Claude/claude_desktop_config.json")
    assert config_path("claude-desktop", platform="linux", environ={}, home=home) == Path(
        "/home/u/.config/Claude/claude_desktop_config.json"
    )
    assert config_path("cursor", platform="win32", environ={}, home=home) == Path("/home/u/.cursor/mcp.json")
    assert config_path("claude-code", platform="darwin", environ={}, home=home) == Path(
        "/home/u/.claude.json"
    )


@pytest.mark.slow
def test_a_new_file_and_directory_are_created_private(tmp_path: Path) -> None:
    done = run_install(tmp_path, "claude-desktop")

    assert done.returncode == 0, done.stderr
    assert_key_hidden(done)
    path = tmp_path / ".config/Claude/claude_desktop_config.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text())["mcpServers"]["naive"]["env"]["NAIVE_API_KEY"] == KEY
    assert not list(path.parent.glob("*.bak-*"))  # nothing was there to back up
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left


@pytest.mark.slow
def test_print_shows_the_entry_masked_and_writes_nothing(tmp_path: Path) -> None:
    store = "postgresql://naive:pg-pa55word@db.example/naive"
    done = run_install(
        tmp_path,
        "cursor",
        "--print",
        "--env",
        "NAIVE_DEFAULT_MODEL=openai/gpt-5",
        "--env",
        f"NAIVE_STORE={store}",
    )

    assert done.returncode == 0, done.stderr
    assert_key_hidden(done)
    assert "pg-pa55word" not in done.stdout + done.stderr
    shown = json.loads(done.stdout)["mcpServers"]["naive"]
    assert shown["env"] == {
        "NAIVE_API_KEY": "nv_sk_live_…(set)",
        "NAIVE_DEFAULT_MODEL": "openai/gpt-5",
        "NAIVE_STORE": "postgresql://naive:…@db.example/naive",
    }
    assert not (tmp_path / ".cursor").exists()


@pytest.mark.slow
def test_invalid_json_is_refused_and_left_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / ".cursor" / "mcp.json"
    path.parent.mkdir()
    path.write_text('{"mcpServers": {"other": {},}}')  # a trailing comma

    done = run_install(tmp_path, "cursor")

    assert done.returncode == 1
    assert "is not valid JSON" in done.stderr and "nothing was changed" in done.stderr
    assert path.read_text() == '{"mcpServers": {"other": {},}}'
    assert [p.name for p in path.parent.iterdir()] == ["mcp.json"]
    assert_key_hidden(done)


@pytest.mark.slow
def test_an_existing_entry_is_replaced_and_said_so(tmp_path: Path) -> None:
    config = tmp_path / "project" / ".cursor" / "mcp.json"
    config.parent.mkdir(parents=True)
    config.write_text(json.dumps({"mcpServers": {"naive": {"command": "/old/naive-mcp", "env": {}}}}))

    done = run_install(tmp_path, "cursor", "--config", str(config), "--sandbox", key=None)

    assert done.returncode == 0, done.stderr
    assert "replaced the existing 'naive' entry (it ran /old/naive-mcp)" in done.stdout
    entry = json.loads(config.read_text())["mcpServers"]["naive"]
    assert entry["args"][-1] == "--sandbox" and entry["env"] == {}
    assert not (tmp_path / ".cursor").exists()  # --config: the user's own file is not touched


@pytest.mark.slow
def test_the_key_from_env_flag_and_no_key_warning(tmp_path: Path) -> None:
    done = run_install(tmp_path, "claude-code", "--env", "NAIVE_API_KEY", key=None)
    assert done.returncode == 1 and "NAIVE_API_KEY is not set in this environment" in done.stderr

    done = run_install(tmp_path, "claude-code", key=None)
    assert done.returncode == 0
    assert "no NAIVE_API_KEY" in done.stderr
    assert json.loads((tmp_path / ".claude.json").read_text())["mcpServers"]["naive"]["env"] == {}

    done = run_install(tmp_path, "claude-code", "--env", f"NAIVE_API_KEY={KEY}", key=None)
    assert done.returncode == 0
    assert_key_hidden(done)


@pytest.mark.slow
def test_a_linked_config_is_edited_where_it_lives(tmp_path: Path) -> None:
    dotfiles = tmp_path / "dotfiles" / "mcp.json"
    dotfiles.parent.mkdir()
    dotfiles.write_text('{"mcpServers": {}}')
    link = tmp_path / ".cursor" / "mcp.json"
    link.parent.mkdir()
    link.symlink_to(dotfiles)

    done = run_install(tmp_path, "cursor")

    assert done.returncode == 0, done.stderr
    assert link.is_symlink()
    assert "naive" in json.loads(dotfiles.read_text())["mcpServers"]
