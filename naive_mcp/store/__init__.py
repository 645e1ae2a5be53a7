"""The state that outlives a process and is shared by every process on one store: caps and their
reservations, the ledger, the learned credits-per-USD rate, balances, leases, cancels.

`NAIVE_STORE` chooses it (`engine.py`); `Store` is its one interface (`store.py`); the values it
takes and gives are in `records.py`. Nothing here knows MCP or the upstream.
"""

from naive_mcp.store.engine import SCHEMA_REVISION, StoreLocation
from naive_mcp.store.records import (
    EVERYTHING,
    OUTCOMES,
    CallRecord,
    CallResult,
    CapRow,
    Figures,
    OpenHold,
    Outcome,
    Tally,
    UsageRow,
    UsageScope,
)
from naive_mcp.store.store import Store

__all__ = [
    "EVERYTHING",
    "OUTCOMES",
    "SCHEMA_REVISION",
    "CallRecord",
    "CallResult",
    "CapRow",
    "Figures",
    "OpenHold",
    "Outcome",
    "Store",
    "StoreLocation",
    "Tally",
    "UsageRow",
    "UsageScope",
]
