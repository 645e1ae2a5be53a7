"""`naive-mcp install CLIENT`: write this server's entry into an MCP client's config file.

Each client keeps its servers under a top-level `"mcpServers"` object (Claude Desktop's
claude_desktop_config.json, Cursor's mcp.json, Claude Code's ~/.claude.json for the user scope or
a project's .mcp.json). The entry named `--name` ("naive") is added or replaced; every other key
and server is kept. The file is written atomically (a temporary file renamed over it), the old one
is kept as `<file>.bak-YYYYmmddHHMMSS`, and its permissions are kept (a new file is 0600: it holds
the key). A file that is not a JSON object is refused and left as it was.

The key goes into the entry's `env` (that is how these clients hand a server its secrets) and is
never printed: `--print` and every message show it masked.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

KEY_VARIABLE = "NAIVE_API_KEY"
DEFAULT_NAME = "naive"
_KEY_PREFIXES = ("nv_sk_live_", "nv_sk_test_", "nv_sess_")
_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL", re.IGNORECASE)
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class Client:
    name: str  # as on the command line
    title: str  # as people call it
    stdio_type: bool  # whether its entries say "type": "stdio" (Claude Code writes it)


CLIENTS: dict[str, Client] = {
    "claude-desktop": Client("claude-desktop", "Claude Desktop", stdio_type=False),
    "claude-code": Client("claude-code", "Claude Code", stdio_type=True),
    "cursor": Client("cursor", "Cursor", stdio_type=False),
}


class InstallError(Exception):
    """A config that cannot be changed safely, or a bad argument: nothing was written."""


def config_path(
    client: str,
    *,
    platform: str = sys.platform,
    environ: Mapping[str, str] = os.environ,
    home: Path | None = None,
) -> Path:
    """Where `client` keeps its servers for this user, on this OS."""
    home = Path.home() if home is None else home
    if client == "claude-desktop":
        if platform == "darwin":
            base = home / "Library" / "Application Support"
        elif platform == "win32":
            base = Path(environ["APPDATA"]) if environ.get("APPDATA") else home / "AppData" / "Roaming"
        else:
            base = Path(environ["XDG_CONFIG_HOME"]) if environ.get("XDG_CONFIG_HOME") else home / ".config"
        return base / "Claude" / "claude_desktop_config.json"
    if client == "claude-code":
        # Claude Code keeps its user-scope servers in ~/.claude.json (or under CLAUDE_CONFIG_DIR).
        base = Path(environ["CLAUDE_CONFIG_DIR"]) if environ.get("CLAUDE_CONFIG_DIR") else home
        return base / ".claude.json"
    if client == "cursor":
        return home / ".cursor" / "mcp.json"
    raise ValueError(f"unknown client {client!r}")


def server_command() -> tuple[str, list[str]]:
    """The absolute command that starts this server, from the environment this code runs in."""
    scripts = Path(sys.executable).parent  # not resolved: a venv's python is a link out of it
    for name in ("naive-mcp.exe", "naive-mcp") if sys.platform == "win32" else ("naive-mcp",):
        candidate = scripts / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate.absolute()), []
    found = shutil.which("naive-mcp")
    if found is not None:
        return str(Path(found).absolute()), []
    return str(Path(sys.executable).absolute()), ["-m", "naive_mcp"]


def _url_password(value: str) -> str | None:
    try:
        return urlsplit(value).password if "://" in value else None
    except ValueError:
        return None


def masked(name: str, value: str) -> str:
    """A variable's value as it may be shown: a secret as its known prefix and `…(set)`, a URL
    without its password."""
    if not _SECRET_NAME.search(name):
        password = _url_password(value)
        return value.replace(f":{password}@", ":…@") if password else value
    if not value:
        return "(empty)"
    prefix = next((p for p in _KEY_PREFIXES if value.startswith(p)), "")
    return f"{prefix}…(set)"


def masked_entry(entry: Mapping[str, Any]) -> dict[str, Any]:
    shown = dict(entry)
    env = entry.get("env")
    if isinstance(env, dict):
        shown["env"] = {name: masked(name, str(value)) for name, value in env.items()}
    return shown


def build_entry(
    client: Client, *, sandbox: bool, env_args: list[str], environ: Mapping[str, str]
) -> tuple[dict[str, Any], list[str]]:
    """The server's entry, and warnings about it."""
    env: dict[str, str] = {}
    warnings: list[str] = []
    # With --sandbox the server needs no key: a real one is not copied into the entry unasked.
    if not sandbox and environ.get(KEY_VARIABLE, "").strip():
        env[KEY_VARIABLE] = environ[KEY_VARIABLE].strip()
    for arg in env_args:
        name, has_value, value = arg.partition("=")
        if not _ENV_NAME.match(name):
            raise InstallError("--env: expected NAME=VALUE (or NAME, to copy it from this environment)")
        if not has_value:
            # `--env NAME`: this shell's value, kept off the command line (and out of its history).
            if name not in environ:
                raise InstallError(f"--env {name}: {name} is not set in this environment")
            value = environ[name]
        env[name] = value.strip() if name == KEY_VARIABLE else value
    key = env.get(KEY_VARIABLE)
    if not key:
        env.pop(KEY_VARIABLE, None)
        if not sandbox:
            warnings.append(
                f"no {KEY_VARIABLE} in the environment or --env: the entry has no key, so the server will "
                f"list its tools but every call will ask for one. Rerun with {KEY_VARIABLE} exported "
                f"(or --env {KEY_VARIABLE}=…), or with --sandbox to try it offline"
            )
    elif not key.startswith(("nv_sk_live_", "nv_sk_test_")):
        warnings.append(
            f"{KEY_VARIABLE} does not look like a Naive API key (nv_sk_live_… or nv_sk_test_…); "
            "written as given — `naive-mcp doctor` checks it with the API"
        )
    command, args = server_command()
    if "archive-v0" in Path(command).parts or ".cache" in Path(command).parts:
        warnings.append(
            f"{command} runs from a cache (uvx, for instance), which may be cleaned away: for a path that "
            "lasts, install naive-mcp with `uv tool install`, pipx or pip, and run install from there"
        )
    entry: dict[str, Any] = {"type": "stdio"} if client.stdio_type else {}
    entry["command"] = command
    entry["args"] = [*args, *(["--sandbox"] if sandbox else [])]
    entry["env"] = env
    return entry, warnings


def read_config(path: Path) -> dict[str, Any] | None:
    """The config as a JSON object, None if there is no file; InstallError if it cannot be edited."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise InstallError(f"cannot read {path}: {exc.strerror}") from None
    if not text.strip():
        return {}
    try:
        config = json.loads(text)
    except ValueError as exc:
        raise InstallError(
            f"{path} is not valid JSON ({exc}); nothing was changed. Fix the file (or move it away to "
            "start a new one), then run this again"
        ) from None
    if not isinstance(config, dict):
        raise InstallError(f"{path} holds JSON that is not an object; nothing was changed")
    servers = config.get("mcpServers")
    if servers is not None and not isinstance(servers, dict):
        raise InstallError(f'{path}: "mcpServers" is not an object; nothing was changed')
    return config


def write_config(path: Path, config: Mapping[str, Any]) -> Path | None:
    """Write `config` to `path` atomically; returns the backup of the file it replaced, if any.
    The file keeps its permissions; a new one is 0600 (servers' entries hold their secrets)."""
    target = Path(os.path.realpath(path))  # a linked config (dotfiles) is edited where it lives
    existed = target.exists()
    target.parent.mkdir(parents=True, exist_ok=True)
    backup = None
    if existed:
        mode = target.stat().st_mode & 0o7777
        stamp = time.strftime("%Y%m%d%H%M%S")
        backup = target.with_name(f"{target.name}.bak-{stamp}")
        n = 1
        while backup.exists():
            backup = target.with_name(f"{target.name}.bak-{stamp}-{n}")
            n += 1
        shutil.copy2(target, backup)
    else:
        mode = 0o600
    fd, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(config, out, indent=2, ensure_ascii=False)
            out.write("\n")
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temp, mode)
        os.replace(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return backup


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="naive-mcp install",
        description="Add naive-mcp to an MCP client's config (every other server in it is kept).",
    )
    parser.add_argument("client", choices=sorted(CLIENTS), help="the client to set up")
    parser.add_argument(
        "--config",
        type=Path,
        help="the config file to edit (default: the client's own for this user; e.g. a project's "
        ".cursor/mcp.json or .mcp.json)",
    )
    parser.add_argument("--sandbox", action="store_true", help="run the server against the built-in sandbox")
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME[=VALUE]",
        help=f"a variable for the server (repeatable); NAME alone copies it from this environment. "
        f"{KEY_VARIABLE} is taken from the environment unless given",
    )
    parser.add_argument(
        "--name", default=DEFAULT_NAME, help=f"the server's name in the config ({DEFAULT_NAME})"
    )
    parser.add_argument(
        "--print", action="store_true", help="print the entry (key masked) instead of writing it"
    )
    args = parser.parse_args(argv)
    client = CLIENTS[args.client]
    secrets: list[str] = []
    try:
        entry, warnings = build_entry(client, sandbox=args.sandbox, env_args=args.env, environ=os.environ)
        env = entry["env"]
        secrets = [value for name, value in env.items() if _SECRET_NAME.search(name) and value]
        secrets += [p for p in map(_url_password, env.values()) if p]
        for warning in warnings:
            _say(f"warning: {warning}", secrets)
        if args.print:
            printed = {"mcpServers": {args.name: masked_entry(entry)}}
            sys.stdout.write(_redact(json.dumps(printed, indent=2, ensure_ascii=False), secrets) + "\n")
            return 0
        path = (args.config or config_path(client.name)).expanduser().absolute()
        config = read_config(path)
        created = config is None
        config = {} if config is None else config
        servers = config.setdefault("mcpServers", {})
        replaced = servers.get(args.name)
        servers[args.name] = entry
        try:
            backup = write_config(path, config)
        except OSError as exc:
            raise InstallError(f"cannot write {path}: {exc.strerror}; nothing was changed") from None
    except InstallError as error:
        _say(f"naive-mcp install: {error}", secrets)
        return 1
    others = sorted(name for name in servers if name != args.name)
    done = "created" if created else "updated"
    runs = " ".join([entry["command"], *entry["args"]])
    lines = [f"{done} {path}: server {args.name!r} runs {runs}"]
    if replaced is not None:
        ran = replaced.get("command", "?") if isinstance(replaced, dict) else "?"
        lines.append(f"replaced the existing {args.name!r} entry (it ran {ran})")
    if others:
        lines.append(f"kept {len(others)} other server(s): {', '.join(others)}")
    if backup is not None:
        lines.append(f"backup of the previous file: {backup}")
    if entry["env"]:
        shown = ", ".join(f"{name}={masked(name, value)}" for name, value in entry["env"].items())
        lines.append(f"env: {shown}")
    lines.append(f"restart {client.title} to load it; `naive-mcp doctor` checks the setup")
    for line in lines:
        _say(line, secrets, stream=sys.stdout)
    return 0


def _redact(text: str, secrets: list[str]) -> str:
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "…(secret)")
    return text


def _say(text: str, secrets: list[str], stream: Any = None) -> None:
    (stream or sys.stderr).write(_redact(text, secrets) + "\n")


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
