"""Every Naive primitive this server exposes. Adding a primitive is adding one module here."""

from naive_mcp.primitives import llm
from naive_mcp.registry import Registry

REGISTRY = Registry(methods=(*llm.METHODS,))

__all__ = ["REGISTRY"]
