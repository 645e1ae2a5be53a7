"""`llm.compare`: one conversation sent to 2-8 models at once, the answers side by side.

Each model gets the body llm.chat would send it (the same `ChatArguments`, the same
`request_body`), and each is its own guarded call: the spend guard admits the whole set in one
reservation or refuses it before anything is sent (`SpendGuard.admit_all`), then every call
streams through `NaiveClient.generate` at once, is settled on its own, and writes its own ledger
row. A model that fails gives its error in its own entry; the call fails only if all of them do.
An optional `judge` model then reads the question and the numbered answers and writes a
synthesis that cites them: a call of its own, admitted after the answers.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import anyio
from pydantic import BaseModel, Field, WithJsonSchema, field_validator

from naive_mcp.caller import Caller, TenantId
from naive_mcp.context_files import FilesUsed
from naive_mcp.errors import NaiveError
from naive_mcp.estimate import output_tokens_at_least
from naive_mcp.guard import Spend
from naive_mcp.primitives.llm.chat import (
    ChatArguments,
    ChatResult,
    FileEntry,
    Message,
    ProviderPreferences,
    Reasoning,
    _Conversation,
    _published,
    answered,
    beginning_of,
    checked_extra,
    context_of,
    field_names,
    files_of,
    with_files,
)
from naive_mcp.primitives.llm.fields import ModelId, format_credits, format_usd, spending_annotations
from naive_mcp.registry import CallContext, Method, MethodResult
from naive_mcp.streaming import ChatStream
from naive_mcp.threads import History, answer_message, chars_that_fit, turn_uri
from naive_mcp.validation import each_once

# --- arguments ---------------------------------------------------------------------------------

MOST_MODELS = 8


def _as_chat(name: str) -> Any:
    """llm.chat's own field `name`: the same constraints, the same published schema."""
    return ChatArguments.model_fields[name]


# What the judge is told to do; the question and the numbered answers follow as the user's turn.
JUDGE_SYSTEM = (
    "You are the judge of a comparison: several models answered the same question, each numbered. "
    "Write a short synthesis for the person who asked: what the answers agree on, where they differ "
    "or are wrong, and the best answer. Cite the answers by number in brackets, e.g. [1], [2]."
)
# However little room the judge's context leaves, each answer shows it at least this much.
_LEAST_JUDGED_CHARS = 200
# A compare call's arguments that a member's chat body takes as they are.
_SHARED = ("max_tokens", "temperature", "top_p", "seed", "reasoning", "provider", "extra")


# Read once for the whole set (files), or the call's own, not its members' (background).
_NOT_SHARED = frozenset({"files", "background"})


class CompareArguments(_Conversation):
    # The conversation (as llm.chat's), the models, the judge, and the generation fields that make
    # sense for every model alike. (No docstring: it would be published as the schema's description.)

    # Published by shape: naive_llm_chat's schema in tools/list has every field; Message checks them.
    messages: Annotated[
        list[Message] | None, _published("array", "as naive_llm_chat's messages; or prompt")
    ] = Field(default=None, min_length=1)
    models: Annotated[
        list[ModelId],
        WithJsonSchema(
            {
                "type": "array",
                "items": {"type": "string"},
                "minItems": 2,
                "maxItems": MOST_MODELS,
                "description": "2-8 distinct model ids, asked at once",
            }
        ),
    ] = Field(min_length=2, max_length=MOST_MODELS)
    files: Annotated[list[FileEntry] | None, _published("array")] = _as_chat("files")
    judge: ModelId | None = Field(default=None, description="model id: writes a synthesis citing [1], [2]…")
    max_tokens: int | None = _as_chat("max_tokens")
    temperature: float | None = _as_chat("temperature")
    top_p: float | None = _as_chat("top_p")
    seed: int | None = _as_chat("seed")
    reasoning: Annotated[Reasoning | None, _published("object", "as naive_llm_chat's")] = None
    provider: Annotated[ProviderPreferences | None, _published("object", "as naive_llm_chat's")] = None
    extra: Annotated[dict[str, Any] | None, _published("object", "more body fields, sent as-is")] = None
    user_id: TenantId | None = _as_chat("user_id")
    project_id: TenantId | None = _as_chat("project_id")

    @field_validator("models")
    @classmethod
    def _each_model_once(cls, models: list[str]) -> list[str]:
        each_once(models, "model")
        return models

    @field_validator("extra")
    @classmethod
    def _nothing_validated_or_set_by_the_server(cls, extra: dict[str, Any] | None) -> dict[str, Any] | None:
        return checked_extra(extra, field_names(cls), (field_names(ChatArguments), "naive_llm_chat"))

    def member(self, model: str) -> ChatArguments:
        """The chat that asks `model` this conversation: what llm.chat would be called with."""
        # The files are read once, for the whole set, and sent in each member's messages.
        conversation = {
            name: getattr(self, name) for name in _Conversation.model_fields if name not in _NOT_SHARED
        }
        shared = {name: getattr(self, name) for name in _SHARED}
        given = {name: value for name, value in {**conversation, **shared}.items() if value is not None}
        return ChatArguments.model_validate(
            {**given, "model": model, "user_id": self.user_id, "project_id": self.project_id}
        )

    def judging(self, answers: Sequence[CompareAnswer], fits: int | None = None) -> ChatArguments:
        """The judge's chat: the question and the numbered answers, to be synthesised; when they
        are more than `fits` characters (what the judge's context holds), each answer is cut to
        an equal share of what is left, and says so."""
        question = self._question()
        texts = [answer.text or "" for answer in answers if answer.error is None]
        share = None
        if fits is not None and texts:
            room = fits - len(JUDGE_SYSTEM) - len(question) - 100 * (len(answers) + 1)
            if sum(map(len, texts)) > room:
                share = max(room // len(texts), _LEAST_JUDGED_CHARS)
        parts = [f"The question:\n{question}", "The answers:"]
        for number, answer in enumerate(answers, 1):
            if answer.error is None:
                text = answer.text or ""
                if share is not None and len(text) > share:
                    text = (
                        beginning_of(text, share)
                        + f" [… cut to fit the judge's context: {len(text)} characters]"
                    )
                parts.append(f"[{number}] ({answer.model or answer.model_asked}):\n{text}")
            else:
                parts.append(f"[{number}] ({answer.model_asked}) failed: {answer.error_kind}")
        return ChatArguments.model_validate(
            {
                "system": JUDGE_SYSTEM,
                "prompt": "\n\n".join(parts),
                "model": self.judge,
                "user_id": self.user_id,
                "project_id": self.project_id,
            }
        )

    def _question(self) -> str:
        if self.prompt is not None and self.system is None:
            return self.prompt
        lines = [f"system: {self.system}"] if self.system is not None else []
        if self.prompt is not None:
            lines.append(f"user: {self.prompt}")
        for message in self.messages or []:
            lines.append(f"{message.role}: {_text_of(message)}")
        return "\n".join(lines)


def _text_of(message: Message) -> str:
    content = message.content
    if isinstance(content, str):
        return content
    pieces = [part.text if part.type == "text" else f"[{part.type}]" for part in content or []]
    if message.tool_calls:
        pieces += [f"[calls {call.function.name}({call.function.arguments})]" for call in message.tool_calls]
    return " ".join(pieces)


# --- result ------------------------------------------------------------------------------------


class CompareAnswer(BaseModel):
    model_asked: str
    model: str | None = Field(default=None, description="the model that answered")
    text: str | None = None
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cost: float | None = Field(default=None, description="USD")
    credits: float | None = None
    latency_ms: int | None = None
    id: str | None = Field(default=None, description="generation id, for naive_llm_generation")
    # A model that failed: what llm.chat's error says (what happened, what to do next), its kind.
    error: str | None = None
    error_kind: str | None = None
    # A thread of its own, to continue with this answer; as in llm.chat's result.
    thread_id: str | None = None
    left_out_turns: int | None = None
    text_chars: int | None = None
    answer_uri: str | None = None


class Synthesis(BaseModel):
    model: str = Field(description="the judge: the model that answered, or the one asked")
    text: str | None = None
    # Kept in a thread of its own, cut to its share when long: as an answer's.
    thread_id: str | None = None
    text_chars: int | None = None
    answer_uri: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cost: float | None = None
    credits: float | None = None
    id: str | None = None
    error: str | None = None
    error_kind: str | None = None


class CompareTotals(BaseModel):
    """What the call spent in all, the judge's call included; how many models answered."""

    answered: int
    failed: int
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    credits: float = 0.0
    credits_remaining: float | None = None


# Published by shape (every agent reads tools/list; the README lists every field): the answers
# as records, the synthesis and the totals as objects.
_ANSWERS_SCHEMA = WithJsonSchema({"type": "array", "items": {"type": "object"}}, mode="serialization")
_OBJECT_SCHEMA = WithJsonSchema({"type": "object"}, mode="serialization")


class CompareResult(MethodResult):
    answers: Annotated[list[CompareAnswer], _ANSWERS_SCHEMA]
    synthesis: Annotated[Synthesis | None, _OBJECT_SCHEMA] = None
    totals: Annotated[CompareTotals, _OBJECT_SCHEMA]
    notes: list[str] = Field(default_factory=list)
    files: Annotated[FilesUsed | None, _OBJECT_SCHEMA] = None

    def content(self) -> list[str]:
        blocks = [_answer_block(number, answer) for number, answer in enumerate(self.answers, 1)]
        synthesis = self.synthesis
        if synthesis is not None:
            if synthesis.error is None:
                kept = f"\n[the synthesis's thread_id {synthesis.thread_id}]" if synthesis.thread_id else ""
                blocks.append(
                    f"Synthesis by {synthesis.model}:\n{synthesis.text or ''}{_goes_on(synthesis)}{kept}"
                )
            else:
                blocks.append(f"Synthesis by {synthesis.model} failed:\n{synthesis.error}")
        blocks.append(self.summary())
        return blocks

    def summary(self) -> str:
        """One line: how many answered, tokens, cost and credits of the whole call."""
        totals = self.totals
        parts = [f"{totals.answered} of {len(self.answers)} models answered"]
        parts.append(f"tokens {totals.prompt_tokens} in / {totals.completion_tokens} out")
        parts.append(f"cost {format_usd(totals.cost)}")
        used, left = format_credits(totals.credits), format_credits(totals.credits_remaining)
        parts.append(f"credits {used} used, {left} left")
        if self.synthesis is not None:
            parts.append("with a synthesis" if self.synthesis.error is None else "synthesis failed")
        if self.files is not None and (line := self.files.line()):
            parts.append(line)
        parts += self.notes
        return "[" + " · ".join(parts) + "]"


def _answer_block(number: int, answer: CompareAnswer) -> str:
    head = f"[{number}] {answer.model_asked}"
    if answer.error is not None:
        return f"{head} failed:\n{answer.error}"
    parts = [
        head + (f" (answered by {answer.model})" if answer.model not in (None, answer.model_asked) else "")
    ]
    parts.append(f"finish {answer.finish_reason or 'unknown'}")
    if answer.prompt_tokens is not None:
        parts.append(f"tokens {answer.prompt_tokens} in / {answer.completion_tokens or 0} out")
    parts.append(f"cost {format_usd(answer.cost)}")
    parts.append(f"credits {format_credits(answer.credits)}")
    if answer.latency_ms is not None:
        parts.append(f"{answer.latency_ms} ms")
    if answer.id:
        parts.append(f"id {answer.id}")
    if answer.thread_id:
        parts.append(f"thread_id {answer.thread_id}")
    if answer.left_out_turns:
        parts.append(f"left out the {answer.left_out_turns} oldest turns of the thread to fit")
    return " · ".join(parts) + "\n" + (answer.text or "") + _goes_on(answer)


def _goes_on(entry: CompareAnswer | Synthesis) -> str:
    """For an entry cut to its share: where the whole of it is."""
    if entry.answer_uri is None:
        return ""
    return (
        f"\n[The answer goes on: above are its first {len(entry.text or '')} of {entry.text_chars} "
        f"characters. The whole answer is the resource {entry.answer_uri}: read it with resources/read.]"
    )


class AllModelsFailed(NaiveError):
    """Every model of a comparison failed: each one's error, numbered."""

    default_kind = "all_models_failed"

    def __init__(self, answers: Sequence[CompareAnswer]) -> None:
        lines = [
            f"[{number}] {answer.model_asked}: {answer.error}"
            for number, answer in enumerate(answers, 1)
            if answer.error is not None
        ]
        super().__init__("every model failed, so there is nothing to compare:\n" + "\n".join(lines))

    def describe(self, next_step: str | None = None) -> str:
        return f"{self.kind}: {self.message}"


# --- the method --------------------------------------------------------------------------------

_State = Literal["waiting", "streaming", "done", "failed", "cancelled"]


@dataclass
class _Member:
    model: str
    state: _State = "waiting"
    tokens: int = 0
    kind: str = ""

    def shown(self) -> str:
        if self.state == "streaming":
            return f"{self.tokens} tokens"
        return f"failed ({self.kind})" if self.state == "failed" else self.state


@dataclass
class _Board:
    """How each model is doing, for progress: one message for them all."""

    members: list[_Member]
    judge: _Member | None = None
    lines: list[str] = field(default_factory=list)

    def describe(self) -> str:
        shown = [f"[{number}] {m.model}: {m.shown()}" for number, m in enumerate(self.members, 1)]
        if self.judge is not None:
            shown.append(f"judge {self.judge.model}: {self.judge.shown()}")
        return " · ".join(shown)


async def compare(call: CallContext, arguments: CompareArguments) -> CompareResult:
    caller = call.caller(arguments.user_id, arguments.project_id)
    services = call.services
    default = services.settings.default_model
    read = await files_of(call, arguments.files)
    messages = with_files(arguments.new_messages(), read)
    history = None
    if arguments.thread_id is not None:
        history = await services.threads.history(caller, arguments.thread_id, messages)
    bodies, left_out = [], []
    for model in arguments.models:
        body = arguments.member(model).request_body(default, messages=[])
        context = await context_of(call, caller, [model]) if history is not None and history.turns else None
        fitted = services.threads.fit(history, arguments.system, messages, context, arguments.max_tokens)
        body["messages"] = fitted.messages
        bodies.append(body)
        left_out.append(fitted.left_out)
    board = _Board([_Member(model) for model in arguments.models])
    answers = [CompareAnswer(model_asked=model) for model in arguments.models]
    left: list[float] = []  # credits remaining, as each answer reported them
    async with services.guard.spending_all(caller, bodies) as spends:
        call.progress.update(board.describe)
        async with anyio.create_task_group() as members:
            for index, spend in enumerate(spends):
                members.start_soon(
                    _ask_member, call, caller, spend, bodies[index], board, index, answers, left
                )
    notes = [
        f"{model}: {note}"
        for spend, model in zip(spends, arguments.models, strict=True)
        for note in spend.notes
    ]
    if all(answer.error is not None for answer in answers):
        raise AllModelsFailed(answers)
    for answer, count in zip(answers, left_out, strict=True):
        answer.left_out_turns = count or None
    synthesis, judged = None, None
    if arguments.judge is not None:
        board.judge = _Member(arguments.judge)
        call.progress.update(board.describe)
        context = await context_of(call, caller, [arguments.judge])
        judging = arguments.judging(answers, chars_that_fit(context) if context is not None else None)
        judged = judging.new_messages()
        synthesis = await _judge(call, caller, judging.request_body(default), board, left, notes)
    # After the judge, who read the answers whole.
    await _keep(call, caller, history, arguments, messages, answers, notes, (synthesis, judged))
    totals = _totals(answers, synthesis, left)
    files = read.used if read is not None else None
    return CompareResult(answers=answers, synthesis=synthesis, totals=totals, notes=notes, files=files)


async def _keep(
    call: CallContext,
    caller: Caller,
    history: History | None,
    arguments: CompareArguments,
    messages: list[dict[str, Any]],
    answers: list[CompareAnswer],
    notes: list[str],
    judged: tuple[Synthesis | None, list[dict[str, Any]] | None],
) -> None:
    """Each answer in a thread of its own — the thread continued (a copy of its turns), the
    question, that answer — so that the agent continues with whichever answer it prefers; the
    synthesis in one of its own (the judge's question and it). An answer or synthesis past its
    share of NAIVE_MAX_RESULT_CHARS is cut to its beginning and a link."""
    threads = call.services.threads
    synthesis, judge_messages = judged
    system = (
        arguments.system if arguments.system is not None else (history.record.system if history else None)
    )
    source = history.record.id if history is not None else None
    # Each entry to keep: what answered, the thread's system prompt, what it was asked, a thread to copy.
    entries: list[tuple[CompareAnswer | Synthesis, str | None, list[dict[str, Any]], str | None]] = [
        (answer, system, messages, source)
        for answer in answers
        if answer.error is None and answer.text is not None
    ]
    if synthesis is not None and synthesis.error is None and synthesis.text is not None and judge_messages:
        entries.append((synthesis, JUDGE_SYSTEM, judge_messages, None))
    share = call.services.settings.max_result_chars // max(len(entries), 1)
    why = "threads are off (NAIVE_THREADS=false)"
    if threads.enabled and history is None and (unkept := threads.unkept(arguments.system, messages)):
        notes.append(f"the answers are in no thread: {unkept}")
        _whole_notes(answers, share, "no thread keeps it", notes)
        entries = [entry for entry in entries if not isinstance(entry[0], CompareAnswer)]
    for entry, system, asked, copied_from in entries:
        if threads.enabled:
            try:
                kept = await threads.keep(
                    caller,
                    None,
                    system,
                    asked,
                    answer_message(entry.text or "", []),
                    entry.model,
                    copied_from=copied_from,
                )
            except Exception as exc:  # the answers are paid for: they come back all the same
                why = f"no thread could keep it (the store failed: {type(exc).__name__})"
            else:
                entry.thread_id = kept.thread_id
                text = entry.text or ""
                if len(text) > share:
                    entry.text_chars, entry.text = len(text), beginning_of(text, share)
                    entry.answer_uri = turn_uri(kept.thread_id, kept.answer_turn)
                continue
        _whole_notes([entry], share, why, notes)


def _whole_notes(
    entries: Sequence[CompareAnswer | Synthesis], share: int, why: str, notes: list[str]
) -> None:
    """A note for each entry past its share of NAIVE_MAX_RESULT_CHARS that comes whole, and why."""
    for entry in entries:
        if entry.text is not None and len(entry.text) > share:
            who = entry.model_asked if isinstance(entry, CompareAnswer) else f"judge {entry.model}"
            notes.append(
                f"{who}: its text is longer than its share ({share} characters) of NAIVE_MAX_RESULT_CHARS "
                f"and comes whole: {why}"
            )


async def _ask_member(
    call: CallContext,
    caller: Caller,
    spend: Spend,
    body: dict[str, Any],
    board: _Board,
    index: int,
    answers: list[CompareAnswer],
    left: list[float],
) -> None:
    """One model of the set: its own guarded call, its answer or its error in its own entry."""
    member = board.members[index]
    model = str(body["model"])
    started = time.monotonic()
    try:
        async with call.services.guard.settling(spend, caller):
            result = await _generate(call, caller, spend, body, board, member)
    except NaiveError as error:
        member.state, member.kind = "failed", error.kind
        text, kind = _error(call, caller, error)
        answers[index] = CompareAnswer(model_asked=model, error=text, error_kind=kind)
    else:
        member.state = "done"
        usage = result.usage
        answers[index] = CompareAnswer(
            model_asked=model,
            model=result.model,
            text=result.text,
            finish_reason=result.finish_reason,
            prompt_tokens=usage.prompt_tokens if usage else None,
            completion_tokens=usage.completion_tokens if usage else None,
            cost=usage.cost if usage else None,
            credits=result.credits_used,
            latency_ms=round((time.monotonic() - started) * 1000),
            id=result.id,
        )
        if result.credits_remaining is not None:
            left.append(result.credits_remaining)
    call.progress.update(board.describe)


async def _judge(
    call: CallContext,
    caller: Caller,
    body: dict[str, Any],
    board: _Board,
    left: list[float],
    notes: list[str],
) -> Synthesis:
    """The judge's synthesis: a guarded call of its own, admitted now that the answers are in."""
    assert board.judge is not None
    member = board.judge
    try:
        async with call.services.guard.spending(caller, body) as spend:
            result = await _generate(call, caller, spend, body, board, member)
    except NaiveError as error:
        member.state, member.kind = "failed", error.kind
        text, kind = _error(call, caller, error)
        return Synthesis(model=member.model, error=text, error_kind=kind)
    member.state = "done"
    notes += [f"judge {member.model}: {note}" for note in spend.notes]
    if result.credits_remaining is not None:
        left.append(result.credits_remaining)
    return Synthesis(
        model=result.model or member.model,
        text=result.text,
        cost=result.usage.cost if result.usage else None,
        credits=result.credits_used,
        id=result.id,
        prompt_tokens=result.usage.prompt_tokens if result.usage else None,
        completion_tokens=result.usage.completion_tokens if result.usage else None,
    )


async def _generate(
    call: CallContext, caller: Caller, spend: Spend, body: dict[str, Any], board: _Board, member: _Member
) -> ChatResult:
    """One admitted call, streamed as llm.chat streams it; progress tells the board."""
    services = call.services

    def on_chunk(stream: ChatStream) -> None:
        member.state = "streaming"
        member.tokens = output_tokens_at_least(stream.output_pieces, stream.output_bytes)
        call.progress.update(board.describe)
        spend.saw(stream)  # may stop the call: its output passed what was reserved

    completion = await services.client.generate("chat", body, caller, on_chunk=on_chunk)
    spend.answered(completion)
    return answered(call, caller, spend, completion)


def _error(call: CallContext, caller: Caller, error: NaiveError) -> tuple[str, str]:
    """A member's error as llm.chat would give it (redacted as the tools redact an error), and
    the error let go of: its traceback holds the frames it came through, a broken answer's
    buffers with them."""
    text = call.services.redact.including(caller.api_key)(error.describe())
    traceback.clear_frames(error.__traceback__)
    return text, error.kind


def _totals(
    answers: Sequence[CompareAnswer], synthesis: Synthesis | None, left: list[float]
) -> CompareTotals:
    spent: list[CompareAnswer | Synthesis] = [*answers, *([synthesis] if synthesis is not None else [])]
    return CompareTotals(
        answered=sum(answer.error is None for answer in answers),
        failed=sum(answer.error is not None for answer in answers),
        prompt_tokens=sum(entry.prompt_tokens or 0 for entry in spent),
        completion_tokens=sum(entry.completion_tokens or 0 for entry in spent),
        cost=round(sum(entry.cost or 0.0 for entry in spent), 12),
        credits=round(sum(entry.credits or 0.0 for entry in spent), 12),
        # The least reported is the latest: answers only ever spend.
        credits_remaining=min(left) if left else None,
    )


COMPARE = Method(
    primitive="llm",
    name="compare",
    description=(
        "Ask 2-8 `models` the same question at once: answers side by side, each with its tokens, "
        "cost, credits and latency (or its error), and totals; a `judge` model may then write a "
        "synthesis citing them. Costs credits per model; caps admit the set whole or refuse it unsent."
    ),
    arguments=CompareArguments,
    result=CompareResult,
    annotations=spending_annotations("Compare models (Naive)"),
    handler=compare,
    started={"answers": [], "totals": {"answered": 0, "failed": 0}},
)
