"""Who a call to the upstream is made as: the API key it uses, and the Naive user and project."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Annotated

from pydantic import WithJsonSchema

from naive_mcp.validation import matching

# Sent as an HTTP header, so no spaces or control characters; Naive's ids look like `usr_…`.
# Published as a string (every agent reads tools/list): the pattern is checked here, and a
# mismatch is explained in words.
TenantId = Annotated[
    str,
    matching(
        r"^[A-Za-z0-9][A-Za-z0-9_.:@-]*$",
        "a Naive id such as usr_123: letters, digits and _ . : @ -, no spaces",
        min_length=1,
        max_length=128,
    ),
    WithJsonSchema({"type": "string"}),
]


# How usage and refusals name calls made for the key's own subject (no user).
OWN_TENANT = "(the key's own)"


def own_subject(user_id: str | None) -> bool:
    """Whether a user id names the API key's own subject: none, `default` or `me`."""
    return user_id in (None, "default", "me")


def secret_digest(secret: str) -> str:
    """A name for a key or token that is not the secret (SHA-256, hex)."""
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Caller:
    """The identity of one upstream call. No user means the API key's own subject.

    Hashable, so it keys per-caller caches; the key never shows in its repr.
    """

    api_key: str = field(repr=False)
    user_id: str | None = None
    project_id: str | None = None

    @property
    def key_digest(self) -> str:
        return secret_digest(self.api_key)

    @property
    def tenant(self) -> str:
        """The Naive user a call is for; `default` and `me` are the key's own subject, as no user is."""
        return OWN_TENANT if self.user_id is None or own_subject(self.user_id) else self.user_id

    @property
    def user(self) -> str | None:
        """The user as the ledger keeps it: None for the key's own subject."""
        return None if self.tenant == OWN_TENANT else self.user_id

    def headers(self) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.api_key}"}
        if self.user_id is not None:
            headers["X-Naive-User-Id"] = self.user_id
        if self.project_id is not None:
            headers["X-Naive-Project-Id"] = self.project_id
        return headers
