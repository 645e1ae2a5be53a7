"""Naive's `llm` primitive: chat, complete, models, generation."""

from naive_mcp.primitives.llm.chat import CHAT
from naive_mcp.primitives.llm.complete import COMPLETE
from naive_mcp.primitives.llm.generation import GENERATION
from naive_mcp.primitives.llm.models import MODELS

METHODS = (CHAT, COMPLETE, MODELS, GENERATION)

__all__ = ["CHAT", "COMPLETE", "GENERATION", "METHODS", "MODELS"]
