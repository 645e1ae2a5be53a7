"""The usage ledger: what this server has spent, per model and per tenant.

Read as the MCP resource `naive://usage`, and written to the log when the server stops.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import asdict, dataclass

from naive_mcp.budget import key_digest, tenant_name
from naive_mcp.caller import Caller
from naive_mcp.wire import ChatCompletion

USAGE_URI = "naive://usage"


@dataclass
class Tally:
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    credits: float = 0.0
    credits_unknown: int = 0  # calls whose credits the upstream did not report

    def add(self, completion: ChatCompletion) -> None:
        self.calls += 1
        usage = completion.usage
        if usage is not None:
            self.prompt_tokens += usage.prompt_tokens or 0
            self.completion_tokens += usage.completion_tokens or 0
            self.cost_usd += usage.cost or 0.0
        if completion.credits_used is None:
            self.credits_unknown += 1
        else:
            self.credits += completion.credits_used

    def merge(self, other: Tally) -> None:
        for name, value in asdict(other).items():
            setattr(self, name, getattr(self, name) + value)


@dataclass(frozen=True)
class UsageScope:
    """Whose usage a reader may see: all (the operator), one API key's, or one pinned user's."""

    key_digest: str | None = None
    user: str | None = None

    def covers(self, key_digest: str, user: str) -> bool:
        return (self.key_digest is None or self.key_digest == key_digest) and (
            self.user is None or self.user == user
        )


EVERYTHING = UsageScope()


class UsageLedger:
    def __init__(self) -> None:
        # (API key digest, tenant, model) -> what those calls used
        self._tallies: dict[tuple[str, str, str], Tally] = defaultdict(Tally)

    def record(self, caller: Caller, completion: ChatCompletion) -> None:
        self._tallies[(key_digest(caller.api_key), tenant_name(caller), completion.model or "unknown")].add(
            completion
        )

    def snapshot(self, scope: UsageScope = EVERYTHING) -> dict[str, object]:
        total = Tally()
        by_model: dict[str, Tally] = defaultdict(Tally)
        by_tenant: dict[str, Tally] = defaultdict(Tally)
        for (digest, tenant, model), tally in self._tallies.items():
            if scope.covers(digest, tenant):
                for bucket in (total, by_model[model], by_tenant[tenant]):
                    bucket.merge(tally)
        return {
            "total": asdict(total),
            "by_model": {model: asdict(tally) for model, tally in sorted(by_model.items())},
            "by_tenant": {tenant: asdict(tally) for tenant, tally in sorted(by_tenant.items())},
        }

    def as_json(self, scope: UsageScope = EVERYTHING) -> str:
        return json.dumps(self.snapshot(scope), indent=2)

    def summary(self) -> str:
        snapshot = self.snapshot()
        total = Tally(**snapshot["total"])  # type: ignore[arg-type]
        by_model: dict[str, dict[str, int]] = snapshot["by_model"]  # type: ignore[assignment]
        models = ", ".join(f"{model} {tally['calls']}" for model, tally in by_model.items())
        return (
            f"{total.calls} chat calls, {total.prompt_tokens} + {total.completion_tokens} tokens, "
            f"${total.cost_usd:.6f}, {total.credits:.6f} credits"
            + (f" ({total.credits_unknown} calls without credits)" if total.credits_unknown else "")
            + (f"; by model: {models}" if models else "")
        )
