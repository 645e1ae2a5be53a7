"""Who may reach an HTTP server: loopback only unless clients authenticate, and the names it is
reached by (for DNS-rebinding protection). Light on imports: the supervisor of `--workers`
checks it before any worker starts, without loading the MCP SDK."""

from __future__ import annotations

import ipaddress

from naive_mcp.errors import ConfigurationError
from naive_mcp.settings import Settings


def check_exposure(settings: Settings) -> None:
    """Refuse to listen beyond loopback without authentication, or without knowing its names.
    Client keys count as authentication: a key opens nothing until the upstream has accepted it."""
    if is_loopback(settings.host):
        return
    if not settings.auth_tokens and not settings.client_keys:
        raise ConfigurationError(
            f"refusing to listen on {settings.host} without authentication: anyone who can reach it could "
            "spend the server's credits. Set NAIVE_AUTH_TOKENS, or NAIVE_CLIENT_KEYS=true (each client "
            "then sends its own Naive key, checked with the upstream), or listen on 127.0.0.1 (behind a "
            "reverse proxy)."
        )
    if is_wildcard(settings.host) and not settings.allowed_hosts:
        raise ConfigurationError(
            f"listening on {settings.host} needs NAIVE_ALLOWED_HOSTS: the host names clients use to reach "
            "this server (DNS-rebinding protection rejects any other Host header)."
        )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_wildcard(host: str) -> bool:
    return host in ("0.0.0.0", "::", "")


def url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
