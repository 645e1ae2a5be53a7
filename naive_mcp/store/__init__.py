"""The state that outlives a process and is shared by every process on one store: caps and their
reservations, the ledger, the learned credits-per-USD rate, balances, leases, cancels, threads, jobs.

`NAIVE_STORE` chooses it (`location.py`); `store.Store` is its one interface, opened through
`engine.py`; the values it takes and gives are in `records.py`. Nothing here knows MCP or the
upstream. This package's front imports no SQLAlchemy: `naive_mcp.store.store` does, when a
server first opens its store.
"""

from naive_mcp.store.location import StoreLocation
from naive_mcp.store.records import (
    EVERYTHING,
    OUTCOMES,
    CallRecord,
    CallResult,
    CapRow,
    Exactly,
    Figures,
    JobLimits,
    JobRecord,
    JobStatus,
    OpenHold,
    Outcome,
    Tally,
    ThreadLimits,
    ThreadRecord,
    Turn,
    UsageRow,
    UsageScope,
    owned_by,
)

__all__ = [
    "EVERYTHING",
    "OUTCOMES",
    "CallRecord",
    "CallResult",
    "CapRow",
    "Exactly",
    "Figures",
    "JobLimits",
    "JobRecord",
    "JobStatus",
    "OpenHold",
    "Outcome",
    "StoreLocation",
    "Tally",
    "ThreadLimits",
    "ThreadRecord",
    "Turn",
    "UsageRow",
    "UsageScope",
    "owned_by",
]
