"""`naive-mcp doctor`: check what a first run needs, one line each, with the fix for each problem.

The settings, the key (present, shaped as the backend's keys are), the upstream (reachable,
answering the API NAIVE_BASE_URL names, taking the key: one free model listing through
`NaiveClient`, and on OpenRouter-style backends `GET /key`), the balance (Naive's typed routes
report it only with a chat answer: the last one the store kept, or that it is not known yet;
OpenRouter-style backends say it on `GET /key`, in USD),
the store (opened, written and read back), and the clients' configs (which exist, which have the
server). Exit 1 if anything is a problem. No secret is printed: every line is redacted.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
from pydantic import ValidationError

from naive_mcp.backend import OPENROUTER_BASE_URL, PROXY_PATH, ApiStyle, Backend
from naive_mcp.caller import Caller, secret_digest
from naive_mcp.cli import sandboxed
from naive_mcp.errors import NaiveError, UpstreamError, UpstreamProtocolError
from naive_mcp.install import CLIENTS, DEFAULT_NAME, KEY_VARIABLE, InstallError, config_path, read_config
from naive_mcp.redaction import Redactor
from naive_mcp.settings import DEFAULT_BASE_URL, Settings
from naive_mcp.store.location import StoreLocation

_KEY_SHAPE = ("nv_sk_live_", "nv_sk_test_")


@dataclass(frozen=True)
class Finding:
    what: str
    fix: str | None = None  # None: all is well

    @property
    def ok(self) -> bool:
        return self.fix is None

    def line(self) -> str:
        return f"ok: {self.what}" if self.ok else f"problem: {self.what} — fix: {self.fix}"


def key_problem(key: str, backend: Backend | None = None) -> str | None:
    """What is wrong with a key's shape, or None if it looks like a key `backend` takes (a Naive
    key, or on OpenRouter's API any key: a compatible gateway has keys of its own shape)."""
    if key.lower().startswith("bearer"):
        return 'it starts with "Bearer": give the key alone'
    if key != key.strip() or any(c.isspace() for c in key):
        return "it has spaces or line breaks in it"
    if key[:1] in "\"'":
        return "it is in quotes: give the key alone"
    if backend is not None and backend.style is ApiStyle.OPENROUTER:
        return None
    if key.startswith("sk-or-"):
        return (
            "it is an OpenRouter key (sk-or-…), not a Naive key: for OpenRouter itself, set "
            f"OPENROUTER_API_KEY (or NAIVE_BASE_URL={OPENROUTER_BASE_URL})"
        )
    if key.startswith("nv_sess_"):
        return "it is a per-user session token (nv_sess_…), which expires: a server needs an API key"
    if not key.startswith(_KEY_SHAPE) or len(key) <= len("nv_sk_test_"):
        return "it does not look like a Naive API key (nv_sk_live_… or nv_sk_test_…)"
    return None


def check_key(settings: Settings, sandbox: bool, entries_with_key: list[str]) -> Finding:
    key = settings.api_key.get_secret_value() if settings.api_key is not None else None
    if key is None:
        if sandbox:
            return Finding("key: none needed with --sandbox (it takes a test key of its own)")
        if entries_with_key:
            titles = ", ".join(CLIENTS[name].title for name in entries_with_key)
            return Finding(
                f"key: {KEY_VARIABLE} is not set in this environment (the entry of {titles} sets one)",
                f"check the one a client uses with `naive-mcp doctor --client {entries_with_key[0]}`, or "
                f"export {KEY_VARIABLE}=nv_sk_live_… here",
            )
        return Finding(
            f"key: {KEY_VARIABLE} is not set in this environment",
            f"export {KEY_VARIABLE}=nv_sk_live_… (your Naive API key), or try everything offline with "
            "--sandbox",
        )
    problem = key_problem(key, settings.backend)
    if problem is not None:
        return Finding(
            f"key: {KEY_VARIABLE} is set, but {problem}",
            f"set {KEY_VARIABLE} to the key exactly as Naive issued it: nv_sk_live_… (or nv_sk_test_…)",
        )
    shown = key[: len("nv_sk_live_")] if key.startswith("nv_sk_") else key[: len("sk-or-v1-")]
    return Finding(f"key: {KEY_VARIABLE} is set and well-formed ({shown}…)")


async def check_upstream(settings: Settings) -> tuple[Finding, float | None]:
    """One model listing (free): reachable, speaking the API NAIVE_BASE_URL names, taking the key;
    and where the backend has `GET /key` (which is also what proves the key there: OpenRouter
    lists models to anyone), the key's balance in USD."""
    from naive_mcp.client import NaiveClient

    quick = settings.model_copy(
        update={"max_retries": 0, "connect_timeout": min(settings.connect_timeout, 10)}
    )
    client = NaiveClient(quick)
    backend = client.backend
    url, api = settings.shown_base_url, backend.name
    base_fix = (
        f"set NAIVE_BASE_URL to the API's base — Naive's root ({DEFAULT_BASE_URL}, no path), its proxy "
        f"({DEFAULT_BASE_URL}{PROXY_PATH}) or OpenRouter's ({OPENROUTER_BASE_URL}) — or unset it"
    )
    key = settings.api_key.get_secret_value() if settings.api_key is not None else ""
    balance = None
    try:
        models = await client.models(Caller(api_key=key or "none"))
        if key and backend.has("key"):
            balance = await client.balance(Caller(api_key=key))
    except UpstreamError as error:
        if error.status == 401 and not key:
            return Finding(f"upstream: {url} answers {api} (it asks for a key, as it should)"), None
        if error.status in (401, 403):
            return Finding(
                f"upstream: {url} answers {api} but refused the key (HTTP {error.status}, {error.kind})",
                error.next_step
                if error.status == 403
                else f"set {KEY_VARIABLE} to a valid key that has not been revoked",
            ), None
        if error.status == 404:
            where = f"GET {url}{backend.path('models')}"
            return Finding(f"upstream: {url} answers, but not {api} (HTTP 404 for {where})", base_fix), None
        return Finding(f"upstream: {url} answered HTTP {error.status} ({error.kind})", error.next_step), None
    except UpstreamProtocolError as error:
        return Finding(f"upstream: {url} answers, but not {api} ({error.message})", base_fix), None
    except NaiveError as error:  # unreachable, timed out
        return Finding(
            f"upstream: {error.message}",
            f"check that NAIVE_BASE_URL ({url}) is up and right (unset, it is {DEFAULT_BASE_URL}) and "
            "the network (behind a proxy, set HTTPS_PROXY)",
        ), None
    finally:
        await client.aclose()
    if not key:
        return Finding(f"upstream: {url} answers {api} without a key ({len(models)} models)"), None
    return Finding(f"upstream: {url} answers {api} and takes the key ({len(models)} models listed)"), balance


async def check_store(settings: Settings) -> tuple[Finding, tuple[float, float] | None]:
    """Open the store, write and read back a lease of this process; and the key's last balance."""
    try:
        location = StoreLocation.parse(settings.store)
    except NaiveError as error:
        return Finding(
            f"store: {error.message}", "set NAIVE_STORE to a file path, `memory` or postgresql://…"
        ), None
    from naive_mcp.store.store import Store

    owner = f"naive-mcp-doctor-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        store = await Store.open(location)
        try:
            await store.renew_lease(owner, 1.0)
            await store.drop_lease(owner)
            key = settings.api_key.get_secret_value() if settings.api_key is not None else None
            balance = await store.balance(secret_digest(key)) if key else None
        finally:
            await store.aclose()
    except Exception as error:  # whatever the driver raises: the reason, redacted, and the fix
        reason = error.message if isinstance(error, NaiveError) else _reason(error)
        if location.kind == "postgresql":
            fix = "check NAIVE_STORE's host, database, user and password, and that PostgreSQL accepts them"
        else:
            fix = (
                f"make the directory {Path(location.shown).parent} exist and be writable by this user, "
                "or set NAIVE_STORE to a file path that is (or `memory`, to keep nothing between runs)"
            )
        return Finding(f"store: {location.shown} cannot be opened and written ({reason})", fix), None
    if location.kind == "memory":
        return Finding("store: memory (writable; caps and usage last as long as the process)"), balance
    return Finding(f"store: {location.shown} is writable"), balance


def check_balance(
    settings: Settings, balance: tuple[float, float] | None, usd_balance: float | None = None
) -> Finding:
    """The balance: on Naive's typed routes the last one the store kept; elsewhere what `GET /key`
    (or `/credits`) said just now, in USD."""
    if settings.api_key is None:
        return Finding("balance: not known without a key")
    if not settings.backend.typed:
        if usd_balance is None:
            return Finding(
                f"balance: {settings.backend.name} gives none for this key (no limit on GET /key, and "
                "GET /credits not readable with it)",
                None
                if settings.min_usd_remaining is None
                else "give the key a credit limit upstream, or "
                "unset NAIVE_MIN_USD_REMAINING and cap spending with NAIVE_MAX_TOTAL_USD",
            )
        what = f"balance: ${usd_balance:g} left on this key (GET /key, just now)"
        return _against_floor(what, usd_balance, settings.min_usd_remaining, "NAIVE_MIN_USD_REMAINING")
    if balance is None:
        return Finding(
            "balance: not known yet: the Naive API reports it (credits_remaining) only with a chat answer; "
            "after a first call the store keeps it and this shows it"
        )
    credits, seen_at = balance
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(seen_at))
    what = f"balance: {credits:g} credits, as last reported ({when})"
    return _against_floor(what, credits, settings.min_credits_remaining, "NAIVE_MIN_CREDITS_REMAINING")


def _against_floor(what: str, left: float, floor: float | None, setting: str) -> Finding:
    if left <= 0:
        return Finding(what, "top up credits (calls are refused with insufficient_credits until then)")
    if floor is not None and left < floor:
        return Finding(
            f"{what}, below {setting} ({floor:g}): chat calls will be refused",
            f"top up credits, or lower {setting}",
        )
    return Finding(what)


def check_clients(name: str) -> tuple[list[Finding], list[str]]:
    """A line per client, a problem if none has the server; and the clients whose entry sets a key."""
    findings: list[Finding] = []
    with_key: list[str] = []
    installed = 0
    for client in CLIENTS.values():
        path = config_path(client.name)
        label = f"{client.title}: {path}"
        try:
            config = read_config(path)
        except InstallError as error:
            findings.append(
                Finding(f"{client.title}: {error}", "fix the file by hand (install refuses to edit it)")
            )
            continue
        if config is None:
            findings.append(Finding(f"{label} not found (`naive-mcp install {client.name}` creates it)"))
            continue
        entry = (config.get("mcpServers") or {}).get(name)
        if not isinstance(entry, dict):
            findings.append(
                Finding(f"{label} has no {name!r} server (`naive-mcp install {client.name}` adds it)")
            )
            continue
        installed += 1
        env: dict[str, Any] = entry.get("env") if isinstance(entry.get("env"), dict) else {}  # type: ignore[assignment]
        key = env.get(KEY_VARIABLE)
        if isinstance(key, str) and key:
            with_key.append(client.name)
        command = str(entry.get("command", ""))
        args = entry.get("args") if isinstance(entry.get("args"), list) else []
        runs = " ".join([command, *map(str, args or [])])
        if (
            not (Path(command).is_absolute() and os.access(command, os.X_OK))
            and shutil.which(command) is None
        ):
            findings.append(
                Finding(
                    f"{label}: {name!r} runs {command or '(no command)'}, which is not there",
                    f"naive-mcp install {client.name} (writes this installation's path)",
                )
            )
        elif isinstance(key, str) and key and key_problem(key) is not None:
            findings.append(
                Finding(
                    f"{label}: {name!r} sets {KEY_VARIABLE}, but {key_problem(key)}",
                    f"{KEY_VARIABLE}=nv_sk_live_… naive-mcp install {client.name}",
                )
            )
        else:
            keyed = "key set" if key else ("sandbox" if "--sandbox" in (args or []) else "no key")
            findings.append(Finding(f"{label} has {name!r} ({runs}; {keyed})"))
    if not installed:
        findings.append(
            Finding(
                f"clients: no client's config has the {name!r} server",
                "naive-mcp install claude-desktop (or claude-code, or cursor); restart the client",
            )
        )
    return findings, with_key


def load_settings() -> tuple[Settings, list[Finding]]:
    """The settings from the environment; a bad one is a problem, and its default is used meanwhile."""
    try:
        return Settings(), []
    except ValidationError as exc:
        problems = exc.errors(include_input=False)
    findings = [
        Finding(
            f"setting NAIVE_{'.'.join(map(str, p['loc'])).upper()}: {p['msg']}",
            f"correct or unset NAIVE_{str(p['loc'][0]).upper()} (`naive-mcp --help` describes it)",
        )
        for p in problems
    ]
    bad = {str(p["loc"][0]) for p in problems if p["loc"]}
    defaults = {
        field: Settings.model_fields[field].get_default(call_default_factory=True)
        for field in bad
        if field in Settings.model_fields
    }
    return Settings(**defaults), findings


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="naive-mcp doctor",
        description="Check the key, the upstream, the balance, the store and the clients' configs.",
    )
    parser.add_argument("--sandbox", action="store_true", help="check against the built-in sandbox upstream")
    parser.add_argument(
        "--name", default=DEFAULT_NAME, help=f"the server's name in client configs ({DEFAULT_NAME})"
    )
    parser.add_argument(
        "--client",
        choices=sorted(CLIENTS),
        help="check with the environment and flags that client's entry gives the server (its key included)",
    )
    args = parser.parse_args(argv)
    sandbox = args.sandbox
    if args.client is not None:
        entry = _entry(args.client, args.name)
        if entry is None:
            sys.stdout.write(
                f"problem: {CLIENTS[args.client].title}'s config has no {args.name!r} server — fix: "
                f"naive-mcp install {args.client}\n"
            )
            return 1
        env = entry.get("env")
        os.environ.update({str(k): str(v) for k, v in env.items()} if isinstance(env, dict) else {})
        entry_args = entry.get("args")
        sandbox = sandbox or (isinstance(entry_args, list) and "--sandbox" in entry_args)
    try:
        settings, findings = load_settings()
    except ValidationError:  # pragma: no cover - defaults are valid
        sys.stdout.write(
            "problem: the settings cannot be read — fix: unset the NAIVE_ variables one by one\n"
        )
        return 1
    client_findings, entries_with_key = check_clients(args.name)
    secrets = settings.secrets()
    findings.append(check_key(settings, sandbox, entries_with_key))
    # `--sandbox` here, or in the environment or the entry: the CLI's own sandbox, in its API style.
    with sandboxed(settings.model_copy(update={"sandbox": sandbox or settings.sandbox})) as checked:
        upstream_finding, usd_balance = anyio.run(check_upstream, checked)
        findings.append(upstream_finding)
        store_finding, balance = anyio.run(check_store, checked)
    findings += [check_balance(checked, balance, usd_balance), store_finding, *client_findings]
    redact = Redactor(secrets)
    for finding in findings:
        sys.stdout.write(redact(finding.line()) + "\n")
    problems = sum(not finding.ok for finding in findings)
    sys.stdout.write(f"{problems} problem(s)\n" if problems else "all good\n")
    return 1 if problems else 0


def _entry(client: str, name: str) -> dict[str, Any] | None:
    try:
        config = read_config(config_path(client))
    except InstallError:
        return None
    entry = ((config or {}).get("mcpServers") or {}).get(name)
    return entry if isinstance(entry, dict) else None


def _reason(error: BaseException) -> str:
    text = str(getattr(error, "orig", None) or error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
