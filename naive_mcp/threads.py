"""Threads: conversations kept in the store, so that a chat continues one by its id, with any model.

    history = await threads.history(caller, thread_id)     # or None, for a new thread
    sent = threads.fit(history, system, messages, context, output)   # what the upstream is sent
    kept = await threads.keep(caller, history, system, messages, answer, model)

A thread belongs to exactly one caller (its API key and tenant): to anyone else, and once it has
expired (NAIVE_THREAD_TTL after its last turn), it does not exist. It is bounded in turns and
characters (NAIVE_THREAD_MAX_TURNS, NAIVE_THREAD_MAX_CHARS) and a caller keeps at most
NAIVE_THREADS_PER_CALLER of them. With NAIVE_THREADS off, nothing here writes anything.

What is kept: the thread's system prompt, and every message in order as the upstream was sent it
(the calls' own messages and each answer: its text and tool calls, not its images or reasoning).
"""

from __future__ import annotations

import json
import math
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from naive_mcp.caller import Caller
from naive_mcp.errors import ArgumentError
from naive_mcp.redaction import Redactor
from naive_mcp.settings import Settings
from naive_mcp.store import ThreadLimits, ThreadRecord, Turn, UsageScope, owned_by

if TYPE_CHECKING:
    from naive_mcp.store.store import Store

THREAD_ID_PATTERN = r"^thr_[A-Za-z0-9_-]{16,40}$"
THREADS_URI = "naive://threads"
# Tokens a character of a kept turn is counted at when fitting a model's context: English runs
# about 0.25, code and CJK higher. (The caps count input at twice this: estimate.py.)
_FIT_TOKENS_PER_CHAR = 1 / 3
_FIT_TOKENS_PER_IMAGE = 1_600
# Room left for the answer when a call gives no max_tokens: this, or a quarter of the context.
_FIT_OUTPUT_TOKENS = 4_096
# The roles kept however a thread is trimmed to fit a model.
_PINNED = ("system", "developer")


def thread_uri(thread_id: str) -> str:
    return f"{THREADS_URI}/{thread_id}"


def turn_uri(thread_id: str, number: int) -> str:
    return f"{THREADS_URI}/{thread_id}/turns/{number}"


@dataclass(frozen=True, slots=True)
class History:
    """A thread being continued: its record and turns, as read when the call began."""

    record: ThreadRecord
    turns: list[Turn]


@dataclass(frozen=True, slots=True)
class Fitted:
    """What a call sends: the messages, and how many of the thread's turns were left out to fit."""

    messages: list[dict[str, Any]]
    left_out: int = 0


@dataclass(frozen=True, slots=True)
class Kept:
    """A thread after a call: its id, and the number of the answer's turn (its resource)."""

    thread_id: str
    answer_turn: int
    notes: list[str] = field(default_factory=list)


class ThreadFilledMeanwhile(Exception):
    """A thread continued by several calls at once: the ones past its bounds are kept in none."""


class Threads:
    def __init__(self, settings: Settings, store: Callable[[], Awaitable[Store]], redact: Redactor) -> None:
        """`redact`: the server's secrets, kept out of a thread's title (its reader's redaction
        could not find a secret cut at the title's end)."""
        self.enabled = settings.threads
        self._store = store
        self._redact = redact
        self._limits = ThreadLimits(
            ttl=settings.thread_ttl,
            per_owner=settings.threads_per_caller,
            max_turns=settings.thread_max_turns,
            max_chars=settings.thread_max_chars,
        )
        self._ttl_words = _duration(settings.thread_ttl)

    async def history(self, caller: Caller, thread_id: str, adding: Sequence[dict[str, Any]]) -> History:
        """The caller's thread `thread_id`, to be continued with the messages `adding`; refused
        (before anything is sent) if there is no such thread of this caller's, or it is full."""
        if not self.enabled:
            raise ArgumentError(
                "thread_id: threads are off on this server (NAIVE_THREADS=false), so no conversation is "
                "kept to continue.",
                kind="threads_off",
            )
        store = await self._store()
        found = await store.thread(thread_id, _owner(caller))
        if found is None:
            raise ArgumentError(
                f"thread_id: there is no thread {thread_id} of yours. A thread belongs to the API key and "
                f"tenant (user_id, project_id) that started it, and is deleted {self._ttl_words} after its "
                "last turn.",
                kind="thread_not_found",
            )
        record, turns = found
        past = self._past_bounds(record.turns, record.chars, adding)
        if past is not None:
            raise ArgumentError(
                f"thread_id: thread {thread_id} holds {record.turns} turns and {record.chars} characters, "
                f"and this call would take it past {past}, the most a thread holds here.",
                kind="thread_full",
            )
        return History(record, turns)

    def unkept(self, system: str | None, messages: Sequence[dict[str, Any]]) -> str | None:
        """Why a new thread could not keep a call's `system` and `messages` (past what a thread
        holds, as a continued one is refused: `history`), or None when it can. The call is still
        answered: it just starts no thread."""
        past = self._past_bounds(0, len(system or ""), messages)
        return None if past is None else f"its messages (and its answer) would be past {past}"

    def _past_bounds(self, turns: int, chars: int, adding: Sequence[dict[str, Any]]) -> str | None:
        """Which bound a thread of `turns` and `chars` would pass with `adding` and an answer (its
        characters aside: an answer may take a thread past them), as its setting; None if none."""
        limits = self._limits
        if turns + len(adding) + 1 > limits.max_turns:
            return f"{limits.max_turns} turns (NAIVE_THREAD_MAX_TURNS)"
        if chars + sum(len(json.dumps(message, ensure_ascii=False)) for message in adding) > limits.max_chars:
            return f"{limits.max_chars} characters (NAIVE_THREAD_MAX_CHARS)"
        return None

    @staticmethod
    def fit(
        history: History | None,
        system: str | None,
        messages: Sequence[dict[str, Any]],
        context_length: int | None,
        max_output: int | None,
    ) -> Fitted:
        """The messages a call sends: the system prompt (the call's, else the thread's), the
        thread's turns, then the call's own messages. When they would not leave room for the
        answer within `context_length` tokens, the oldest exchanges are left out (each from a user
        turn up to the next, so that no tool result loses its call); system and developer turns
        and the call's own messages always stay."""
        system = system if system is not None else (history.record.system if history else None)
        head = [{"role": "system", "content": system}] if system is not None else []
        turns = history.turns if history is not None else []
        if not turns or context_length is None:
            return Fitted([*head, *(turn.message for turn in turns), *messages])
        output = _output_room(context_length, max_output)
        room = context_length - output - sum(map(_tokens, [*head, *messages]))
        room -= sum(_tokens(turn.message) for turn in turns if turn.role in _PINNED)
        keep = [turn.role in _PINNED for turn in turns]
        exchanges = _exchanges(turns)
        # A tool result of this call's must follow its call (every provider refuses one that does
        # not): the exchange that holds the call, and every later one, are sent even if they do
        # not fit (the upstream then says the prompt is too long, which a model can act on).
        held = _first_calling(exchanges, turns, messages)
        for exchange in exchanges[held:]:
            room -= sum(_tokens(turns[index].message) for index in exchange)
            for index in exchange:
                keep[index] = True
        for exchange in reversed(exchanges[:held]):
            size = sum(_tokens(turns[index].message) for index in exchange)
            if size > room:
                break
            room -= size
            for index in exchange:
                keep[index] = True
        kept = [turn.message for turn, kept in zip(turns, keep, strict=True) if kept]
        return Fitted([*head, *kept, *messages], left_out=keep.count(False))

    async def keep(
        self,
        caller: Caller,
        history: History | None,
        system: str | None,
        messages: Sequence[dict[str, Any]],
        answer: dict[str, Any],
        model: str | None,
        *,
        copied_from: str | None = None,
    ) -> Kept:
        """Add the call's messages and its answer to the thread (a new one when `history` is None:
        a copy of `copied_from`'s turns, if given); `system` becomes the thread's system prompt."""
        store = await self._store()
        turns = [Turn(str(message["role"]), dict(message)) for message in messages]
        turns.append(Turn("assistant", answer, model))
        continued = history.record.id if history is not None else None
        record, stored = await store.keep_turns(
            _owner(caller),
            continued,
            new_thread_id(),
            turns,
            self._limits,
            system=system,
            title=_title(messages, self._redact.including(caller.api_key))
            or (history.record.title if history else ""),
            copied_from=copied_from,
        )
        if not stored:
            raise ThreadFilledMeanwhile(
                f"thread {continued} was filled meanwhile by calls made at the same time (it holds "
                f"{record.turns} turns, {record.chars} characters): this answer is in no thread"
            )
        notes = []
        if continued is not None and record.id != continued:
            notes.append(f"thread {continued} had expired meanwhile: this answer starts thread {record.id}")
        return Kept(record.id, stored[-1].number, notes)

    async def listed(self, scope: UsageScope, limit: int = 100) -> list[ThreadRecord]:
        return await (await self._store()).threads(scope, limit)

    async def read(self, scope: UsageScope, thread_id: str) -> tuple[ThreadRecord, list[Turn]] | None:
        return await (await self._store()).thread(thread_id, scope)

    async def turn(self, scope: UsageScope, thread_id: str, number: int) -> Turn | None:
        return await (await self._store()).turn(thread_id, scope, number)


def chars_that_fit(context_length: int, max_output: int | None = None) -> int:
    """How many characters of prompt leave room for the answer in `context_length` tokens, counted
    as `Threads.fit` counts a thread's turns."""
    return max(
        0, math.floor((context_length - _output_room(context_length, max_output)) / _FIT_TOKENS_PER_CHAR)
    )


def _output_room(context_length: int, max_output: int | None) -> int:
    """The tokens left for the answer: `max_output` (max_tokens), else 4,096 or a quarter of the context."""
    return max_output if max_output is not None else min(_FIT_OUTPUT_TOKENS, context_length // 4)


def new_thread_id() -> str:
    return "thr_" + secrets.token_urlsafe(16)


def answer_message(text: str, tool_calls: Sequence[tuple[str | None, str, str]]) -> dict[str, Any]:
    """An answer as a thread keeps it (and resends it): the assistant's text and its tool calls,
    each `(id, name, arguments)`."""
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if tool_calls:
        message["tool_calls"] = [
            {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
            for call_id, name, arguments in tool_calls
        ]
    return message


def text_of(message: dict[str, Any]) -> str:
    """A message's text: its content, or the text of its parts."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    parts = content if isinstance(content, list) else []
    return "\n".join(
        str(part.get("text", "")) for part in parts if isinstance(part, dict) and part.get("type") == "text"
    )


def _owner(caller: Caller) -> UsageScope:
    return owned_by(caller.key_digest, caller.user, caller.project_id)


def _exchanges(turns: Sequence[Turn]) -> list[list[int]]:
    """The indexes of the turns that may be left out, grouped: each group from a user turn up to
    the next (a group before the first user turn stands alone)."""
    groups: list[list[int]] = []
    for index, turn in enumerate(turns):
        if turn.role in _PINNED:
            continue
        if turn.role == "user" or not groups:
            groups.append([])
        groups[-1].append(index)
    return groups


def _first_calling(
    exchanges: Sequence[list[int]], turns: Sequence[Turn], messages: Sequence[dict[str, Any]]
) -> int:
    """The index of the first exchange holding a tool call that one of `messages` answers (the
    number of exchanges when none does)."""
    answered = {message.get("tool_call_id") for message in messages if message.get("role") == "tool"}
    answered.discard(None)
    for number, exchange in enumerate(exchanges):
        for index in exchange:
            calls = turns[index].message.get("tool_calls") or []
            if any(isinstance(call, dict) and call.get("id") in answered for call in calls):
                return number
    return len(exchanges)


def _tokens(message: dict[str, Any]) -> int:
    content = message.get("content")
    parts = content if isinstance(content, list) else []
    images = sum(1 for part in parts if isinstance(part, dict) and part.get("type") == "image_url")
    text = json.dumps(message, ensure_ascii=False)
    return math.ceil(len(text) * _FIT_TOKENS_PER_CHAR) + images * _FIT_TOKENS_PER_IMAGE


def _title(messages: Sequence[dict[str, Any]], redact: Redactor) -> str:
    """The first user message's beginning, its secrets redacted before it is cut (so that no
    secret's beginning is left at its end)."""
    for message in messages:
        if message.get("role") == "user":
            words = " ".join(redact.exact(text_of(message)).split())
            return words[:80] + ("…" if len(words) > 80 else "")
    return ""


def _duration(seconds: float) -> str:
    for unit, size in (("days", 86_400), ("hours", 3_600), ("minutes", 60)):
        if seconds >= size:
            return f"{seconds / size:g} {unit} (NAIVE_THREAD_TTL)"
    return f"{seconds:g} seconds (NAIVE_THREAD_TTL)"


# --- as resources ------------------------------------------------------------------------------


def listing_json(records: Sequence[ThreadRecord], redact: Redactor, *, enabled: bool) -> str:
    """`naive://threads`: the reader's threads, the most recently used first (their titles, a
    prompt's beginning, with no secret of `redact`'s)."""
    listed = [
        {
            "thread_id": record.id,
            "title": redact.exact(record.title),
            "turns": record.turns,
            "chars": record.chars,
            "created": _iso(record.created_at),
            "updated": _iso(record.updated_at),
            "expires": _iso(record.expires_at),
            "uri": thread_uri(record.id),
        }
        for record in records
    ]
    shown: dict[str, Any] = {"threads": listed}
    if not enabled:
        shown["note"] = "threads are off on this server (NAIVE_THREADS=false): none is kept"
    return json.dumps(shown, ensure_ascii=False, indent=1)


def thread_json(record: ThreadRecord, turns: Sequence[Turn], redact: Redactor) -> str:
    """`naive://threads/{id}`: a thread whole, every turn as the upstream was sent it (with no
    secret of `redact`'s in it, should a prompt have held one)."""
    return json.dumps(
        redact.json(
            {
                "thread_id": record.id,
                "title": record.title,
                "system": record.system,
                "created": _iso(record.created_at),
                "updated": _iso(record.updated_at),
                "expires": _iso(record.expires_at),
                "turns": [
                    {"number": turn.number, **({"model": turn.model} if turn.model else {}), **turn.message}
                    for turn in turns
                ],
            }
        ),
        ensure_ascii=False,
        indent=1,
    )


def turn_text(turn: Turn, redact: Redactor) -> str:
    """`naive://threads/{id}/turns/{n}`: one turn's text (an answer whole), or the message as
    JSON when it has no text of its own (tool calls, parts without text)."""
    text = text_of(turn.message)
    return redact.exact(text) if text else json.dumps(redact.json(turn.message), ensure_ascii=False, indent=1)


def not_found(thread_id: str) -> str:
    return (
        f"thread {thread_id}: there is no such thread of yours. A thread belongs to the API key and "
        "tenant that started it, and is deleted a while after its last turn (NAIVE_THREAD_TTL). "
        "naive://threads lists yours."
    )


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")
