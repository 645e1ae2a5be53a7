"""The floor for the burst figure: a bare MCPServer over streamable HTTP with one tool that
waits as long as the upstream would (`python bench/bare_http_server.py PORT LATENCY`)."""

import sys

import anyio
from mcp.server.mcpserver import MCPServer
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

server = MCPServer("bare")
LATENCY = float(sys.argv[2]) if len(sys.argv) > 2 else 0.0


@server.tool()
async def wait(text: str) -> str:
    """Wait like the upstream, then say it back."""
    await anyio.sleep(LATENCY)
    return text


@server.custom_route("/health", methods=["GET"])  # type: ignore[untyped-decorator]
async def health(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


if __name__ == "__main__":
    server.run("streamable-http", port=int(sys.argv[1]))
