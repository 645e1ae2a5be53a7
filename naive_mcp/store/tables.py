"""The store's schema, as the queries see it (the migrations build it: `migrations/versions`).

- `caps`: spend and open reservations per cap scope and period, in credits. A scope is
  `total`, `tenant:<key digest>:<user>` or `key:<key digest>`; a period is `all`,
  `day:YYYY-MM-DD` or `month:YYYY-MM` (UTC). Reserving locks a call's rows in (scope, period)
  order and raises `reserved`; settling moves the reservation into `spent`.
- `holds`: the open reservation of each call in flight: who holds it (a process's lease), the
  rows it raised, the generation id once the first chunk names it. A call's worst case is here
  before the upstream hears of it, so a process that dies leaves it for the next to settle.
- `leases`: one row per live process, renewed while it runs; a hold whose lease expired is
  settled by whichever process sweeps first.
- `ledger`: one row per chat call, whatever its outcome. No prompts, no answers.
- `balances`: the credit balance last reported per API key (by digest).
- `rates`: what answered calls cost in USD and in credits, summed: the credits-per-USD rate.
- `cancels`: cancellations announced on one replica for a call in flight on another.
- `threads`: one row per kept conversation: whose it is (key digest, user, project), its system
  prompt, a title (the start of its first message), its size, and when it expires (a time after
  its last turn). Only with NAIVE_THREADS on: then, and only then, prompts and answers are stored.
- `turns`: a thread's messages in order (`number` from 1): each as the upstream was sent it, JSON.
- `jobs`: one row per call run in the background (a `background: true` call, an MCP task): whose
  it is, its tool, its status, the progress message and the answer so far, its result once it
  ended (the tool result, JSON), the process running it (its lease), and a cancel asked for it
  from any process. Kept until it expires (a time after it ended).
"""

from __future__ import annotations

from sqlalchemy import Column, Float, ForeignKey, Index, Integer, MetaData, String, Table, Text

metadata = MetaData()

caps = Table(
    "caps",
    metadata,
    Column("scope", String(300), primary_key=True),
    Column("period", String(20), primary_key=True),
    Column("spent", Float, nullable=False, default=0.0),
    Column("reserved", Float, nullable=False, default=0.0),
)

holds = Table(
    "holds",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("owner", String(40), nullable=False, index=True),
    Column("started_at", Float, nullable=False),
    Column("credits", Float, nullable=False),
    Column("rows", Text, nullable=False),  # JSON: [[scope, period], …] raised by `credits`
    Column("key_digest", String(64), nullable=False),
    Column("user_id", String(128)),
    Column("project_id", String(128)),
    Column("model_asked", String(200), nullable=False),
    Column("generation_id", String(200)),
    Column("ending", String(20)),  # the outcome once the call is over and being settled
)

leases = Table(
    "leases",
    metadata,
    Column("owner", String(40), primary_key=True),
    Column("expires_at", Float, nullable=False),
)

ledger = Table(
    "ledger",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("call_id", String(40), nullable=False),
    Column("started_at", Float, nullable=False),
    Column("ended_at", Float, nullable=False),
    Column("key_digest", String(64), nullable=False),
    Column("user_id", String(128)),
    Column("project_id", String(128)),
    Column("model_asked", String(200), nullable=False),
    Column("model", String(200)),
    Column("provider", String(200)),
    Column("generation_id", String(200)),
    Column("prompt_tokens", Integer),
    Column("completion_tokens", Integer),
    Column("cost_usd", Float),
    Column("credits", Float),
    Column("credits_reported", Integer, nullable=False),  # 1: the upstream's figure; 0: estimated
    Column("outcome", String(20), nullable=False),
    Index("ix_ledger_ended_at", "ended_at"),
    Index("ix_ledger_generation_id", "generation_id"),
)

balances = Table(
    "balances",
    metadata,
    Column("key_digest", String(64), primary_key=True),
    Column("credits_remaining", Float, nullable=False),
    Column("seen_at", Float, nullable=False),
)

rates = Table(
    "rates",
    metadata,
    Column("name", String(40), primary_key=True),
    Column("credits", Float, nullable=False),
    Column("usd", Float, nullable=False),
)

cancels = Table(
    "cancels",
    metadata,
    Column("key", String(300), primary_key=True),
    Column("created_at", Float, nullable=False, index=True),
)

threads = Table(
    "threads",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("key_digest", String(64), nullable=False),
    Column("user_id", String(128)),
    Column("project_id", String(128)),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("system", Text),
    Column("title", String(200), nullable=False),
    Column("turns", Integer, nullable=False),
    Column("chars", Integer, nullable=False),
    Index("ix_threads_owner", "key_digest", "updated_at"),
    Index("ix_threads_expires_at", "expires_at"),
)

turns = Table(
    "turns",
    metadata,
    Column("thread_id", String(40), ForeignKey("threads.id", ondelete="CASCADE"), primary_key=True),
    Column("number", Integer, primary_key=True),
    Column("role", String(20), nullable=False),
    Column("message", Text, nullable=False),  # JSON: the message as the upstream was sent it
    Column("model", String(200)),  # the model that wrote it (assistant turns)
    Column("chars", Integer, nullable=False),
    Column("created_at", Float, nullable=False),
)

jobs = Table(
    "jobs",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("key_digest", String(64), nullable=False),
    Column("user_id", String(128)),
    Column("project_id", String(128)),
    Column("tool", String(60), nullable=False),
    Column("status", String(20), nullable=False),  # working, completed, failed, cancelled
    Column("status_message", Text),
    Column("partial_text", Text),
    Column("result", Text),  # JSON: the tool result, once it ended
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("runner", String(40), nullable=False),  # the lease of the process running it
    Column("cancel_asked_at", Float),
    Index("ix_jobs_owner", "key_digest", "created_at"),
    Index("ix_jobs_expires_at", "expires_at"),
)
