"""Tool arguments: the field types every argument model uses, and errors a model can act on.

`parse_arguments` validates raw tool arguments with an argument model and, when they are
wrong, raises one `ArgumentError` that names every bad field by its path in the call
(`messages[0].content[1].image_url.url`), says what is wrong in plain words, what is allowed,
and what was received.
"""

from __future__ import annotations

import difflib
import json
import re
import types
from collections.abc import Mapping
from typing import Annotated, Any, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails, PydanticCustomError

from naive_mcp.errors import ArgumentError

ModelT = TypeVar("ModelT", bound=BaseModel)
_BOOLEAN_NUMBER = "number_not_boolean"
_TYPE_MISMATCHES = frozenset(
    {
        "string_type",
        "int_type",
        "float_type",
        "bool_type",
        "dict_type",
        "list_type",
        "model_type",
        "model_attributes_type",
    }
)
# How alike (difflib's ratio) an unknown argument and a known one must be for "did you mean".
_CLOSE_NAME = 0.75
# pydantic's words for a JSON object, which name Python types a client never sees.
_PYTHON_OBJECT = re.compile(r"a valid dictionary( or instance of \w+)?|an instance of \w+")


class Arguments(BaseModel):
    """Base of every argument model: strict about names, finite numbers, and no booleans for numbers."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _numbers_are_not_booleans(cls, data: Any) -> Any:
        # pydantic's lax mode reads JSON's true as 1, and the call would be sent (and billed) with
        # it. Lax mode stays otherwise: some clients send numbers as strings.
        if isinstance(data, dict):
            for name, field in cls.model_fields.items():
                key = field.alias or name
                value = data.get(key)
                if isinstance(value, bool) and _is_number(field.annotation):
                    bad_key, bad_value = key, value
                elif isinstance(value, dict) and _is_number_map(field.annotation):
                    found = next(((k, v) for k, v in value.items() if isinstance(v, bool)), None)
                    if found is None:
                        continue
                    bad_key, bad_value = f"{key}.{found[0]}", found[1]
                else:
                    continue
                raise PydanticCustomError(
                    _BOOLEAN_NUMBER,
                    "should be a number, not {value}",
                    {"field": bad_key, "value": json.dumps(bad_value)},
                )
        return data


# --- field types ----------------------------------------------------------------------------------

# What a pattern means, in words, for the error message: a regex is no help to a model.
_PATTERN_MEANINGS: dict[str, str] = {}


def matching(pattern: str, meaning: str, **field: Any) -> Any:
    """A `Field` whose value must match `pattern`; a mismatch is explained as `meaning`."""
    _PATTERN_MEANINGS[pattern] = meaning
    return Field(pattern=pattern, **field)


# --- parsing --------------------------------------------------------------------------------------


def each_once(values: list[str], noun: str) -> None:
    """Raise, naming them, if `values` (a list argument of `noun`s) hold one twice."""
    twice = sorted({value for value in values if values.count(value) > 1})
    if twice:
        raise ValueError(f"gives {noun} {', '.join(map(repr, twice))} more than once: give each once")


def parse_arguments(model: type[ModelT], raw: Mapping[str, Any], *, tool: str, where: str = "") -> ModelT:
    """Validate raw tool arguments, or raise an `ArgumentError` that names each bad field.

    `where` prefixes field paths when the arguments sit inside another tool's arguments.
    """
    data = _parse_json_strings(model, raw)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        found = [_Problem.of(error, data, where) for error in exc.errors(include_url=False)]
        # A union reports every branch it tried; the branch that got furthest is the one meant.
        meant = [problem for problem in found if not (problem.in_union and problem.outweighed_by(found))]
        lines = dict.fromkeys(problem.line(model) for problem in meant)
        listed = "\n".join(f"- {line}" for line in lines)
        raise ArgumentError(f"Invalid arguments for {tool}:\n{listed}") from None


class _Problem:
    def __init__(self, error: ErrorDetails, path: str, in_union: bool) -> None:
        self.error = error
        self.path = path
        self.in_union = in_union

    @classmethod
    def of(cls, error: ErrorDetails, data: Any, where: str) -> _Problem:
        """Name the error by where it is in the caller's data, not in pydantic's union branches."""
        loc = error["loc"]
        steps = _Reading.best(data, loc)
        path = where
        for part in steps.parts:
            path = f"{path}[{part}]" if isinstance(part, int) else (f"{path}.{part}" if path else part)
        in_union = len(steps.parts) < len(loc)
        if error["type"] == _BOOLEAN_NUMBER:
            field = str((error.get("ctx") or {})["field"])
            path = f"{path}.{field}" if path else field
        return cls(error, path or "arguments", in_union)

    def outweighed_by(self, others: list[_Problem]) -> bool:
        """Whether another branch of the same union says more: it got deeper into the value, or it
        took the value's type and found something else wrong."""
        deeper = any(other.path.startswith((f"{self.path}.", f"{self.path}[")) for other in others)
        wrong_type = self.error["type"] in _TYPE_MISMATCHES
        return deeper or (
            wrong_type
            and any(
                other.path == self.path and other.error["type"] not in _TYPE_MISMATCHES for other in others
            )
        )

    def line(self, model: type[BaseModel]) -> str:
        error = self.error
        kind = error["type"]
        if kind == "extra_forbidden":
            key = str(error["loc"][-1])
            return f"{self.path}: unknown argument{_suggestion(key, _model_at(model, error['loc'][:-1]))}"
        if kind == "missing":
            return f"{self.path}: required"
        message = plain_message(error)
        given = error.get("input")
        # A validator of a whole object would echo the whole object back: the message is enough.
        whole_object = kind in ("value_error", "assertion_error", _BOOLEAN_NUMBER)
        if "input" not in error or (isinstance(given, dict) and whole_object):
            return f"{self.path}: {message}"
        return f"{self.path}: {message} (got {_preview(given)})"


class _Reading:
    """One reading of a pydantic error location against the caller's data.

    pydantic's `loc` mixes the caller's keys and indexes with the union branches and tags it
    tried (`str`, `list[...]`, a discriminator value such as `image_url`). A tag can equal a real
    key (`{"type": "image_url", "image_url": {...}}`), so each string part is read either as a
    key or as a tag. The reading that follows the most keys present in the data wins; among
    equals, the one that ends on a key (errors are about the last key: missing, unknown, wrong),
    then the one that reads more keys (a key missing in a nested object, `cache_control.type`, is
    not the part's own `type` read past the object's name as a tag).
    """

    def __init__(self, parts: tuple[int | str, ...], present: int, ends_on_key: bool) -> None:
        self.parts = parts
        self.present = present
        self.ends_on_key = ends_on_key

    def rank(self) -> tuple[int, bool, int]:
        return self.present, self.ends_on_key, len(self.parts)

    @classmethod
    def best(cls, node: Any, loc: tuple[int | str, ...]) -> _Reading:
        if not loc:
            return cls((), 0, False)
        part, rest = loc[0], loc[1:]
        after = cls.best(node, rest)
        readings = [cls(after.parts, after.present, after.ends_on_key and bool(rest))]  # a branch or tag
        child = _child(node, part)
        if child is not _ABSENT:
            readings.append(cls._key(part, child, rest, present=True))
        elif isinstance(part, str) and isinstance(node, dict) and not rest:
            readings.append(cls._key(part, None, rest, present=False))  # a missing key
        return max(readings, key=cls.rank)

    @classmethod
    def _key(cls, part: int | str, child: Any, rest: tuple[int | str, ...], *, present: bool) -> _Reading:
        after = cls.best(child, rest)
        return cls((part, *after.parts), after.present + present, after.ends_on_key if rest else True)


_ABSENT = object()


def _child(node: Any, part: int | str) -> Any:
    """`node[part]` when the caller's data has it, else `_ABSENT`."""
    if isinstance(part, int) and isinstance(node, list) and 0 <= part < len(node):
        return node[part]
    if isinstance(part, str) and isinstance(node, dict) and part in node:
        return node[part]
    return _ABSENT


def plain_message(error: ErrorDetails) -> str:
    """What is wrong, in plain words: what a pattern means rather than the regex, no Python types."""
    ctx = error.get("ctx") or {}
    if error["type"] == "string_pattern_mismatch" and ctx.get("pattern") in _PATTERN_MEANINGS:
        return f"should be {_PATTERN_MEANINGS[ctx['pattern']]}"
    message = error["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
    message = _PYTHON_OBJECT.sub("an object", message)
    return message.replace(" after validation", "").replace("Input should be", "should be")


def _model_at(model: type[BaseModel], loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The argument model that holds the value at `loc` (the root model for an empty loc)."""
    current: type[BaseModel] | None = model
    for part in loc:
        if current is None or isinstance(part, int):
            continue
        field = current.model_fields.get(part) or next(
            (f for f in current.model_fields.values() if f.alias == part), None
        )
        if field is not None:
            current = _model_in(field.annotation)
        # else: a union branch or tag; the model stays the one chosen for the branch
    return current


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    models = [found for arg in get_args(annotation) if (found := _model_in(arg)) is not None]
    return models[0] if len(models) == 1 else None


def _suggestion(key: str, model: type[BaseModel] | None) -> str:
    if model is None:
        return ""
    names = [field.alias or name for name, field in model.model_fields.items()]
    wanted = key.replace("-", "_")
    # Only a name close enough to be a slip of the keyboard (`temprature`, `max_token`) or one the
    # key begins (`frequency`); a looser match (`usage` → messages) would send the agent astray.
    close = difflib.get_close_matches(wanted, names, n=1, cutoff=_CLOSE_NAME)
    begun = [name for name in names if len(wanted) >= 4 and name.startswith(wanted)]
    if not close and len(begun) == 1:
        close = begun
    return f"; did you mean '{close[0]}'?" if close else f"; allowed: {', '.join(names)}"


def _preview(value: Any) -> str:
    try:
        text = repr(value) if isinstance(value, str) else json.dumps(value, default=str)
    except (ValueError, RecursionError):
        return "a value nested too deeply to show"
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
        if not isinstance(value, str) or _admits_str(field):
            continue
        try:
            parsed = json.loads(value)
        except (ValueError, RecursionError):
            continue
        if isinstance(parsed, dict | list):
            data[key] = parsed
    return data


def _is_number_map(annotation: Any) -> bool:
    """`dict[str, <number>]`, optional or not."""
    origin = get_origin(annotation)
    if origin is Union or origin is types.UnionType:
        return any(_is_number_map(arg) for arg in get_args(annotation))
    return origin is dict and _is_number(get_args(annotation)[1])


def _is_number(annotation: Any) -> bool:
    origin = get_origin(annotation)
    if origin is Union or origin is types.UnionType:
        return any(_is_number(arg) for arg in get_args(annotation))
    if origin is Annotated:
        return _is_number(get_args(annotation)[0])
    return annotation in (int, float)


def _admits_str(field: FieldInfo | Any) -> bool:
    annotation = field.annotation if isinstance(field, FieldInfo) else field
    if annotation is str:
        return True
    origin = get_origin(annotation)
    if origin is Union or origin is types.UnionType:
        return any(_admits_str(arg) for arg in get_args(annotation))
    if origin is Annotated:
        return _admits_str(get_args(annotation)[0])
    return False
