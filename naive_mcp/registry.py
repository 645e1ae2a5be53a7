"""The primitive registry: each method of a Naive primitive, declared once.

A `Method` holds everything both faces of the server need: the typed tool
(`naive_llm_chat`, …) and the generic pair (`naive_search_primitives`,
`naive_run_primitive`) are generated from the same declarations, so they cannot disagree.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from mcp_types import ToolAnnotations
from pydantic import BaseModel

from naive_mcp.access import Grant
from naive_mcp.caller import Caller
from naive_mcp.context_files import AskRoots, FileLimits, FileRoots, settings_roots
from naive_mcp.errors import ArgumentError
from naive_mcp.progress import ProgressReporter
from naive_mcp.schema import input_schema, output_schema
from naive_mcp.services import Services
from naive_mcp.validation import Arguments, parse_arguments

if TYPE_CHECKING:
    from naive_mcp.streaming import ChatStream


@dataclass(frozen=True, slots=True)
class ImageBlock:
    """An image for the model to see (an MCP image content block): base64 `data` of `mime_type`."""

    data: str
    mime_type: str


@dataclass(frozen=True, slots=True)
class LinkBlock:
    """A link to a resource the client may read (an MCP resource link, where the client's protocol
    has them: 2025-06-18 on; the text beside it names the URI for any other)."""

    uri: str
    name: str
    description: str
    mime_type: str = "text/plain"
    size: int | None = None  # bytes of what it links to


ContentBlock = str | ImageBlock | LinkBlock


class MethodResult(BaseModel):
    """Base of every method's result: structured content, plus the blocks a model reads."""

    def content(self) -> Sequence[ContentBlock]:
        """Content blocks for the model, most important first: text, images, links (a chat answer's)."""
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class CallContext:
    """What one call of a method may use: the server's services and the call's progress.

    `on_chunk` sees a streamed answer after each chunk (the terminal prints the new text as it
    arrives; the tools leave it out and report progress only)."""

    services: Services
    progress: ProgressReporter
    grant: Grant
    on_chunk: Callable[[ChatStream], None] | None = None
    # Where `files` and `output_file` may be, asked for only by a call that names one (from a
    # client, that is a round trip): the MCP face's choice; without it, NAIVE_FILE_ROOTS.
    roots: AskRoots | None = None
    # Starts a method's call as a background job and answers with the job (the MCP face's); None
    # (the terminal, a call already running as a job): `background` is run in place.
    start_job: Callable[[Method[Any, Any], Arguments], Awaitable[MethodResult]] | None = None

    async def file_roots(self) -> FileRoots:
        if self.roots is not None:
            return await self.roots()
        return settings_roots(self.services.settings.file_roots, "stdio")

    def file_limits(self) -> FileLimits:
        settings = self.services.settings
        return FileLimits(settings.max_file_bytes, settings.max_files_bytes, settings.max_files)

    def caller(self, user_id: str | None, project_id: str | None) -> Caller:
        """Who this call goes upstream as (see `Services.caller`)."""
        return self.services.caller(self.grant, user_id, project_id)


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
    handler: Callable[[CallContext, ArgsT], Awaitable[ResultT]]
    # A typed tool of its own in tools/list; without one, the method runs through the generic pair.
    typed_tool: bool = True
    # A method that may run as a background job (`background: true`, an MCP task): what its result
    # holds when the job has just started (the fields its result schema requires, empty).
    started: Mapping[str, Any] | None = None

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

    async def invoke(self, call: CallContext, raw: Mapping[str, Any], *, via: str | None = None) -> ResultT:
        """Validate `raw` arguments and run the method; `via` names the generic tool that asked."""
        return await self.handler(call, self.parse(raw, via=via))

    def parse(self, raw: Mapping[str, Any], *, via: str | None = None) -> ArgsT:
        """`raw` arguments validated (an error names the field and the fix); `via` names the
        generic tool that asked."""
        if via is None:
            return parse_arguments(self.arguments, raw, tool=self.tool_name)
        label = f"{via} ({self.qualified_name})"
        return parse_arguments(self.arguments, raw, tool=label, where="arguments")

    def in_background(self, arguments: Arguments) -> bool:
        """Whether these arguments ask for a background job (and the method may run as one)."""
        return self.started is not None and bool(getattr(arguments, "background", False))


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
