"""What the store keeps and hands back, as plain values (no SQL, no SQLAlchemy)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Outcome = Literal["answered", "failed", "cut_off", "cancelled", "refused"]
OUTCOMES: tuple[Outcome, ...] = ("answered", "failed", "cut_off", "cancelled", "refused")

CapRow = tuple[str, str]  # (scope, period)


@dataclass(frozen=True, slots=True)
class CallRecord:
    """Who made a chat call and what it asked for: the part of a ledger row known at the start."""

    call_id: str
    started_at: float
    key_digest: str
    user_id: str | None
    project_id: str | None
    model_asked: str


@dataclass(frozen=True, slots=True)
class CallResult:
    """How a call ended: the rest of its ledger row."""

    outcome: Outcome
    credits: float | None  # what was counted against the caps, in `counted_in`
    credits_reported: bool  # the upstream's own figure, not an estimate
    model: str | None = None
    provider: str | None = None
    generation_id: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cost_usd: float | None = None
    # What the caps count in: Naive credits, or USD where the backend reports no credits.
    counted_in: Literal["credits", "USD"] = "credits"


@dataclass(frozen=True, slots=True)
class Figures:
    """What a reservation is decided on, read inside its transaction with the rows locked."""

    rows: dict[CapRow, tuple[float, float]]  # (spent, reserved) of each row the call raises
    balance: float | None  # the key's balance when last reported
    rate: float | None  # credits per USD that answered calls showed; None before the first

    def raised(self, credits: float) -> Figures:
        """The figures once `credits` more are reserved on every row: what the next call of a set
        that reserves together is decided on."""
        if not credits:
            return self
        rows = {row: (spent, reserved + credits) for row, (spent, reserved) in self.rows.items()}
        return Figures(rows=rows, balance=self.balance, rate=self.rate)


@dataclass(frozen=True, slots=True)
class OpenHold:
    """A reservation whose process died: to be settled by whoever claims it."""

    call: CallRecord
    credits: float
    generation_id: str | None
    ending: Outcome | None


@dataclass(slots=True)
class Tally:
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    credits: float = 0.0
    credits_unknown: int = 0  # calls whose credits the upstream did not report (estimated)

    def add(self, other: Tally) -> None:
        self.calls += other.calls
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.cost_usd += other.cost_usd
        self.credits += other.credits
        self.credits_unknown += other.credits_unknown


@dataclass(frozen=True, slots=True)
class Exactly:
    """What a ledger column must hold for a row to be seen; None: the column must be empty (a call
    without a user, or without a project)."""

    value: str | None


@dataclass(frozen=True, slots=True)
class UsageScope:
    """Whose usage a reader may see: every field left None is not filtered on (EVERYTHING, for the
    operator); one set keeps only the rows of that API key (by digest), user or project."""

    key_digest: str | None = None
    user: Exactly | None = None  # the user as the ledger keeps it: Exactly(None) is the key's own subject
    project: Exactly | None = None


EVERYTHING = UsageScope()


def owned_by(key_digest: str, user_id: str | None, project_id: str | None) -> UsageScope:
    """The scope of exactly one caller: its key, its user (None: the key's own subject), its project."""
    return UsageScope(key_digest=key_digest, user=Exactly(user_id), project=Exactly(project_id))


@dataclass(frozen=True, slots=True)
class Turn:
    """One message of a thread: as the upstream was sent it (role, content, tool calls…)."""

    role: str
    message: dict[str, Any]
    model: str | None = None  # the model that wrote it (an answer)
    number: int = 0  # its place in the thread, from 1; 0 before it is stored


@dataclass(frozen=True, slots=True)
class ThreadRecord:
    """A kept conversation, without its turns."""

    id: str
    key_digest: str
    user_id: str | None
    project_id: str | None
    created_at: float
    updated_at: float
    expires_at: float
    system: str | None
    title: str
    turns: int
    chars: int  # of its system prompt and its turns' messages as JSON


@dataclass(frozen=True, slots=True)
class ThreadLimits:
    """How long a thread is kept after its last turn (seconds), how many a caller keeps (the
    least recently used go first), and how many turns and characters one holds (its last turn,
    an answer, may take it past the characters)."""

    ttl: float
    per_owner: int
    max_turns: int = 10_000
    max_chars: int = 2**62


@dataclass(slots=True)
class UsageRow:
    """One group of the ledger: calls of one tenant (user on a key) with one model and outcome."""

    key_digest: str
    user_id: str | None
    model: str
    outcome: Outcome
    tally: Tally = field(default_factory=Tally)


JobStatus = Literal["working", "completed", "failed", "cancelled"]


@dataclass(frozen=True, slots=True)
class JobRecord:
    """A call run in the background: whose it is, how far it got, and its result once it ended
    (the tool result as JSON, as a plain call would have answered)."""

    id: str
    key_digest: str
    user_id: str | None
    project_id: str | None
    tool: str
    status: JobStatus
    status_message: str | None
    partial_text: str | None
    result: str | None
    created_at: float
    updated_at: float
    expires_at: float
    runner: str  # the lease of the process running it
    cancel_asked_at: float | None


@dataclass(frozen=True, slots=True)
class JobLimits:
    """How long a job is kept after it ended (seconds), and how many one caller has at once (the
    oldest ended ones go first; with that many working, no more start)."""

    ttl: float
    per_owner: int
