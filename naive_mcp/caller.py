"""Who a call to the upstream is made as: the API key it uses, and the Naive user and project."""

from __future__ import annotations

from dataclasses import dataclass, field
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
class Caller:
    """The identity of one upstream call. No user means the API key's own subject.

    Hashable, so it keys per-caller caches; the key never shows in its repr.
    """

    api_key: str = field(repr=False)
    user_id: str | None = None
    project_id: str | None = None

    def headers(self) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.api_key}"}
        if self.user_id is not None:
            headers["X-Naive-User-Id"] = self.user_id
        if self.project_id is not None:
            headers["X-Naive-Project-Id"] = self.project_id
        return headers
