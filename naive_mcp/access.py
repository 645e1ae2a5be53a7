"""Who may use the server over HTTP, and as whom its calls go upstream.

Two kinds of bearer token, which can be used together:
- tokens the operator configures (`NAIVE_AUTH_TOKENS`). Calls use the server's own
  `NAIVE_API_KEY`, and each tenant field (`user_id`, `project_id`) of a token's grant is one of:
  pinned (every call is sent with that id, a call naming another is refused, and `naive://usage`
  shows only calls with it); named by the client (listed in the grant's `may_name`: any id the
  client gives, else the server's default); or fixed (neither: every call gets the server's
  default, `NAIVE_DEFAULT_USER_ID` / `NAIVE_DEFAULT_PROJECT_ID` or none, and a call naming another
  id is refused). A plain list of tokens pins nothing and lets the client name nothing;
- with `NAIVE_CLIENT_KEYS`, a client's own Naive API key as its bearer token, accepted once the
  upstream has accepted it (`keycheck.py`): the server uses that key upstream for that client's
  calls only, and the client names tenants as it likes (the upstream decides what its key may do).

Stdio and HTTP without auth are the operator's own: any tenant, all usage.

Tokens are kept by their SHA-256 digest and never logged; an `AccessToken`'s `client_id` names
the token by its full digest (the SDK ties a session to it, so a shorter name could be forged).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, model_validator

from naive_mcp.caller import TenantId, own_subject, secret_digest
from naive_mcp.errors import ArgumentError
from naive_mcp.keycheck import KeyCheck, KeyRefused
from naive_mcp.store import Exactly

if TYPE_CHECKING:
    from mcp.server.auth.provider import AccessToken

# Bounded, so that no header of any size is ever hashed or checked upstream as a key.
_NAIVE_KEY = re.compile(r"^nv_(?:sk_(?:live|test)|sess)_[A-Za-z0-9_\-]{4,200}$")
# An OpenRouter-compatible API's keys: OpenRouter's are sk-or-v1-…, a gateway's may be any
# token; only what could be a key (no spaces, a sane length) is sent upstream to be checked.
_ANY_KEY = re.compile(r"^[A-Za-z0-9_\-.:]{8,256}$")

TenantField = Literal["user_id", "project_id"]
TENANT_FIELDS: frozenset[TenantField] = frozenset(("user_id", "project_id"))
_DEFAULT_SETTING: dict[TenantField, str] = {
    "user_id": "NAIVE_DEFAULT_USER_ID",
    "project_id": "NAIVE_DEFAULT_PROJECT_ID",
}


class TokenGrant(BaseModel):
    """What one configured token allows: the tenant fields it pins, and those its clients may name."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    user_id: TenantId | None = None
    project_id: TenantId | None = None
    may_name: frozenset[TenantField] = frozenset()

    @model_validator(mode="after")
    def _pinned_or_named(self) -> TokenGrant:
        for field in sorted(self.may_name):
            if getattr(self, field) is not None:
                raise ValueError(
                    f"{field} is both pinned and in may_name: a pinned {field} cannot be named by the "
                    f'client; drop "{field}" from may_name, or the pin'
                )
        return self


@dataclass(frozen=True, slots=True)
class Grant:
    """The access one call was made with. The default: stdio or HTTP without auth, the operator's own."""

    api_key: str | None = None  # the client's own Naive key, in client-keys mode
    user_id: str | None = None  # pinned: the client cannot call as another user
    project_id: str | None = None
    may_name: frozenset[TenantField] = TENANT_FIELDS  # the unpinned fields the client may choose
    local: bool = True  # not authenticated: the operator, who sees every key's usage

    @property
    def shares_the_server_key(self) -> bool:
        """A configured token: its calls use the server's key, as other tokens' do."""
        return not self.local and self.api_key is None

    def pin(self, field: TenantField) -> str | None:
        return self.user_id if field == "user_id" else self.project_id

    def tenant(self, field: TenantField, asked: str | None, default: str | None) -> str | None:
        """The id a call is sent with for `field`: the pin, else the client's (if it may name
        one), else the server's default. A call asking for another than it may is refused here,
        before anything is sent."""
        pinned = self.pin(field)
        noun = field.removesuffix("_id")
        if pinned is not None:
            if asked is not None and not _same(field, asked, pinned):
                raise _refused(field, f"is pinned to another Naive {noun}; leave {field} out")
            return pinned
        if asked is None:
            return default
        if field in self.may_name or _same(field, asked, default):
            return asked
        if default is not None:
            whose = f"the server's default ({_DEFAULT_SETTING[field]})"
        else:
            whose = "the API key's own subject" if field == "user_id" else "no project"
        raise _refused(
            field,
            f"may not choose the Naive {noun} (its calls go as {whose}); leave {field} out, or ask "
            f'the operator to pin this token to that {noun} or to add "{field}" to its "may_name" '
            "in NAIVE_AUTH_TOKENS",
        )

    def sees(self, field: TenantField, default: str | None) -> Exactly | None:
        """Which id of `field` the usage this grant may read is limited to (None: any): that of
        the calls it could have made itself."""
        pinned = self.pin(field)
        if pinned is None and field in self.may_name:
            return None
        value = pinned if pinned is not None else default
        return Exactly(None if field == "user_id" and own_subject(value) else value)


class AccessControl:
    """The server's `TokenVerifier`, and the grant behind each verified token."""

    def __init__(
        self, tokens: Mapping[str, TokenGrant], *, client_keys: KeyCheck | None, naive_keys: bool = True
    ) -> None:
        """`naive_keys`: client keys are Naive's (`nv_sk_…`), as on Naive's routes and proxy;
        else any key an OpenRouter-compatible API may issue."""
        self._tokens = {secret_digest(token): grant for token, grant in tokens.items()}
        self._client_keys = client_keys
        self._key_shape = _NAIVE_KEY if naive_keys else _ANY_KEY
        self._key_kind = "a Naive key (nv_sk_live_…/nv_sk_test_…)" if naive_keys else "an API key"
        self._refuser, self._valid_key = (
            ("Naive", "a valid Naive key") if naive_keys else ("the upstream", "a valid key")
        )

    @property
    def enabled(self) -> bool:
        return bool(self._tokens) or self._client_keys is not None

    async def verify_token(self, token: str) -> AccessToken | None:
        """A configured token, or (in client-keys mode) a Naive key the upstream accepts. Raises
        `KeyCheckUnavailable` when a key cannot be checked now (answered 503), and in client-keys
        mode `KeyRefused` for a token refused, with why (answered 401)."""
        # Imported here: settings read TokenGrant from this module, and a CLI command or the
        # doctor, which never verify a token, need not load the MCP SDK for it.
        from mcp.server.auth.provider import AccessToken

        digest = secret_digest(token)
        if digest in self._tokens:
            return AccessToken(token=token, client_id=f"token-{digest}", scopes=[])
        if self._client_keys is None:
            return None
        # Client-keys mode: say why, so that whoever pasted the wrong thing can tell (the SDK's own
        # 401 says only "Authentication required").
        nor_token = ", nor a token of NAIVE_AUTH_TOKENS" if self._tokens else ""
        if not self._key_shape.match(token):
            raise KeyRefused(f"not {self._key_kind}{nor_token}")
        if await self._client_keys.accepts(token):
            return AccessToken(token=token, client_id=f"naive-key-{digest}", scopes=[])
        raise KeyRefused(
            f"{self._refuser} refused this key (revoked or invalid){nor_token}: send {self._valid_key}"
        )

    def grant(self, access: AccessToken | None) -> Grant:
        """The grant of a verified token; the operator's own when the call was not authenticated."""
        if access is None:
            return Grant()
        configured = self._tokens.get(secret_digest(access.token))
        if configured is not None:
            return Grant(
                user_id=configured.user_id,
                project_id=configured.project_id,
                may_name=configured.may_name,
                local=False,
            )
        return Grant(api_key=access.token, local=False)


def _same(field: TenantField, one: str | None, other: str | None) -> bool:
    if field == "user_id" and own_subject(one) and own_subject(other):
        return True  # none, `default` and `me` are all the key's own subject
    return one == other


def _refused(field: TenantField, why: str) -> ArgumentError:
    return ArgumentError(f"Invalid arguments:\n- {field}: this connection's token {why}")
