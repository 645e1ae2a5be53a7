"""Who may use the server over HTTP, and as whom its calls go upstream.

Two kinds of bearer token, which can be used together:
- tokens the operator configures (`NAIVE_AUTH_TOKENS`), each optionally pinned to a Naive user
  and project: every call made with it is a per-tenant call for that user, and a client cannot
  name another; calls use the server's own `NAIVE_API_KEY`;
- with `NAIVE_CLIENT_KEYS`, a client's own Naive API key as its bearer token: the server uses
  that key upstream for that client's calls only, so a shared deployment needs no shared key.

Tokens are kept by their SHA-256 digest and never logged; an `AccessToken`'s `client_id` names
the token by a short digest prefix.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from mcp.server.auth.provider import AccessToken
from pydantic import BaseModel, ConfigDict

from naive_mcp.caller import TenantId, secret_digest

_NAIVE_KEY = re.compile(r"^nv_(?:sk_(?:live|test)|sess)_[A-Za-z0-9_\-]{4,}$")


class TokenGrant(BaseModel):
    """What one configured token allows: calls pinned to this user and project, if given."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    user_id: TenantId | None = None
    project_id: TenantId | None = None


@dataclass(frozen=True, slots=True)
class Grant:
    """The access one call was made with. The empty grant: stdio, or HTTP without auth."""

    api_key: str | None = None  # the client's own Naive key, in client-keys mode
    user_id: str | None = None  # pinned: the client cannot call as another user
    project_id: str | None = None


class AccessControl:
    """The server's `TokenVerifier`, and the grant behind each verified token."""

    def __init__(self, tokens: Mapping[str, TokenGrant], *, client_keys: bool) -> None:
        self._tokens = {secret_digest(token): grant for token, grant in tokens.items()}
        self._client_keys = client_keys

    @property
    def enabled(self) -> bool:
        return bool(self._tokens) or self._client_keys

    async def verify_token(self, token: str) -> AccessToken | None:
        digest = secret_digest(token)
        if digest in self._tokens:
            return AccessToken(token=token, client_id=f"token-{digest[:8]}", scopes=[])
        if self._client_keys and _NAIVE_KEY.match(token):
            return AccessToken(token=token, client_id=f"naive-key-{digest[:8]}", scopes=[])
        return None

    def grant(self, access: AccessToken | None) -> Grant:
        """The grant of a verified token; the empty grant when the call was not authenticated."""
        if access is None:
            return Grant()
        pinned = self._tokens.get(secret_digest(access.token))
        if pinned is not None:
            return Grant(user_id=pinned.user_id, project_id=pinned.project_id)
        return Grant(api_key=access.token)
