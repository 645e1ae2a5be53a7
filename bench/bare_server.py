"""The floor for bench/startup.py: a bare MCPServer with one trivial tool, on stdio."""

from mcp.server.mcpserver import MCPServer

server = MCPServer("bare")


@server.tool()
def echo(text: str) -> str:
    """Say it back."""
    return text


server.run("stdio")
