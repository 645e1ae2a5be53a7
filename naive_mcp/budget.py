"""Spending caps, enforced before any upstream call.

The operator sets them (NAIVE_ALLOWED_MODELS, NAIVE_MAX_CALL_CREDITS, NAIVE_MAX_TOTAL_CREDITS,
NAIVE_MAX_TENANT_CREDITS, NAIVE_MIN_CREDITS_REMAINING). A chat call is admitted only if its
worst case fits every cap: the prompt's size (estimated generously) at the dearest model of its
fallback chain, plus `max_tokens` of output. A call without `max_tokens` under a cap gets the
largest one that fits, and is told so. Admitted calls reserve their worst case first and settle
to what the upstream says they cost, so a burst of parallel calls cannot overshoot a cap.

Caps are in Naive credits, prices in USD per token. Naive converts (with a markup) at a rate its
docs disagree on, so the rate here starts at the costly end (NAIVE_CREDITS_PER_USD) and then
follows what responses show (credits_used / usage.cost), never dropping below what was seen.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from naive_mcp.caller import Caller
from naive_mcp.errors import NaiveError
from naive_mcp.settings import Settings
from naive_mcp.wire import ChatCompletion, ModelEntry

# Tokens per character of prompt, generously: English runs about 0.25, code and CJK higher.
_TOKENS_PER_CHAR = 0.5
# A model's output is bounded by its own limit; this one is above all of today's. Under a cap,
# a call without max_tokens is reserved at this size, and sent with a max_tokens when less fits.
_LONGEST_OUTPUT = 65_536
OWN_TENANT = "(the key's own)"
# Smallest call cost (USD) the credits-per-USD rate is learned from.
_LEARNING_MIN_USD = 0.01


class SpendingRefused(NaiveError):
    default_kind = "spending_cap"

    def describe(self) -> str:
        return f"{self.kind}: {self.message}\nNothing was sent upstream and no credits were spent."


@dataclass
class Reservation:
    """An admitted call's worst case, held until it settles."""

    credits: float
    tenant: str
    api_key: str = field(repr=False)
    notes: list[str] = field(default_factory=list)
    settled: bool = False


class Budget:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._assumed_rate = settings.credits_per_usd
        self._seen_rate: float | None = None  # the highest credits/USD a response has shown
        self._spent_total = 0.0
        self._reserved_total = 0.0
        self._spent: dict[str, float] = defaultdict(float)
        self._reserved: dict[str, float] = defaultdict(float)
        self._remaining: dict[str, float] = {}  # per API key, as the last response said
        self._reserved_by_key: dict[str, float] = defaultdict(float)

    @property
    def needs_prices(self) -> bool:
        """Whether admitting a call needs the models' prices (any credit cap is set)."""
        s = self._settings
        return any(
            cap is not None
            for cap in (
                s.max_call_credits,
                s.max_total_credits,
                s.max_tenant_credits,
                s.min_credits_remaining,
            )
        )

    def check_models(self, body: dict[str, Any]) -> None:
        """NAIVE_ALLOWED_MODELS: every model the call may be routed to must match a pattern."""
        patterns = self._settings.allowed_models
        if not patterns:
            return
        for model in _chain(body):
            if not any(fnmatch.fnmatchcase(model, pattern) for pattern in patterns):
                raise SpendingRefused(
                    f"model {model!r} is not allowed on this server (NAIVE_ALLOWED_MODELS: "
                    f"{', '.join(patterns)}). Choose an allowed model, or ask the operator to add it.",
                    kind="model_not_allowed",
                )

    def admit(self, caller: Caller, body: dict[str, Any], prices: Sequence[ModelEntry]) -> Reservation:
        """Reserve the call's worst case, or refuse it naming the cap. May set body["max_tokens"]."""
        tenant = tenant_of(caller)
        if not self.needs_prices:  # no credit cap: nothing to reserve
            return Reservation(credits=0.0, tenant=tenant, api_key=caller.api_key)
        prompt_usd, completion_usd = self._prices(body, prices)
        prompt_credits = prompt_usd * _prompt_tokens(body) * self._credits_per_usd
        per_token = completion_usd * self._credits_per_usd
        room = self._room(caller, tenant)  # (credits left under the tightest cap, its name)
        notes: list[str] = []
        # A reasoning budget is billed as output too, and may come on top of max_tokens.
        reasoning: dict[str, Any] = body["reasoning"] if isinstance(body.get("reasoning"), dict) else {}
        thinking = reasoning["max_tokens"] if isinstance(reasoning.get("max_tokens"), int) else 0
        max_tokens = body.get("max_tokens")
        if not isinstance(max_tokens, int):
            # Under a cap every call is sent with a max_tokens: the most that fits, within reason.
            fits = (
                math.floor((room[0] - prompt_credits) / per_token) - thinking
                if per_token > 0
                else _LONGEST_OUTPUT
            )
            max_tokens = min(fits, _LONGEST_OUTPUT)
            if max_tokens < 1:
                raise self._refused(room, prompt_credits + per_token * (1 + thinking))
            body["max_tokens"] = max_tokens
            notes.append(f"max_tokens set to {max_tokens} to fit {room[1] or 'the spending caps'}")
        worst = prompt_credits + per_token * (max_tokens + thinking)
        if worst > room[0]:
            raise self._refused(room, worst)
        reservation = Reservation(credits=worst, tenant=tenant, api_key=caller.api_key, notes=notes)
        self._reserved_total += worst
        self._reserved[tenant] += worst
        self._reserved_by_key[caller.api_key] += worst
        return reservation

    def settle(self, reservation: Reservation, completion: ChatCompletion | None) -> None:
        """The call is over: count what it cost (its reservation, if the upstream did not say)."""
        if not self._unreserve(reservation):
            return
        cost = _amount(
            completion.usage.cost if completion is not None and completion.usage is not None else None
        )
        used = _amount(completion.credits_used if completion is not None else None)
        if used is not None and cost is not None and cost >= _LEARNING_MIN_USD and used > 0:
            # Rounding on tiny calls says little about the rate: learn from calls worth a cent.
            self._seen_rate = max(self._seen_rate or 0.0, used / cost)
        if used is None and cost is not None:
            used = cost * self._credits_per_usd
        spent = reservation.credits if used is None else used
        self._spent_total += spent
        self._spent[reservation.tenant] += spent
        remaining = _amount(completion.credits_remaining if completion is not None else None)
        if remaining is not None:
            self._remaining[reservation.api_key] = remaining

    def release(self, reservation: Reservation) -> None:
        """The call failed before anything was generated: nothing was spent."""
        self._unreserve(reservation)

    def _unreserve(self, reservation: Reservation) -> bool:
        """Give the reservation back, once; whether this was the first time."""
        if reservation.settled:
            return False
        reservation.settled = True
        self._reserved_total -= reservation.credits
        self._reserved[reservation.tenant] -= reservation.credits
        self._reserved_by_key[reservation.api_key] -= reservation.credits
        return True

    @property
    def _credits_per_usd(self) -> float:
        return self._seen_rate if self._seen_rate is not None else self._assumed_rate

    def _room(self, caller: Caller, tenant: str) -> tuple[float, str]:
        s = self._settings
        rooms = [(math.inf, "")]
        if s.max_call_credits is not None:
            rooms.append(
                (s.max_call_credits, f"NAIVE_MAX_CALL_CREDITS ({s.max_call_credits:g} credits per call)")
            )
        if s.max_total_credits is not None:
            left = s.max_total_credits - self._spent_total - self._reserved_total
            rooms.append((left, f"NAIVE_MAX_TOTAL_CREDITS ({s.max_total_credits:g}; {left:.6g} left)"))
        if s.max_tenant_credits is not None:
            left = s.max_tenant_credits - self._spent[tenant] - self._reserved[tenant]
            rooms.append(
                (left, f"NAIVE_MAX_TENANT_CREDITS ({s.max_tenant_credits:g} for {tenant}; {left:.6g} left)")
            )
        remaining = self._remaining.get(caller.api_key)
        if (
            s.min_credits_remaining is not None
            and remaining is None
            and self._reserved_by_key[caller.api_key] > 0
        ):
            # The balance comes with the first answer on a key: until then, one call at a time.
            raise SpendingRefused(
                "the credit balance is not known yet (the first answer on this key reports it) and "
                "NAIVE_MIN_CREDITS_REMAINING is set: try again when the call in flight has finished."
            )
        if s.min_credits_remaining is not None and remaining is not None:
            left = remaining - self._reserved_by_key[caller.api_key] - s.min_credits_remaining
            rooms.append(
                (
                    left,
                    f"NAIVE_MIN_CREDITS_REMAINING ({s.min_credits_remaining:g}; balance {remaining:.6g})",
                )
            )
        return min(rooms, key=lambda room: room[0])

    def _refused(self, room: tuple[float, str], needed: float) -> SpendingRefused:
        setting = room[1].split(" ", 1)[0]
        return SpendingRefused(
            f"this call could cost up to {needed:.6g} credits, more than {room[1]} allows. "
            f"Lower max_tokens, shorten the prompt or choose a cheaper model (naive_llm_models sort=price); "
            f"or ask the operator to raise {setting}."
        )

    def _prices(self, body: dict[str, Any], prices: Sequence[ModelEntry]) -> tuple[float, float]:
        """USD per prompt and per completion token, at the dearest model the call may use."""
        by_id = {entry.id: entry for entry in prices}
        prompt = completion = 0.0
        for model in _chain(body):
            entry = by_id.get(model)
            pricing = entry.pricing if entry is not None else None
            if (
                pricing is None
                or pricing.prompt is None
                or pricing.completion is None
                or min(pricing.prompt, pricing.completion) < 0
            ):
                raise SpendingRefused(
                    f"the cost of {model!r} cannot be estimated (it is not in the model list with prices), "
                    "and this server caps spending. Choose a listed model (naive_llm_models)."
                )
            prompt = max(prompt, pricing.prompt)
            completion = max(completion, pricing.completion)
        return prompt, completion


def tenant_name(caller: Caller) -> str:
    """The Naive user a call is for. `default` and `me` are the key's own subject, as no user is."""
    return caller.user_id if caller.user_id not in (None, "default", "me") else OWN_TENANT


def tenant_of(caller: Caller) -> str:
    """Whose spend a call is: the user, on this key (two accounts' users are different tenants)."""
    return f"{tenant_name(caller)} (key {key_digest(caller.api_key)[:8]})"


def key_digest(api_key: str) -> str:
    """A name for an API key that is not the key."""
    return hashlib.sha256(api_key.encode()).hexdigest()


def _amount(value: float | None) -> float | None:
    """A figure from the upstream fit to count with: finite and not negative; else unknown."""
    return value if value is not None and math.isfinite(value) and value >= 0 else None


def _chain(body: dict[str, Any]) -> list[str]:
    return list(dict.fromkeys([body["model"], *(body.get("models") or [])]))


def _prompt_tokens(body: dict[str, Any]) -> int:
    return math.ceil(len(json.dumps(body.get("messages", []))) * _TOKENS_PER_CHAR) + 16
