"""naive-mcp: an MCP server for Naive's llm primitive."""

__version__ = "0.1.0"
