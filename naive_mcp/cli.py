"""`naive-mcp`: serve (the default), or run one command from a terminal.

`naive-mcp [SETTINGS…]` and `naive-mcp serve [SETTINGS…]` read the settings (environment, then
flags), set up logging and serve, on stdio or HTTP. `naive-mcp COMMAND …` runs one of `COMMANDS`.
"""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import NoReturn

from pydantic import SecretStr, ValidationError
from pydantic_settings import CliApp, SettingsError

from naive_mcp import __version__, event_loop
from naive_mcp.backend import STYLE_PATHS, ApiStyle
from naive_mcp.errors import ConfigurationError
from naive_mcp.logs import configure_logging
from naive_mcp.redaction import Redactor
from naive_mcp.settings import (
    SANDBOX_API_KEY,
    SANDBOX_DEFAULT_MODEL,
    SANDBOX_OPENROUTER_KEY,
    Settings,
    setting_problems,
)

logger = logging.getLogger("naive_mcp")


@dataclass(frozen=True, slots=True)
class Command:
    """A subcommand: `target` names its function as "module:function", imported only when the
    command runs (the server's start-up imports none of them). The function takes the arguments
    after the command's name and returns the exit status."""

    target: str
    summary: str

    def run(self, argv: list[str]) -> int:
        module, _, function = self.target.partition(":")
        entry: Callable[[list[str]], int] = getattr(importlib.import_module(module), function)
        return entry(argv)


# The subcommands. Adding one is adding its entry here.
COMMANDS: dict[str, Command] = {
    "serve": Command("naive_mcp.cli:serve", "serve MCP (the default: what an MCP client's config runs)"),
    "chat": Command("naive_mcp.terminal:chat", "ask a model; the answer streams to stdout"),
    "compare": Command(
        "naive_mcp.terminal:compare", "ask 2-8 models at once (-m, repeated); the answers side by side"
    ),
    "models": Command("naive_mcp.terminal:models", "find a model: search, --author, --sort, --limit"),
    "generation": Command("naive_mcp.terminal:generation", "what an earlier call cost, by its id"),
    "usage": Command("naive_mcp.terminal:usage", "what the store has recorded: all time, today, this month"),
    "install": Command(
        "naive_mcp.install:main", "write naive-mcp into Claude Desktop's, Claude Code's or Cursor's config"
    ),
    "doctor": Command("naive_mcp.doctor:main", "check what a first run needs, with the fix for each problem"),
}


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    name, rest = split_command(args)
    if name is not None:
        raise SystemExit(COMMANDS[name].run(rest))
    if args[:1] == ["--version"]:
        sys.stdout.write(f"naive-mcp {__version__}\n")
        return
    if any(arg in ("-h", "--help") for arg in args):
        sys.stdout.write(commands_help())
    serve(args)


def split_command(args: list[str]) -> tuple[str | None, list[str]]:
    """The command `args` name, and the rest: settings flags may come before the command
    (`naive-mcp --log-level DEBUG chat hi` is `naive-mcp chat --log-level DEBUG hi`). A word that
    is a flag's value (`--store usage`) names no command; no command is serving."""
    index = 0
    while index < len(args):
        arg = args[index]
        if arg in COMMANDS:
            return arg, args[:index] + args[index + 1 :]
        if not arg.startswith("--"):
            break  # a word that is not a command: the server's own flags parser says what is wrong
        if "=" not in arg and not _is_switch(arg):
            index += 1  # the flag's value follows it
        index += 1
    return None, args


def _is_switch(flag: str) -> bool:
    """`--sandbox`, `--no-sandbox`, `--version`, `--help`: a flag with no value after it."""
    name = flag.removeprefix("--").removeprefix("no-").replace("-", "_")
    field = Settings.model_fields.get(name)
    return flag in ("--version", "--help") or (field is not None and field.annotation is bool)


def commands_help() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name.ljust(width)}  {command.summary}" for name, command in COMMANDS.items()]
    return (
        "usage: naive-mcp [SETTINGS…] [COMMAND] …   (no command: serve)\n\ncommands:\n"
        + "\n".join(lines)
        + "\n  --version     print the version\n\n"
        + "`naive-mcp COMMAND --help` for a command's options. Serving:\n\n"
    )


def serve(args: list[str]) -> int:
    settings = read_settings(args)
    configure_logging(settings.log_level, Redactor(settings.secrets()), process_ids=settings.workers > 1)
    with sandboxed(settings) as effective:
        _serve(effective)
    return 0


def read_settings(args: list[str]) -> Settings:
    """The settings from the environment and `args` (the server's flags); a bad one exits 2."""
    refuse_secret_flags(args)
    try:
        return CliApp.run(Settings, cli_args=args)
    except (ValidationError, SettingsError) as exc:
        refuse(setting_problems(exc))


def refuse_secret_flags(args: list[str]) -> None:
    """Exit 2 if `args` carry a secret as a flag: the environment gives those."""
    for secret in ("api_key", "auth_tokens"):
        if any(arg.split("=", 1)[0] in (f"--{secret}", f"--{secret.replace('_', '-')}") for arg in args):
            refuse(
                f"{secret} is read from the environment only (NAIVE_{secret.upper()}): "
                "on the command line it is visible to every user of the machine"
            )


def refuse(problem: str) -> NoReturn:
    # Field names and reasons only, redacted: a rejected value may be a secret. One line a problem.
    for line in problem.splitlines():
        sys.stderr.write(f"naive-mcp: bad setting: {Redactor()(line)}\n")
    raise SystemExit(2)


@contextmanager
def sandboxed(settings: Settings) -> Iterator[Settings]:
    """`settings` as they are, or, with `--sandbox`, pointed at the built-in sandbox upstream,
    served on a thread while the block runs."""
    if not settings.sandbox:
        yield settings
        return
    if settings.workers > 1 and not settings.store:
        refuse(
            f"NAIVE_WORKERS: {settings.workers} workers need a store they share, and --sandbox keeps its "
            "state in each process's memory unless one is named: set NAIVE_STORE (a file path)"
        )
    from naive_mcp.sandbox import serve_in_thread

    with serve_in_thread() as sandbox:
        # The sandbox speaks every API style: NAIVE_API_STYLE picks the one it is reached by.
        style = ApiStyle.NAIVE if settings.api_style == "auto" else ApiStyle(settings.api_style)
        path = STYLE_PATHS[style]
        key = SANDBOX_OPENROUTER_KEY if style is ApiStyle.OPENROUTER else SANDBOX_API_KEY
        logger.info("sandbox upstream on %s%s (no network, no spend)", sandbox.url, path)
        yield settings.model_copy(
            update={
                "base_url": f"{sandbox.url}{path}",
                "api_key": settings.api_key or SecretStr(key),
                "default_model": settings.default_model or SANDBOX_DEFAULT_MODEL,
                # Play money: it stays in the process unless a store is named.
                "store": settings.store or "memory",
            }
        )


def _serve(settings: Settings) -> None:
    if settings.api_key is None and not settings.client_keys:
        logger.warning("NAIVE_API_KEY is not set: tools are listed, but calls will ask for a key")
    try:
        if settings.transport == "stdio":
            from naive_mcp.server import create_server, freeze_startup_objects
            from naive_mcp.stdio import serve_stdio

            server = create_server(settings, progress_needs_token=True)
            logger.info("naive-mcp serving on stdio; upstream %s", settings.shown_base_url)
            freeze_startup_objects()
            event_loop.run(settings.event_loop, serve_stdio, server, settings.max_stdio_line_bytes)
            return
        if settings.workers > 1:
            from naive_mcp.workers import serve_workers

            serve_workers(settings)
            return
        from naive_mcp.remote import serve_http

        event_loop.run(settings.event_loop, serve_http, settings)
    except ConfigurationError as error:
        refuse(error.message)
