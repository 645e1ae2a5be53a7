"""The usage ledger: what this server has spent, per model and per tenant.

Read as the MCP resource `naive://usage`, and written to the log when the server stops.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import asdict, dataclass

from naive_mcp.budget import tenant_name
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


class UsageLedger:
    def __init__(self) -> None:
        self._total = Tally()
        self._by_model: dict[str, Tally] = defaultdict(Tally)
        self._by_tenant: dict[str, Tally] = defaultdict(Tally)

    def record(self, caller: Caller, completion: ChatCompletion) -> None:
        self._total.add(completion)
        self._by_model[completion.model or "unknown"].add(completion)
        self._by_tenant[tenant_name(caller)].add(completion)

    def snapshot(self) -> dict[str, object]:
        return {
            "total": asdict(self._total),
            "by_model": {model: asdict(tally) for model, tally in sorted(self._by_model.items())},
            "by_tenant": {tenant: asdict(tally) for tenant, tally in sorted(self._by_tenant.items())},
        }

    def as_json(self) -> str:
        return json.dumps(self.snapshot(), indent=2)

    def summary(self) -> str:
        total = self._total
        models = ", ".join(f"{model} {tally.calls}" for model, tally in sorted(self._by_model.items()))
        return (
            f"{total.calls} chat calls, {total.prompt_tokens} + {total.completion_tokens} tokens, "
            f"${total.cost_usd:.6f}, {total.credits:.6f} credits"
            + (f" ({total.credits_unknown} calls without credits)" if total.credits_unknown else "")
            + (f"; by model: {models}" if models else "")
        )
