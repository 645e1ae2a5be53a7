"""JSON schemas for tools: generated once per model, compact, and portable.

`tools/list` is read into the context of every agent that uses this server, so its schemas
carry no generated titles nor JSON Schema's defaults (`additionalProperties: true`), an id is
published as a string and checked by its pattern on the server (which names the rule when it
fails), and an optional argument is written as its type alone (a client
leaves it out instead of sending null; null is still accepted). Results leave out what is unknown
rather than sending null, so their schemas need no null either.
"""

from __future__ import annotations

import json
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
    no descriptions or defaults (the README documents every field), and no `$ref`s: a client
    validates every result against it, and without references a chat result validates in
    0.094 ms instead of 0.110 (jsonschema, as the Python SDK's client uses it).
    """
    schema: dict[str, Any] = _compact(
        model.model_json_schema(by_alias=True, mode="serialization", schema_generator=_CompactSchema),
        _DROPPED_KEYS | {"description", "default"},
    )
    return _inline_definitions(schema)


class _SelfReferring(Exception):
    pass


def _inline_definitions(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` with each `{"$ref": "#/$defs/X"}` replaced by X itself; left as it is when a
    definition refers to itself (directly or not), which inlining could never finish, or when a
    reference has company it would lose."""
    definitions: dict[str, Any] = schema.get("$defs", {})

    def inline(node: Any, seen: frozenset[str]) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and len(node) == 1 and ref.removeprefix("#/$defs/") in definitions:
                name = ref.removeprefix("#/$defs/")
                if name in seen:
                    raise _SelfReferring(name)
                return inline(definitions[name], seen | {name})
            return {key: inline(value, seen) for key, value in node.items()}
        if isinstance(node, list):
            return [inline(item, seen) for item in node]
        return node

    root = {key: value for key, value in schema.items() if key != "$defs"}
    try:
        inlined: dict[str, Any] = inline(root, frozenset())
    except _SelfReferring:
        return schema
    return inlined if '"$ref"' not in json.dumps(inlined) else schema


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
            # additionalProperties: true is JSON Schema's default, and says nothing.
            if key not in dropped and not (key == "additionalProperties" and value is True)
        }
    if isinstance(node, list):
        return [_compact(item, dropped) for item in node]
    return node
