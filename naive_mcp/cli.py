"""`naive-mcp`: read the settings (environment, then flags), set up logging, serve on stdio."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from typing import NoReturn

import anyio
from pydantic import SecretStr, ValidationError
from pydantic_settings import CliApp, SettingsError

from naive_mcp.errors import ConfigurationError
from naive_mcp.logs import configure_logging
from naive_mcp.redaction import Redactor
from naive_mcp.settings import SANDBOX_API_KEY, SANDBOX_DEFAULT_MODEL, Settings, setting_problems

logger = logging.getLogger("naive_mcp")


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    for secret in ("api_key", "auth_tokens"):
        if any(arg.split("=", 1)[0] in (f"--{secret}", f"--{secret.replace('_', '-')}") for arg in args):
            _refuse(
                f"{secret} is read from the environment only (NAIVE_{secret.upper()}): "
                "on the command line it is visible to every user of the machine"
            )
    try:
        settings = CliApp.run(Settings, cli_args=args)
    except (ValidationError, SettingsError) as exc:
        _refuse(setting_problems(exc))
    configure_logging(settings.log_level, Redactor(settings.secrets()))
    if settings.sandbox:
        _serve_with_sandbox(settings)
    else:
        _serve(settings)


def _refuse(problem: str) -> NoReturn:
    # Field names and reasons only, redacted: a rejected value may be a secret. One line a problem.
    for line in problem.splitlines():
        sys.stderr.write(f"naive-mcp: bad setting: {Redactor()(line)}\n")
    raise SystemExit(2)


def _serve(settings: Settings) -> None:
    if settings.api_key is None and not settings.client_keys:
        logger.warning("NAIVE_API_KEY is not set: tools are listed, but calls will ask for a key")
    if settings.transport == "stdio":
        from naive_mcp.server import create_server, freeze_startup_objects
        from naive_mcp.stdio import serve_stdio

        server = create_server(settings, progress_needs_token=True)
        logger.info("naive-mcp serving on stdio; upstream %s", settings.shown_base_url)
        freeze_startup_objects()
        anyio.run(serve_stdio, server, settings.max_stdio_line_bytes)
        return
    from naive_mcp.remote import serve_http

    try:
        anyio.run(serve_http, settings)
    except ConfigurationError as error:
        _refuse(error.message)


def _serve_with_sandbox(settings: Settings) -> None:
    from naive_mcp.sandbox import serve_in_thread

    with serve_in_thread() as sandbox:
        logger.info("sandbox upstream on %s (no network, no spend)", sandbox.url)
        _serve(
            settings.model_copy(
                update={
                    "base_url": sandbox.url,
                    "api_key": settings.api_key or SecretStr(SANDBOX_API_KEY),
                    "default_model": settings.default_model or SANDBOX_DEFAULT_MODEL,
                    # Play money: it stays in the process unless a store is named.
                    "store": settings.store or "memory",
                }
            )
        )
