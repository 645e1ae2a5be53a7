"""The floors: a bare MCPServer (in memory, or on stdio when run as `python -m bench.bare_server`)
with two tools:

- `echo`: says its text back. The floor of the SDK's own work for a call.
- `relay`: makes the chat request a naive-mcp call makes (bench.upstream.direct_chat, to
  $BENCH_RELAY_URL with $BENCH_RELAY_KEY), then says its text back. The floor of a server that
  relays the same request with nothing of its own. Its HTTP stack is imported on its first call,
  so that the cold start of the floor (bench/startup.py) stays the SDK's alone.
"""

import os
from typing import Any

from mcp.server.mcpserver import MCPServer

server = MCPServer("bare")
_http: list[Any] = []  # the relay's httpx2.AsyncClient, made on its first call


@server.tool()
def echo(text: str) -> str:
    """Say it back."""
    return text


@server.tool()
async def relay(text: str) -> str:
    """Make the chat request directly, then say the text back."""
    import httpx2

    from bench.upstream import direct_chat

    if not _http:
        _http.append(httpx2.AsyncClient())
    await direct_chat(_http[0], os.environ["BENCH_RELAY_URL"], os.environ["BENCH_RELAY_KEY"])
    return text


if __name__ == "__main__":
    server.run("stdio")
