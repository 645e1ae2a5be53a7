"""The floor for the HTTP figures: a bare MCPServer over streamable HTTP with one tool that
waits as long as the upstream would (`python bench/bare_http_server.py PORT LATENCY [stateless]`).

It logs at WARNING, as naive-mcp does in the bench (NAIVE_LOG_LEVEL=WARNING): at the SDK's
default (INFO) uvicorn and the SDK write a line or two per request, which is the floor's CPU
spent on logging, not on serving."""

import sys

import anyio
from mcp.server.mcpserver import MCPServer
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

server = MCPServer("bare", log_level="WARNING")
LATENCY = float(sys.argv[2]) if len(sys.argv) > 2 else 0.0
STATELESS = sys.argv[3:4] == ["stateless"]


@server.tool()
async def wait(text: str) -> str:
    """Wait like the upstream, then say it back."""
    await anyio.sleep(LATENCY)
    return text


@server.custom_route("/health", methods=["GET"])  # type: ignore[untyped-decorator]
async def health(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


if __name__ == "__main__":
    server.run("streamable-http", port=int(sys.argv[1]), stateless_http=STATELESS)
