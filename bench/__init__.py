"""naive-mcp's benchmarks: `python -m bench` (see the README)."""
