"""The primitive registry: each method of a Naive primitive, declared once.

A `Method` holds everything both faces of the server need: the typed tool
(`naive_llm_chat`, …) and the generic pair (`naive_search_primitives`,
`naive_run_primitive`) are generated from the same declarations, so they cannot disagree.
"""

from __future__ import annotations

import difflib
import json
import types
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Generic, TypeVar, Union, get_args, get_origin

from mcp.types import ToolAnnotations
from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import ErrorDetails

from naive_mcp.errors import ArgumentError
from naive_mcp.schema import input_schema, output_schema
from naive_mcp.services import Services


class Arguments(BaseModel):
    """Base of every method's argument model: strict about names, finite numbers."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, populate_by_name=True)


class MethodResult(BaseModel):
    """Base of every method's result: structured content, plus the text a model reads."""

    def content(self) -> list[str]:
        """Text blocks for the model, most important first."""
        raise NotImplementedError


ArgsT = TypeVar("ArgsT", bound=Arguments)
ResultT = TypeVar("ResultT", bound=MethodResult)


@dataclass(frozen=True)
class Method(Generic[ArgsT, ResultT]):
    primitive: str
    name: str
    description: str
    arguments: type[ArgsT]
    result: type[ResultT]
    annotations: ToolAnnotations
    handler: Callable[[Services, ArgsT], Awaitable[ResultT]]

    @property
    def qualified_name(self) -> str:
        return f"{self.primitive}.{self.name}"

    @property
    def tool_name(self) -> str:
        return f"naive_{self.primitive}_{self.name}"

    @cached_property
    def input_schema(self) -> dict[str, Any]:
        return input_schema(self.arguments)

    @cached_property
    def output_schema(self) -> dict[str, Any]:
        return output_schema(self.result)

    async def invoke(self, services: Services, raw: Mapping[str, Any], *, where: str = "") -> ResultT:
        """Validate `raw` arguments and run the method."""
        return await self.handler(
            services, parse_arguments(self.arguments, raw, tool=self.tool_name, where=where)
        )


@dataclass(frozen=True)
class Registry:
    methods: Sequence[Method[Any, Any]]

    def find(self, primitive: str, method: str) -> Method[Any, Any]:
        for candidate in self.methods:
            if candidate.primitive == primitive and candidate.name == method:
                return candidate
        known = ", ".join(candidate.qualified_name for candidate in self.methods)
        raise ArgumentError(
            f"Unknown Naive primitive method: '{primitive}.{method}'. The methods that exist: {known}.",
            kind="unknown_method",
        )

    def primitives(self) -> list[str]:
        return list(dict.fromkeys(method.primitive for method in self.methods))


# --- argument errors a model can act on -------------------------------------------------------


def parse_arguments(model: type[ArgsT], raw: Mapping[str, Any], *, tool: str, where: str = "") -> ArgsT:
    """Validate raw tool arguments, or raise an `ArgumentError` that names each bad field.

    `where` prefixes field paths when the arguments sit inside another tool's arguments.
    """
    try:
        return model.model_validate(_parse_json_strings(model, raw))
    except ValidationError as exc:
        problems = [_describe(error, model, where) for error in exc.errors(include_url=False)]
        listed = "\n".join(f"- {problem}" for problem in dict.fromkeys(problems))
        raise ArgumentError(f"Invalid arguments for {tool}:\n{listed}") from None


def _describe(error: ErrorDetails, model: type[BaseModel], where: str) -> str:
    path = _path(error["loc"], where)
    kind = error["type"]
    if kind == "extra_forbidden":
        return f"{path}: unknown argument{_suggestion(error['loc'], model)}"
    message = error["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if kind == "missing":
        return f"{path}: required"
    if kind in ("model_type", "dict_type") or "input" not in error:
        return f"{path}: {message}"
    return f"{path}: {message} (got {_preview(error['input'])})"


def _path(loc: tuple[int | str, ...], where: str) -> str:
    path = where
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif _is_type_tag(part):
            continue  # which branch of a union pydantic tried: noise for the reader
        else:
            path += f".{part}" if path else part
    return path or "arguments"


def _is_type_tag(part: str) -> bool:
    return "[" in part or part in ("str", "int", "float", "bool", "list", "dict", "none") or "-" in part


def _suggestion(loc: tuple[int | str, ...], model: type[BaseModel]) -> str:
    if len(loc) != 1 or not isinstance(loc[0], str):
        return ""
    names = [field.alias or name for name, field in model.model_fields.items()]
    close = difflib.get_close_matches(loc[0], names, n=1)
    return f"; did you mean '{close[0]}'?" if close else f"; allowed: {', '.join(names)}"


def _preview(value: Any) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


def _parse_json_strings(model: type[BaseModel], raw: Mapping[str, Any]) -> dict[str, Any]:
    """Accept JSON-encoded objects and lists where an object or list is expected.

    Some clients (Claude Desktop among them) send nested arguments as JSON strings.
    A field that accepts a string keeps its string.
    """
    data = dict(raw)
    for name, field in model.model_fields.items():
        key = field.alias or name
        value = data.get(key)
        if not isinstance(value, str) or _admits_str(field.annotation):
            continue
        try:
            parsed = json.loads(value)
        except (ValueError, RecursionError):
            continue
        if isinstance(parsed, dict | list):
            data[key] = parsed
    return data


def _admits_str(annotation: Any) -> bool:
    if annotation is str:
        return True
    origin = get_origin(annotation)
    if origin is Union or origin is types.UnionType:
        return any(_admits_str(arg) for arg in get_args(annotation))
    if origin is not None and str(origin).endswith("Annotated"):
        return _admits_str(get_args(annotation)[0])
    return False
