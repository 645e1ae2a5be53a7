"""JSON schemas for tools: generated once per model, compact, and portable.

`tools/list` is read into the context of every agent that uses this server, so its schemas
carry no generated titles, and an optional argument is written as its type alone (a client
leaves it out instead of sending null; null is still accepted). Results leave out what is unknown
rather than sending null, so their schemas need no null either.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema


class _CompactSchema(GenerateJsonSchema):
    def nullable_schema(self, schema: core_schema.NullableSchema) -> JsonSchemaValue:
        return self.generate_inner(schema["schema"])

    def default_schema(self, schema: core_schema.WithDefaultSchema) -> JsonSchemaValue:
        json_schema = super().default_schema(schema)
        if json_schema.get("default", ...) is None:
            del json_schema["default"]
        return json_schema


@cache
def input_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The `inputSchema` of a tool whose arguments are `model`."""
    schema: dict[str, Any] = _compact(model.model_json_schema(by_alias=True, schema_generator=_CompactSchema))
    return schema


@cache
def output_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The `outputSchema` of a tool whose structured content is `model`, dumped without None values.

    Programs validate against it and models read the content blocks, so it carries the shape only:
    no descriptions or defaults (the README documents every field)."""
    schema: dict[str, Any] = _compact(
        model.model_json_schema(by_alias=True, mode="serialization", schema_generator=_CompactSchema),
        _DROPPED_KEYS | {"description", "default"},
    )
    return schema


# Generated titles repeat the property names; `discriminator` is OpenAPI, not JSON Schema.
_DROPPED_KEYS = frozenset({"title", "discriminator"})


def _compact(node: Any, dropped: frozenset[str] = _DROPPED_KEYS) -> Any:
    if isinstance(node, dict):
        return {
            key: (
                {name: _compact(sub, dropped) for name, sub in value.items()}
                if key == "properties"
                else _compact(value, dropped)
            )
            for key, value in node.items()
            if key not in dropped
        }
    if isinstance(node, list):
        return [_compact(item, dropped) for item in node]
    return node
