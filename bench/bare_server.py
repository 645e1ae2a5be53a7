"""The floor: a bare MCPServer with one trivial tool (in memory, or on stdio when run)."""

from mcp.server.mcpserver import MCPServer

server = MCPServer("bare")


@server.tool()
def echo(text: str) -> str:
    """Say it back."""
    return text


if __name__ == "__main__":
    server.run("stdio")
