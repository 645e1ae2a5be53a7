"""Per-tenant calls: which Naive user (and project) a call is made for."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from naive_mcp.validation import matching

# Sent as an HTTP header, so no spaces or control characters; Naive's ids look like `usr_…`.
TenantId = Annotated[
    str,
    matching(
        r"^[A-Za-z0-9][A-Za-z0-9_.:@-]*$",
        "a Naive id such as usr_123: letters, digits and _ . : @ -, no spaces",
        min_length=1,
        max_length=128,
    ),
]


@dataclass(frozen=True, slots=True)
class Tenancy:
    """The subject of a call. Empty means the API key's own subject."""

    user_id: str | None = None
    project_id: str | None = None

    def headers(self) -> dict[str, str]:
        headers: dict[str, str] = {}
        if self.user_id is not None:
            headers["X-Naive-User-Id"] = self.user_id
        if self.project_id is not None:
            headers["X-Naive-Project-Id"] = self.project_id
        return headers
