"""The built-in sandbox upstream: a real HTTP server that speaks the Naive API, offline."""

from naive_mcp.sandbox.app import Sandbox, SandboxConfig, create_app
from naive_mcp.sandbox.faults import FAULTS
from naive_mcp.sandbox.server import RunningSandbox, serve_in_thread

__all__ = ["FAULTS", "RunningSandbox", "Sandbox", "SandboxConfig", "create_app", "serve_in_thread"]
