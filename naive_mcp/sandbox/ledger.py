"""The sandbox's memory: balances per API key, generation records, and every request seen.

The sandbox app runs on its own thread (or process); tests read this from theirs, so every
access takes the lock.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

# The sandbox's own billing rule: Naive bills `usage.cost` times a markup, converted to credits:
# 2.1 credits per USD of `usage.cost`, so a credit pays for $0.476190… of it.
MARKUP = 1.05
USD_PER_CREDIT = 0.5
CREDITS_PER_USD = MARKUP / USD_PER_CREDIT


@dataclass
class Account:
    """A key's balance, kept in USD of `usage.cost` (what OpenRouter's `/key` shows, going down by
    exactly each call's cost) and shown in credits on Naive's typed routes (CREDITS_PER_USD)."""

    key: str
    remaining_usd: float
    spent_usd: float = 0.0


@dataclass(frozen=True, slots=True)
class UsdBalance:
    """A key's account as OpenRouter's `/key` and `/credits` report it, in USD."""

    limit: float  # what the key may spend in all: what is left plus what it spent
    remaining: float
    usage: float


@dataclass
class GenerationRecord:
    id: str
    key: str
    user_id: str | None
    project_id: str | None
    model: str
    provider: str
    total_cost: float
    tokens_prompt: int
    tokens_completion: int
    reasoning_tokens: int
    finish_reason: str
    streamed: bool
    cancelled: bool = False
    created: float = field(default_factory=time.monotonic)
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())

    def as_openrouter(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "model": self.model,
            "provider_name": self.provider,
            "total_cost": self.total_cost,
            "created_at": self.created_at,
            "latency": 12,
            "generation_time": 34,
            "finish_reason": self.finish_reason,
            "native_finish_reason": self.finish_reason,
            "tokens_prompt": self.tokens_prompt,
            "tokens_completion": self.tokens_completion,
            "native_tokens_reasoning": self.reasoning_tokens,
            "native_tokens_cached": 0,
            "streamed": self.streamed,
            "cancelled": self.cancelled,
            "usage": self.total_cost,
            "app_id": None,
        }


@dataclass
class RequestRecord:
    method: str
    path: str
    key: str | None
    user_id: str | None
    project_id: str | None
    body: Any = None
    query: str = ""  # the URL's query string, as sent
    client_port: int | None = None  # the TCP connection it came on: shows connection reuse
    first_chunk_at: float | None = None  # when the first streamed chunk went out (monotonic)
    disconnected_at: float | None = None  # when the client went away before the end (monotonic)
    received_at: float = field(default_factory=time.monotonic)
    # Set when a streamed answer is over: finished, failed, dropped, or the client went away.
    stream_ended: threading.Event = field(default_factory=threading.Event, repr=False)


class Ledger:
    def __init__(self, initial_credits: float) -> None:
        self._initial_credits = initial_credits
        self._lock = threading.Lock()
        self._accounts: dict[str, Account] = {}
        self._generations: dict[str, GenerationRecord] = {}
        self._requests: list[RequestRecord] = []
        self._next_id = 0
        self._revoked: set[str] = set()

    def revoke(self, key: str) -> None:
        """From now on the key is refused (401), as a key revoked in Naive's dashboard is."""
        with self._lock:
            self._revoked.add(key)

    def revoked(self, key: str) -> bool:
        with self._lock:
            return key in self._revoked

    def balance(self, key: str) -> float:
        """The key's balance in credits."""
        with self._lock:
            return _credits(self._account(key).remaining_usd)

    def set_balance(self, key: str, credits: float) -> None:
        with self._lock:
            self._account(key).remaining_usd = credits / CREDITS_PER_USD

    def usd_balance(self, key: str) -> UsdBalance:
        with self._lock:
            account = self._account(key)
            return UsdBalance(
                limit=account.remaining_usd + account.spent_usd,
                remaining=account.remaining_usd,
                usage=account.spent_usd,
            )

    def charge(self, key: str, cost_usd: float) -> tuple[float, float]:
        """Bill `cost_usd`; returns (credits used, credits remaining)."""
        with self._lock:
            account = self._account(key)
            account.remaining_usd -= cost_usd
            account.spent_usd += cost_usd
            return _credits(cost_usd), _credits(account.remaining_usd)

    def new_generation_id(self) -> str:
        with self._lock:
            self._next_id += 1
            return f"gen-sandbox-{self._next_id:06d}"

    def record_generation(self, record: GenerationRecord) -> None:
        """Keep a generation that has ended: its stats appear `generation_delay` after now, as
        OpenRouter's do about a second after a generation ends, however long it streamed."""
        record.created = time.monotonic()
        with self._lock:
            self._generations[record.id] = record

    def generation(self, generation_id: str) -> GenerationRecord | None:
        with self._lock:
            return self._generations.get(generation_id)

    def generations(self, key: str) -> list[GenerationRecord]:
        """The generations made with `key`, oldest first."""
        with self._lock:
            return [record for record in self._generations.values() if record.key == key]

    def record_request(self, record: RequestRecord) -> RequestRecord:
        with self._lock:
            self._requests.append(record)
        return record

    def requests(self, key: str | None = None) -> list[RequestRecord]:
        """Requests seen, oldest first; only those made with `key` when given."""
        with self._lock:
            return [record for record in self._requests if key is None or record.key == key]

    def _account(self, key: str) -> Account:
        account = self._accounts.get(key)
        if account is None:
            account = Account(key=key, remaining_usd=self._initial_credits / CREDITS_PER_USD)
            self._accounts[key] = account
        return account


def _credits(usd: float) -> float:
    return round(usd * CREDITS_PER_USD, 8)
