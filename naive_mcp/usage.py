"""The usage ledger as a reader sees it: calls, tokens, USD and credits, in all, per model, per
tenant and per outcome; for all time (the top level), today and this month (UTC). `total`,
`by_model` and `by_tenant` count the calls that were sent upstream, whatever became of them;
`by_outcome` also counts those a cap refused.

Read from the store, so every process and replica on one store shows the same figures. Served as
the MCP resource `naive://usage`, and written to the log when the server stops.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from dataclasses import asdict
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from naive_mcp.caller import OWN_TENANT
from naive_mcp.store import EVERYTHING, Tally, UsageRow, UsageScope

if TYPE_CHECKING:
    from naive_mcp.store.store import Store

USAGE_URI = "naive://usage"


def _figures(rows: list[UsageRow]) -> dict[str, object]:
    total = Tally()
    by_model: dict[str, Tally] = defaultdict(Tally)
    by_tenant: dict[str, Tally] = defaultdict(Tally)
    by_outcome: dict[str, Tally] = defaultdict(Tally)
    for row in rows:
        by_outcome[row.outcome].add(row.tally)
        if row.outcome == "refused":  # never sent: only counted as refused
            continue
        tenant = row.user_id or OWN_TENANT
        for bucket in (total, by_model[row.model], by_tenant[tenant]):
            bucket.add(row.tally)
    return {
        "total": asdict(total),
        "by_model": {model: asdict(tally) for model, tally in sorted(by_model.items())},
        "by_tenant": {tenant: asdict(tally) for tenant, tally in sorted(by_tenant.items())},
        "by_outcome": {outcome: asdict(tally) for outcome, tally in sorted(by_outcome.items())},
    }


async def usage_snapshot(store: Store, scope: UsageScope = EVERYTHING) -> dict[str, object]:
    now = datetime.fromtimestamp(time.time(), UTC)
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    month = day.replace(day=1)
    return {
        **_figures(await store.usage(scope)),
        "today": {"since": day.isoformat(), **_figures(await store.usage(scope, since=day.timestamp()))},
        "this_month": {
            "since": month.isoformat(),
            **_figures(await store.usage(scope, since=month.timestamp())),
        },
        "store": store.location.kind,
    }


async def usage_json(store: Store, scope: UsageScope = EVERYTHING) -> str:
    return json.dumps(await usage_snapshot(store, scope), indent=2)


async def usage_summary(store: Store) -> str:
    """One log line: all time, through this store."""
    figures = _figures(await store.usage(EVERYTHING))
    total = Tally(**figures["total"])  # type: ignore[arg-type]
    by_model: dict[str, dict[str, int]] = figures["by_model"]  # type: ignore[assignment]
    models = ", ".join(f"{model} {tally['calls']}" for model, tally in by_model.items())
    return (
        f"{total.calls} chat calls, {total.prompt_tokens} + {total.completion_tokens} tokens, "
        f"${total.cost_usd:.6f}, {total.credits:.6f} credits"
        + (f" ({total.credits_unknown} calls without credits)" if total.credits_unknown else "")
        + (f"; by model: {models}" if models else "")
        + f" (all time, store {store.location.shown})"
    )
