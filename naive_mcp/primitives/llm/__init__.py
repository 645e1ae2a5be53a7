"""Naive's `llm` primitive: chat, complete, compare, models, generation."""

from naive_mcp.primitives.llm.chat import CHAT
from naive_mcp.primitives.llm.compare import COMPARE
from naive_mcp.primitives.llm.complete import COMPLETE
from naive_mcp.primitives.llm.generation import GENERATION
from naive_mcp.primitives.llm.models import MODELS

METHODS = (CHAT, COMPLETE, COMPARE, MODELS, GENERATION)

__all__ = ["CHAT", "COMPARE", "COMPLETE", "GENERATION", "METHODS", "MODELS"]
