"""`llm.chat`: one chat completion through Naive (OpenRouter's body, forwarded as-is)."""

from __future__ import annotations

import json
import logging
from typing import Annotated, Any, Literal, Self

import anyio
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from naive_mcp.backend import Route
from naive_mcp.caller import Caller, TenantId
from naive_mcp.context_files import (
    FilesUsed,
    OutputTarget,
    ReadFiles,
    output_target,
    read_files,
    write_output,
)
from naive_mcp.errors import ConfigurationError, NaiveError, UpstreamError
from naive_mcp.estimate import context_length, model_chain
from naive_mcp.guard import Spend
from naive_mcp.primitives.llm.fields import (
    ModelId,
    ProviderSlug,
    format_credits,
    format_usd,
    spending_annotations,
)
from naive_mcp.primitives.llm.images import ImageOut, read_images
from naive_mcp.redaction import REDACTED, Redactor
from naive_mcp.registry import CallContext, ImageBlock, LinkBlock, Method, MethodResult
from naive_mcp.streaming import ChatStream
from naive_mcp.threads import THREAD_ID_PATTERN, Kept, ThreadFilledMeanwhile, answer_message, turn_uri
from naive_mcp.validation import Arguments, each_once, matching
from naive_mcp.wire import ChatCompletion, Logprobs, TokenLogprob

logger = logging.getLogger(__name__)

# --- arguments ---------------------------------------------------------------------------------

_NAME = r"^[A-Za-z0-9_-]{1,64}$"
# The paths and globs one call may name (each may match many files; NAIVE_MAX_FILES bounds those).
MOST_FILE_ENTRIES = 64
# A path or glob: no control characters (NUL ends a C string), at most a Linux path's length.
_PATH = r"^[^\x00-\x1f]+$"
FileEntry = Annotated[
    str, matching(_PATH, "a path or glob without control characters, e.g. src/**/*.py", max_length=4096)
]
# The most of a model's reasoning the result's text shows (the structured result has all of it).
REASONING_SHOWN_CHARS = 1000
# What a result shows of an answer written to `output_file`: enough to see it is the right one.
OUTPUT_HEAD_CHARS = 500


def _published(kind: str, description: str | None = None, *, also_object: bool = False) -> WithJsonSchema:
    """A compact published schema for a nested argument.

    Every agent reads tools/list into its context, so the nested objects of the chat body are
    published by shape and described in a line; the models below still validate every field
    and name the one that is wrong.
    """
    schema: dict[str, Any] = (
        {"anyOf": [{"type": kind}, {"type": "object"}]} if also_object else {"type": kind}
    )
    if kind == "object":
        schema["additionalProperties"] = True
    if description:
        schema["description"] = description
    return WithJsonSchema(schema)


class CacheControl(Arguments):
    """Prompt caching of a content part (Anthropic, Gemini), through OpenRouter."""

    type: Literal["ephemeral"]
    ttl: Literal["5m", "1h"] | None = None


class TextPart(Arguments):
    type: Literal["text"]
    text: str
    cache_control: CacheControl | None = None


class ImageUrl(Arguments):
    url: str = matching(r"^(https?://|data:image/)", "an https:// URL or a data:image/... URL")
    detail: Literal["auto", "low", "high"] | None = None


class ImagePart(Arguments):
    type: Literal["image_url"]
    image_url: ImageUrl
    cache_control: CacheControl | None = None


class InputAudio(Arguments):
    data: str = Field(min_length=1, description="base64 audio")
    format: str = matching(r"^[a-z0-9]{2,8}$", "an audio format such as wav or mp3")


class AudioPart(Arguments):
    type: Literal["input_audio"]
    input_audio: InputAudio
    cache_control: CacheControl | None = None


class FileData(Arguments):
    filename: str = Field(min_length=1)
    file_data: str = matching(r"^(https?://|data:)", "a data: URL (base64) or an https:// URL")


class FilePart(Arguments):
    type: Literal["file"]
    file: FileData
    cache_control: CacheControl | None = None


class VideoUrl(Arguments):
    url: str = matching(r"^(https?://|data:video/)", "an https:// URL or a data:video/... URL")


class VideoPart(Arguments):
    type: Literal["video_url"]
    video_url: VideoUrl
    cache_control: CacheControl | None = None


ContentPart = Annotated[TextPart | ImagePart | AudioPart | FilePart | VideoPart, Field(discriminator="type")]
# Published compactly (every agent reads tools/list): the description names each kind of part,
# and the models above still validate each.
_CONTENT_SCHEMA = WithJsonSchema(
    {
        "anyOf": [
            {"type": "string"},
            {"type": "array", "items": {"type": "object"}},
        ],
        "description": "text, or parts: {type:text,text} {type:image_url,image_url:{url}} "
        "{type:input_audio,input_audio:{data,format}} {type:file,file:{filename,file_data}} "
        "{type:video_url,video_url:{url}}; any: cache_control {type:ephemeral}",
    }
)


class FunctionCallIn(Arguments):
    name: str
    arguments: str


class ToolCallIn(Arguments):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCallIn


class Message(Arguments):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Annotated[str | list[ContentPart] | None, _CONTENT_SCHEMA] = None
    name: str | None = None
    tool_calls: Annotated[
        list[ToolCallIn] | None, _published("array", "assistant only: [{id,function:{name,arguments}}]")
    ] = None
    tool_call_id: str | None = Field(default=None, description="tool only")

    @model_validator(mode="after")
    def _fits_role(self) -> Self:
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a tool message needs tool_call_id (the id of the call it answers)")
        if self.role != "tool" and self.tool_call_id is not None:
            raise ValueError("tool_call_id belongs on role 'tool' messages only")
        if self.tool_calls is not None and self.role != "assistant":
            raise ValueError("tool_calls belong on role 'assistant' messages only")
        if self.content is None and not self.tool_calls:
            raise ValueError("content is required (text or a list of parts)")
        return self


class MaxPrice(Arguments):
    prompt: float | None = Field(default=None, ge=0)
    completion: float | None = Field(default=None, ge=0)
    request: float | None = Field(default=None, ge=0)
    image: float | None = Field(default=None, ge=0)


class ProviderPreferences(Arguments):
    order: list[ProviderSlug] | None = None
    only: list[ProviderSlug] | None = None
    ignore: list[ProviderSlug] | None = None
    allow_fallbacks: bool | None = None
    require_parameters: bool | None = None
    data_collection: Literal["allow", "deny"] | None = None
    zdr: bool | None = None
    sort: Literal["price", "throughput", "latency"] | None = None
    max_price: MaxPrice | None = None
    quantizations: (
        list[Literal["int4", "int8", "fp4", "fp6", "fp8", "fp16", "bf16", "fp32", "unknown"]] | None
    ) = None


class Reasoning(Arguments):
    effort: Literal["xhigh", "high", "medium", "low", "minimal", "none"] | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    exclude: bool | None = None
    enabled: bool | None = None

    @model_validator(mode="after")
    def _one_budget(self) -> Self:
        if self.effort is not None and self.max_tokens is not None:
            raise ValueError("give effort or max_tokens, not both")
        return self


class FunctionDefinition(Arguments):
    name: str = matching(_NAME, "1 to 64 letters, digits, _ or -")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolDefinition(Arguments):
    type: Literal["function"] = "function"
    function: FunctionDefinition


class FunctionName(Arguments):
    name: str


class NamedToolChoice(Arguments):
    type: Literal["function"] = "function"
    function: FunctionName


class TextFormat(Arguments):
    type: Literal["text"]


class JsonObjectFormat(Arguments):
    type: Literal["json_object"]


class JsonSchemaSpec(Arguments):
    name: str = matching(_NAME, "1 to 64 letters, digits, _ or -")
    schema_: dict[str, Any] = Field(alias="schema")
    strict: bool | None = None
    description: str | None = None


class JsonSchemaFormat(Arguments):
    type: Literal["json_schema"]
    json_schema: JsonSchemaSpec


ResponseFormat = Annotated[TextFormat | JsonObjectFormat | JsonSchemaFormat, Field(discriminator="type")]


class UsageOption(Arguments):
    include: bool


class Plugin(Arguments):
    """One OpenRouter plugin (`web`, `file-parser`, `response-healing`, …). Open: OpenRouter adds
    plugins and options without notice, so only the id, and the options a cap prices, are checked;
    the rest is forwarded as given."""

    model_config = ConfigDict(extra="allow")

    id: str = matching(
        r"^[a-z0-9][a-z0-9_-]*$", "a plugin id such as web, file-parser or response-healing", max_length=64
    )
    enabled: bool | None = None
    # The web plugin's results, each billed (estimate.py prices them).
    max_results: int | None = Field(default=None, ge=1)


class Prediction(Arguments):
    """Predicted output: text the answer will mostly repeat, which some providers then write faster."""

    type: Literal["content"]
    content: str


TransformName = Annotated[
    str, matching(r"^[a-z0-9][a-z0-9-]*$", "a transform name such as middle-out", max_length=64)
]
# Keys `extra` may not hold though no argument has them: the server sets them, and an extra one
# would undo what it set (stream) or slip past what a cap fitted (max_tokens' OpenAI alias).
_SET_BY_THE_SERVER = {
    "stream": "it always streams",
    "stream_options": "it always streams",
    "max_completion_tokens": "give max_tokens, which spending caps fit",
}


def field_names(model: type[Arguments]) -> set[str]:
    """The argument names of `model`, as a client spells them."""
    return {field.alias or name for name, field in model.model_fields.items()}


def checked_extra(
    extra: dict[str, Any] | None, named: set[str], elsewhere: tuple[set[str], str] | None = None
) -> dict[str, Any] | None:
    """`extra`, if it holds none of the `named` arguments, nothing the server sets, and none of
    `elsewhere`'s names (arguments of another tool, which it names: they are validated there)."""
    given = extra or {}
    problems = [
        f"{key!r} is an argument of its own: give it as `{key}`, where it is checked"
        for key in given
        if key in named
    ]
    if elsewhere is not None:
        names, tool = elsewhere
        problems += [
            f"{key!r} is an argument of {tool}, where it is checked; this tool does not take it"
            for key in given
            if key in names and key not in named
        ]
    problems += [
        f"{key!r} is the server's to set: {why}" for key, why in _SET_BY_THE_SERVER.items() if key in given
    ]
    if problems:
        raise ValueError("; ".join(problems))
    return extra


class GenerationArguments(Arguments):
    """What chat and text completions (`llm.complete`) take alike: the model and its fallbacks,
    routing, sampling, logprobs, OpenRouter's transforms, usage and end-user id, and `extra`."""

    model: ModelId | None = Field(default=None, description="e.g. anthropic/claude-sonnet-4.6")
    models: list[ModelId] | None = Field(
        default=None, min_length=1, max_length=10, description="fallback chain"
    )
    provider: Annotated[
        ProviderPreferences | None,
        _published(
            "object",
            "routing: order/only/ignore [slugs], allow_fallbacks, require_parameters, "
            "data_collection allow|deny, zdr, sort price|throughput|latency, max_price {prompt,completion}, "
            "quantizations",
        ),
    ] = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    top_k: int | None = Field(default=None, ge=1)
    min_p: float | None = Field(default=None, ge=0, le=1)
    top_a: float | None = Field(default=None, ge=0, le=1)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    repetition_penalty: float | None = Field(default=None, gt=0, le=2)
    max_tokens: int | None = Field(default=None, ge=1, le=2_000_000)
    seed: Annotated[int | None, _published("integer")] = Field(default=None, ge=-(2**63), lt=2**63)
    stop: str | Annotated[list[str], Field(min_length=1, max_length=16)] | None = None
    logit_bias: dict[str, Annotated[float, Field(ge=-100, le=100)]] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20, description="implies logprobs")
    transforms: Annotated[list[TransformName] | None, _published("array", 'e.g. ["middle-out"]')] = Field(
        default=None, max_length=8
    )
    usage: Annotated[UsageOption | None, _published("object", "{include}")] = None
    user: str | None = Field(
        default=None, min_length=1, max_length=256, description="end user, for abuse checks (not user_id)"
    )
    extra: Annotated[
        dict[str, Any] | None, _published("object", "more body fields, sent as-is (not validated)")
    ] = None

    @field_validator("top_logprobs")
    @classmethod
    def _alternatives_need_logprobs(cls, top: int | None, info: ValidationInfo) -> int | None:
        if top is not None and info.data.get("logprobs") is False:
            raise ValueError("needs logprobs: leave logprobs out (top_logprobs turns it on) or set it true")
        return top

    @field_validator("extra")
    @classmethod
    def _nothing_validated_or_set_by_the_server(cls, extra: dict[str, Any] | None) -> dict[str, Any] | None:
        """`extra` adds to the body; it may not override what is validated or set here."""
        return checked_extra(extra, field_names(cls))

    def body_for(self, default_model: str | None, own: set[str], **first: Any) -> dict[str, Any]:
        """OpenRouter's body for this call: `first` (what the call sends in its own shape: the
        messages, the prompt), then every argument but those in `own` (the ones `first` came
        from, and the tenant), then `extra`."""
        model = self.model or (self.models[0] if self.models else None) or default_model
        if model is None:
            raise ConfigurationError(
                "no model was given and the server has no default model.", kind="no_model"
            )
        body = self.model_dump(
            mode="json", by_alias=True, exclude_none=True, exclude={"model", "extra", *own}
        )
        if self.top_logprobs is not None:
            body["logprobs"] = True  # what asking for alternatives means; without it none come back
        return {"model": model, **first, **body, **(self.extra or {})}


class _Conversation(Arguments):
    """What a chat is about, listed first (a base after GenerationArguments: fields come in
    reverse MRO order)."""

    messages: list[Message] | None = Field(default=None, min_length=1, description="or prompt")
    prompt: str | None = Field(default=None, min_length=1, description="one user message; or messages")
    system: str | None = None
    # Published as a string (its pattern checked here, and explained when it does not match).
    thread_id: Annotated[str | None, _published("string", "a result's thread_id: continue that thread")] = (
        matching(THREAD_ID_PATTERN, "a thread id from an earlier result, such as thr_...", default=None)
    )

    files: Annotated[
        list[FileEntry] | None,
        _published("array", "paths/globs read as context"),
    ] = Field(default=None, min_length=1, max_length=MOST_FILE_ENTRIES)

    background: Annotated[bool | None, _published("boolean", "true: answer now with a job_id")] = None

    @field_validator("files")
    @classmethod
    def _each_entry_once(cls, files: list[str] | None) -> list[str] | None:
        each_once(files or [], "path")
        return files

    @model_validator(mode="after")
    def _one_conversation(self) -> Self:
        if (self.messages is None) == (self.prompt is None):
            raise ValueError("give exactly one of `messages` or `prompt`")
        return self

    def new_messages(self) -> list[dict[str, Any]]:
        """The call's own messages (the system prompt aside): `messages`, or `prompt` as one."""
        if self.messages is not None:
            return [message.model_dump(mode="json", exclude_none=True) for message in self.messages]
        return [{"role": "user", "content": self.prompt}]


class ChatArguments(GenerationArguments, _Conversation):
    response_format: Annotated[
        ResponseFormat | None,
        _published("object", "{type:json_object} or {type:json_schema,json_schema:{name,schema,strict}}"),
    ] = None
    reasoning: Annotated[
        Reasoning | None,
        _published(
            "object", "{effort: xhigh|high|medium|low|minimal|none} or {max_tokens}; exclude, enabled"
        ),
    ] = None
    tools: Annotated[
        list[ToolDefinition] | None,
        _published(
            "array", "OpenAI function tools: [{type:function,function:{name,description,parameters}}]"
        ),
    ] = Field(default=None, min_length=1, max_length=128)
    tool_choice: Annotated[
        Literal["none", "auto", "required"] | NamedToolChoice | None,
        _published("string", "none|auto|required, or {type:function,function:{name}}", also_object=True),
    ] = None
    parallel_tool_calls: bool | None = None
    plugins: Annotated[
        list[Plugin] | None,
        _published("array", "[{id:web,max_results}] [{id:file-parser,pdf:{engine}}] [{id:response-healing}]"),
    ] = Field(default=None, max_length=16)
    modalities: Annotated[
        list[Literal["text", "image"]] | None,
        WithJsonSchema(
            {
                "type": "array",
                "items": {"enum": ["text", "image"]},
                "description": '["image","text"]: image output',
            }
        ),
    ] = Field(default=None, min_length=1, max_length=2)
    prediction: Annotated[Prediction | None, _published("object", "{type:content,content}")] = None
    output_file: Annotated[str | None, _published("string")] = matching(
        _PATH, "a file path without control characters, e.g. answer.md", default=None, max_length=4096
    )
    user_id: TenantId | None = Field(default=None, description="Naive user to call for")
    project_id: TenantId | None = None

    @field_validator("tool_choice")
    @classmethod
    def _choice_among_tools(cls, choice: object, info: ValidationInfo) -> object:
        tools: list[ToolDefinition] | None = info.data.get("tools")
        if choice not in (None, "none") and not tools:
            raise ValueError("needs tools: give the tools the model may call")
        if isinstance(choice, NamedToolChoice) and tools:
            names = [tool.function.name for tool in tools]
            if choice.function.name not in names:
                raise ValueError(
                    f"names {choice.function.name!r}, which is not one of the tools: {', '.join(names)}"
                )
        return choice

    @field_validator("plugins")
    @classmethod
    def _each_plugin_once(cls, plugins: list[Plugin] | None) -> list[Plugin] | None:
        each_once([plugin.id for plugin in plugins or []], "plugin")
        return plugins

    @field_validator("modalities")
    @classmethod
    def _each_modality_once(cls, modalities: list[str] | None) -> list[str] | None:
        if modalities is not None and len(set(modalities)) < len(modalities):
            raise ValueError('gives a modality more than once, e.g. ["image", "text"]')
        return modalities

    def request_body(
        self, default_model: str | None, messages: list[dict[str, Any]] | None = None
    ) -> dict[str, Any]:
        """OpenRouter's chat body for this call, sending `messages` (a thread's, fitted), else the
        call's own system prompt and messages."""
        if messages is None:
            system = [{"role": "system", "content": self.system}] if self.system is not None else []
            messages = [*system, *self.new_messages()]
        own = {
            *("messages", "prompt", "system", "thread_id", "files", "output_file", "background"),
            *("user_id", "project_id"),
        }
        return self.body_for(default_model, own, messages=messages)


# --- result ------------------------------------------------------------------------------------


class ToolCallOut(BaseModel):
    id: str | None = None
    name: str
    arguments: str = Field(description="JSON text, as the model wrote it")


class ChatUsage(BaseModel):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    reasoning_tokens: int | None = None
    cached_tokens: int | None = None
    cost: float | None = Field(default=None, description="USD, as OpenRouter reports it")


# Published by shape (every client reads the outputSchema; the README lists the fields).
_OBJECT = WithJsonSchema({"type": "object"}, mode="serialization")
_ARRAY = WithJsonSchema({"type": "array"}, mode="serialization")


class ChatResult(MethodResult):
    text: str = Field(description="the assistant's reply, unchanged")
    id: str | None = Field(default=None, description="generation id, for naive_llm_generation")
    model: str | None = Field(default=None, description="the model that answered")
    provider: str | None = None
    finish_reason: str | None = None
    truncated: bool = Field(default=False, description="the answer hit max_tokens")
    # Nested records published by shape (every client reads the tool's outputSchema; the README
    # lists their fields): tool_calls [{id, name, arguments}], usage {prompt_tokens,
    # completion_tokens, total_tokens, reasoning_tokens, cached_tokens, cost}, images [{mime_type,
    # size_bytes, url, left_out}].
    tool_calls: Annotated[list[ToolCallOut], _ARRAY] = Field(default_factory=list)
    reasoning: str | None = None
    usage: Annotated[ChatUsage | None, _OBJECT] = None
    credits_used: float | None = None
    credits_remaining: float | None = None
    images: Annotated[list[ImageOut], _ARRAY] = Field(default_factory=list)
    # By shape too: {content: [{token, logprob, bytes, top_logprobs: [{token, logprob, bytes}]}],
    # left_out}.
    logprobs: Annotated[Logprobs | None, _OBJECT] = None
    notes: list[str] = Field(
        default_factory=list, description="what the server changed, e.g. max_tokens under a cap"
    )
    # The thread this answer is in; what of it was left out to fit; when `text` is only the
    # answer's beginning, the whole one's length and its resource (the README has each).
    thread_id: str | None = None
    left_out_turns: int | None = None
    text_chars: int | None = None
    answer_uri: str | None = None
    # What of `files` was sent and what was skipped, and why; where `output_file` wrote the answer.
    files: Annotated[FilesUsed | None, _OBJECT] = None

    @property
    def output_file(self) -> str | None:
        return self.files.output_file if self.files is not None else None

    @classmethod
    def from_completion(
        cls,
        completion: ChatCompletion,
        notes: list[str] | None = None,
        *,
        max_image_bytes: int,
        redact: Redactor,
    ) -> ChatResult:
        """The result of an answer (already redacted, as the upstream client gives it); its images
        shown within `max_image_bytes` (NAIVE_MAX_IMAGE_BYTES), and its logprob tokens kept from
        spelling a secret of `redact`'s."""
        choice = completion.choices[0]
        message = choice.message
        usage = completion.usage
        return cls(
            text=message.content or "",
            id=completion.id,
            model=completion.model,
            provider=completion.provider,
            finish_reason=choice.finish_reason,
            truncated=bool(completion.truncated) or choice.finish_reason == "length",
            tool_calls=[
                ToolCallOut(id=call.id, name=call.function.name, arguments=call.function.arguments)
                for call in message.tool_calls or []
            ],
            reasoning=message.reasoning,
            usage=None
            if usage is None
            else ChatUsage(
                prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens,
                total_tokens=usage.total_tokens,
                reasoning_tokens=usage.completion_tokens_details.reasoning_tokens
                if usage.completion_tokens_details
                else None,
                cached_tokens=usage.prompt_tokens_details.cached_tokens
                if usage.prompt_tokens_details
                else None,
                cost=usage.cost,
            ),
            credits_used=completion.credits_used,
            credits_remaining=completion.credits_remaining,
            images=read_images([image.image_url.url for image in message.images or []], max_image_bytes),
            logprobs=_no_secret_spelled(choice.logprobs, redact),
            notes=notes or [],
        )

    def in_thread(self, kept: Kept, max_chars: int) -> ChatResult:
        """This result, kept as the newest turn of `kept`'s thread: an answer longer than
        `max_chars` (NAIVE_MAX_RESULT_CHARS) comes back as its beginning and a link to it whole."""
        self.thread_id = kept.thread_id
        self.notes += kept.notes
        if len(self.text) > max_chars:
            self.text_chars = len(self.text)
            self.text = beginning_of(self.text, max_chars)
            self.answer_uri = turn_uri(kept.thread_id, kept.answer_turn)
        return self

    def written(self) -> None:
        """The answer is in `output_file`: the result gives its beginning only."""
        whole = len(self.text) if self.text_chars is None else self.text_chars
        if len(self.text) > OUTPUT_HEAD_CHARS:
            self.text = beginning_of(self.text, OUTPUT_HEAD_CHARS)
        self.text_chars = whole

    def whole(self, max_chars: int, why: str) -> ChatResult:
        """This result, in no thread: a long answer comes back whole, saying why (`why`)."""
        if len(self.text) > max_chars and self.output_file is None:
            self.notes.append(
                f"the answer is longer than {max_chars} characters (NAIVE_MAX_RESULT_CHARS) and comes "
                f"whole: {why}"
            )
        return self

    def content(self) -> list[str | ImageBlock | LinkBlock]:
        blocks: list[str | ImageBlock | LinkBlock] = [self.text] if self.text else []
        if self.output_file is not None:
            blocks.append(
                f"[The whole answer, {self.text_chars} characters, is written to {self.output_file}"
                + ("; above is its beginning.]" if len(self.text) < (self.text_chars or 0) else ".]")
            )
        elif self.answer_uri is not None and self.text_chars is not None:
            blocks.append(
                f"[The answer goes on: above are its first {len(self.text)} of {self.text_chars} characters. "
                f"The whole answer is the resource {self.answer_uri}: read it with resources/read, or "
                "continue the thread asking for the part you need.]"
            )
            blocks.append(
                LinkBlock(
                    uri=self.answer_uri,
                    name=f"answer of {self.model or 'the model'}",
                    description=f"the whole answer, {self.text_chars} characters",
                    mime_type="text/markdown",
                )
            )
        blocks += [image.block for image in self.images if image.block is not None]
        lines = [line for number, image in enumerate(self.images, 1) if (line := image.line(number))]
        if lines:
            blocks.append("\n".join(lines))
        if self.tool_calls:
            calls = [call.model_dump(exclude_none=True) for call in self.tool_calls]
            blocks.append("The model asks to call tools:\n" + json.dumps(calls, ensure_ascii=False))
        if self.reasoning and self.reasoning.strip():
            blocks.append(self._reasoning_block(self.reasoning.strip()))
        blocks.append(self.summary())
        return blocks

    @staticmethod
    def _reasoning_block(reasoning: str) -> str:
        """The model's reasoning, after the answer and kept short: the agent reads every block."""
        if len(reasoning) <= REASONING_SHOWN_CHARS:
            return f"The model's reasoning:\n{reasoning}"
        return (
            f"The model's reasoning (its first {REASONING_SHOWN_CHARS} of {len(reasoning)} characters; "
            f"all of it is in the structured result's `reasoning`):\n{reasoning[:REASONING_SHOWN_CHARS]}…"
        )

    @staticmethod
    def _logprobs_part(logprobs: Logprobs) -> str:
        kept = len(logprobs.content)
        if not logprobs.left_out:
            return f"logprobs of {kept} tokens in the structured result"
        return f"logprobs of the first {kept} of {kept + logprobs.left_out} tokens in the structured result"

    def summary(self) -> str:
        """One line of metadata: who answered, why it stopped, tokens, cost, credits."""
        parts = [f"model {self.model or 'unknown'}" + (f" via {self.provider}" if self.provider else "")]
        parts.append(
            f"finish {self.finish_reason or 'unknown'}"
            + (" (truncated at max_tokens)" if self.truncated else "")
        )
        if self.usage is not None and self.usage.prompt_tokens is not None:
            reasoned = self.usage.reasoning_tokens
            parts.append(
                f"tokens {self.usage.prompt_tokens} in / {self.usage.completion_tokens or 0} out"
                + (f" (of which {reasoned} reasoning)" if reasoned else "")
            )
        parts.append(f"cost {format_usd(self.usage.cost if self.usage else None)}")
        if self.credits_used is None and self.credits_remaining is None:
            parts.append("credits unknown")
        else:
            used, left = format_credits(self.credits_used), format_credits(self.credits_remaining)
            parts.append(f"credits {used} used, {left} left")
        if self.images:
            left_out = sum(image.left_out is not None for image in self.images)
            parts.append(f"images {len(self.images)}" + (f" ({left_out} left out)" if left_out else ""))
        if self.logprobs is not None:
            parts.append(self._logprobs_part(self.logprobs))
        if self.id:
            parts.append(f"id {self.id}")
        if self.thread_id:
            parts.append(f"thread_id {self.thread_id}")
        if self.files is not None and (line := self.files.line()):
            parts.append(line)
        parts += self.notes
        return "[" + " · ".join(parts) + "]"


def beginning_of(text: str, chars: int) -> str:
    """The first `chars` characters of `text`, ending at a line or a word where one is near."""
    cut = text[:chars]
    for mark in ("\n", " "):
        end = cut.rfind(mark, chars - chars // 10)
        if end > 0:
            return cut[:end]
    return cut


def _no_secret_spelled(logprobs: Logprobs | None, redact: Redactor) -> Logprobs | None:
    """The tokens, joined, are the answer's text, whose secrets were redacted; but a secret cut
    across tokens is in no one token: those tokens are replaced (with their alternatives)."""
    if logprobs is None:
        return None
    spelling = redact.spelling_a_secret([entry.token for entry in logprobs.content])
    if not spelling:
        return logprobs
    content = [
        TokenLogprob(token=REDACTED, logprob=entry.logprob) if index in spelling else entry
        for index, entry in enumerate(logprobs.content)
    ]
    return logprobs.model_copy(update={"content": content})


# --- the method --------------------------------------------------------------------------------


async def files_of(call: CallContext, files: list[str] | None) -> ReadFiles | None:
    """The files a call names, read (in a worker thread: it is disk I/O, bounded) under the roots
    the MCP face allows; refused by name before anything is sent."""
    if files is None:
        return None
    roots = await call.file_roots()
    return await anyio.to_thread.run_sync(read_files, files, roots, call.file_limits())


def with_files(messages: list[dict[str, Any]], read: ReadFiles | None) -> list[dict[str, Any]]:
    """The call's own messages with the files' one message first (after any system or developer
    messages that lead them, which stay at the head of the conversation)."""
    if read is None:
        return messages
    lead = 0
    while lead < len(messages) and messages[lead].get("role") in ("system", "developer"):
        lead += 1
    return [*messages[:lead], read.message(), *messages[lead:]]


async def _output_target(call: CallContext, output_file: str | None) -> OutputTarget | None:
    if output_file is None:
        return None
    roots = await call.file_roots()
    return await anyio.to_thread.run_sync(output_target, output_file, roots)


async def _write_answer(call: CallContext, result: ChatResult, target: OutputTarget | None) -> None:
    """The whole answer written to `target`; if that fails, the answer (paid for) comes back here."""
    if target is None:
        return
    try:
        await anyio.to_thread.run_sync(write_output, target, result.text)
    except OSError as exc:
        result.notes.append(
            f"could not write output_file {target} ({exc.strerror or type(exc).__name__}): the answer is here"
        )
        return
    result.files = (result.files or FilesUsed()).model_copy(update={"output_file": str(target)})


async def chat(call: CallContext, arguments: ChatArguments) -> ChatResult:
    result = await _chat(call, arguments)
    if result.output_file is not None:
        result.written()
    return result


async def _chat(call: CallContext, arguments: ChatArguments) -> ChatResult:
    # Who calls first: with neither a key nor a model, the missing key is what to fix first.
    caller = call.caller(arguments.user_id, arguments.project_id)
    services = call.services
    threads = services.threads
    target = await _output_target(call, arguments.output_file)
    read = await files_of(call, arguments.files)
    messages = with_files(arguments.new_messages(), read)
    history = None
    if arguments.thread_id is not None:
        history = await threads.history(caller, arguments.thread_id, messages)
    body = arguments.request_body(services.settings.default_model, messages=[])
    context = (
        await context_of(call, caller, model_chain(body)) if history is not None and history.turns else None
    )
    fitted = threads.fit(history, arguments.system, messages, context, arguments.max_tokens)
    body["messages"] = fitted.messages
    result = await generate(call, caller, "chat", body, arguments)
    result.files = read.used if read is not None else None
    await _write_answer(call, result, target)
    if fitted.left_out:
        result.left_out_turns = fitted.left_out
        result.notes.append(
            f"left out the {fitted.left_out} oldest turns of thread {arguments.thread_id} to fit "
            f"{body['model']}'s context"
        )
    if not threads.enabled:
        return result.whole(services.settings.max_result_chars, "threads are off (NAIVE_THREADS=false)")
    unkept = threads.unkept(arguments.system, messages) if history is None else None
    if unkept is not None:
        result.notes.append(f"this answer is in no thread: {unkept}")
        return result.whole(services.settings.max_result_chars, "no thread keeps it")
    answer = answer_message(result.text, [(c.id, c.name, c.arguments) for c in result.tool_calls])
    try:
        kept = await threads.keep(caller, history, arguments.system, messages, answer, result.model)
    except ThreadFilledMeanwhile as full:
        result.notes.append(str(full))
        return result.whole(services.settings.max_result_chars, "no thread keeps it")
    except Exception as exc:  # the answer is paid for: it comes back even if the store is away
        logger.error("could not keep the answer in a thread: %s", type(exc).__name__)
        result.notes.append(f"this answer is in no thread: the store failed ({type(exc).__name__})")
        return result.whole(services.settings.max_result_chars, "no thread could keep it")
    return result.in_thread(kept, services.settings.max_result_chars)


async def context_of(call: CallContext, caller: Caller, chain: list[str]) -> int | None:
    """The least context of the models `chain` may be routed to, from the model list; None when
    the list is not to be had or gives none (a thread is then sent whole)."""
    try:
        models = await call.services.catalog.models(caller)
    except NaiveError as error:
        logger.info("no model list to fit a thread to (%s): sent whole", error.kind)
        return None
    return context_length(chain, models)


async def generate(
    call: CallContext, caller: Caller, route: Route, body: dict[str, Any], arguments: GenerationArguments
) -> ChatResult:
    """One guarded generation on `route` (chat or text completions): admitted by the spend guard,
    streamed with progress, settled however it ends, shaped as a `ChatResult`."""
    services = call.services
    async with services.guard.spending(caller, body) as spend:

        def on_chunk(stream: ChatStream) -> None:
            call.progress.update(stream.progress_message, stream.answer_so_far)  # first: the client waits
            if call.on_chunk is not None:
                call.on_chunk(stream)
            spend.saw(stream)  # may stop the call: its output passed what was reserved

        try:
            completion = await services.client.generate(route, body, caller, on_chunk=on_chunk)
        except UpstreamError as error:
            _blame_the_default(error, arguments, body["model"])
            raise
        spend.answered(completion)
    return answered(call, caller, spend, completion)


def answered(call: CallContext, caller: Caller, spend: Spend, completion: ChatCompletion) -> ChatResult:
    """The result of an admitted call's answer: its images shown within NAIVE_MAX_IMAGE_BYTES,
    nothing of the caller's key in it, with what the spend guard noted."""
    services = call.services
    return ChatResult.from_completion(
        completion,
        notes=spend.notes,
        max_image_bytes=services.settings.max_image_bytes,
        redact=services.redact.including(caller.api_key),
    )


def _blame_the_default(error: UpstreamError, arguments: GenerationArguments, model: str) -> None:
    """A model refused when the call named none is the server's NAIVE_DEFAULT_MODEL's fault."""
    named = arguments.model is not None or bool(arguments.models)
    if not named and error.kind in ("invalid_input", "not_found") and model in error.message:
        error.kind = "bad_default_model"


CHAT = Method(
    primitive="llm",
    name="chat",
    description=(
        "Ask another model: one chat completion through Naive's gateway to 300+ models, with "
        "fallbacks, routing, tools, structured output, web search (`plugins`), image output "
        "(`modalities`). Costs credits per token; the result says the model that answered, tokens, "
        "cost, credits used and left."
    ),
    arguments=ChatArguments,
    result=ChatResult,
    annotations=spending_annotations("Chat with a model (Naive)"),
    handler=chat,
    started={"text": ""},
)
