"""`naive-mcp` on stdio or streamable HTTP with the jobs stand-in (`tests/jobs_double.py`), for the
TypeScript SDK's task proofs until the `jobs` branch merges; then they run the real `naive-mcp`
and this file goes.

usage: python -m tests.tasks_server                       (stdio)
       python -m tests.tasks_server --transport streamable-http --port N
Settings from the environment, as `naive-mcp` reads them.
"""

from __future__ import annotations

import sys

import anyio
import uvicorn

from naive_mcp.logs import configure_logging
from naive_mcp.redaction import Redactor
from naive_mcp.remote import build_app
from naive_mcp.server import create_server
from naive_mcp.settings import Settings
from naive_mcp.stdio import serve_stdio
from tests.jobs_double import ServicesWithJobs, services_with_jobs


async def main(argv: list[str]) -> None:
    http = "--transport" in argv
    settings = Settings(
        transport="streamable-http" if http else "stdio",
        port=int(argv[argv.index("--port") + 1]) if http else 8000,
    )
    configure_logging(settings.log_level, Redactor(settings.secrets()))
    services = ServicesWithJobs.create(settings, None, progress_needs_token=True)
    async with services_with_jobs(services):
        server = create_server(settings, services=services)
        if not http:
            await serve_stdio(server, settings.max_stdio_line_bytes)
            return
        app = build_app(server, settings)
        config = uvicorn.Config(app, host="127.0.0.1", port=settings.port, log_config=None, lifespan="on")
        await uvicorn.Server(config).serve()


if __name__ == "__main__":
    anyio.run(main, sys.argv[1:])
