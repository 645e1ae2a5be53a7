"""The floors for the HTTP figures: a bare MCPServer over streamable HTTP
(`python -m bench.bare_http_server PORT LATENCY MODE [UPSTREAM KEY]`, MODE `stateful` or
`stateless`) with two tools:

- `wait`: waits as long as the upstream would, then says its text back. The floor of the SDK's
  own work for a call.
- `relay`: makes the chat request a naive-mcp call makes (bench.upstream.direct_chat, to UPSTREAM
  with KEY). The floor of a server that relays the same request with nothing of its own: no
  validation of the chat's arguments, no caps, no ledger, no thread.

It logs at WARNING, as naive-mcp does in the bench (NAIVE_LOG_LEVEL=WARNING): at the SDK's
default (INFO) uvicorn and the SDK write a line or two per request, which is the floor's CPU
spent on logging, not on serving."""

import sys

import anyio
import httpx2
from mcp.server.mcpserver import MCPServer
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bench.upstream import direct_chat

server = MCPServer("bare", log_level="WARNING")
LATENCY = float(sys.argv[2]) if len(sys.argv) > 2 else 0.0
STATELESS = sys.argv[3:4] == ["stateless"]
UPSTREAM, KEY = (sys.argv[4], sys.argv[5]) if len(sys.argv) > 5 else ("", "")
_http: list[httpx2.AsyncClient] = []  # made on the first relay, on the serving loop


@server.tool()
async def wait(text: str) -> str:
    """Wait like the upstream, then say it back."""
    await anyio.sleep(LATENCY)
    return text


@server.tool()
async def relay(text: str) -> str:
    """Make the chat request directly, then say the text back."""
    if not _http:
        _http.append(httpx2.AsyncClient())
    await direct_chat(_http[0], UPSTREAM, KEY)
    return text


@server.custom_route("/health", methods=["GET"])  # type: ignore[untyped-decorator]
async def health(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


if __name__ == "__main__":
    server.run("streamable-http", port=int(sys.argv[1]), stateless_http=STATELESS)
