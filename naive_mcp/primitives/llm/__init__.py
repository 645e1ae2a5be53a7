"""Naive's `llm` primitive: chat, models, generation."""

from naive_mcp.primitives.llm.chat import CHAT
from naive_mcp.primitives.llm.generation import GENERATION
from naive_mcp.primitives.llm.models import MODELS

METHODS = (CHAT, MODELS, GENERATION)

__all__ = ["CHAT", "GENERATION", "METHODS", "MODELS"]
