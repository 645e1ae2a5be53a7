"""The server's one settings object: environment first (what MCP clients' configs set), flags mirror it."""

from __future__ import annotations

import json
import re
from pathlib import PurePath
from typing import Annotated, Any, Literal
from urllib.parse import unquote, urlsplit, urlunsplit

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    CliSuppress,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from naive_mcp.access import TokenGrant
from naive_mcp.backend import OPENROUTER_BASE_URL, Backend, openrouter_base
from naive_mcp.caller import TenantId
from naive_mcp.errors import NaiveError
from naive_mcp.event_loop import EventLoop
from naive_mcp.store.location import StoreLocation
from naive_mcp.validation import plain_message

DEFAULT_BASE_URL = "https://api.usenaive.ai"
# The key `--sandbox` uses when none is set: the sandbox accepts any well-formed test key.
SANDBOX_API_KEY = "nv_sk_test_sandbox"
# The key `--sandbox` uses on its OpenRouter-style routes (`--api-style openrouter`).
SANDBOX_OPENROUTER_KEY = "sk-or-v1-sandbox"
SANDBOX_DEFAULT_MODEL = "anthropic/claude-sonnet-4.6"

# Each worker is a whole server process (~100 MB, its own upstream and store connections); past
# the machine's cores another adds memory and contention, not speed, and a typo's 1000 would
# start a thousand servers.
MAX_WORKERS = 64

# A list setting, read as JSON or as a comma-separated list (pydantic-settings would only take JSON).
ListSetting = Annotated[list[str], NoDecode]


class Settings(BaseSettings):
    """naive-mcp settings. Every field reads `NAIVE_<FIELD>` from the environment."""

    model_config = SettingsConfigDict(
        env_prefix="NAIVE_",
        extra="ignore",
        frozen=True,
        cli_prog_name="naive-mcp",
        cli_kebab_case=True,
        cli_implicit_flags=True,
        cli_hide_none_type=True,
        cli_avoid_json=True,
    )

    # Environment only: a key on the command line is visible to every user of the machine.
    # Read before api_key, which falls back on it.
    openrouter_api_key: CliSuppress[SecretStr | None] = Field(
        default=None,
        validation_alias="OPENROUTER_API_KEY",
        examples=["sk-or-v1-…"],
        description="OpenRouter API key (OPENROUTER_API_KEY, no NAIVE_ prefix), used when NAIVE_API_KEY "
        "is not set; the base URL then defaults to OpenRouter's. Environment only.",
    )
    api_key: CliSuppress[SecretStr | None] = Field(
        default=None,
        validate_default=True,
        examples=["nv_sk_live_…"],
        description="Naive API key (nv_sk_live_…, nv_sk_test_…), or the key of the API NAIVE_BASE_URL "
        "names. Environment only.",
    )
    base_url: str = Field(
        default=DEFAULT_BASE_URL,
        validate_default=True,
        description="Where the models are: Naive's root (typed routes, the default), Naive's proxy "
        "(https://api.usenaive.ai/v1/proxy/openrouter), or OpenRouter or any OpenRouter-compatible base "
        "(https://openrouter.ai/api/v1). The API style is recognised from the path (NAIVE_API_STYLE).",
    )
    api_style: Literal["auto", "naive", "proxy", "openrouter"] = Field(
        default="auto",
        description="The upstream's API: auto (from NAIVE_BASE_URL: no path is Naive's typed routes, "
        "…/v1/proxy/openrouter Naive's proxy, any other path OpenRouter's API), naive, proxy or openrouter.",
    )
    default_model: str | None = Field(
        default=None,
        examples=["anthropic/claude-sonnet-4.6"],
        description="Model used when a chat call names none, e.g. anthropic/claude-sonnet-4.6.",
    )
    default_user_id: TenantId | None = Field(
        default=None,
        examples=["usr_123"],
        description="Naive user id for calls that name none (sent as X-Naive-User-Id).",
    )
    default_project_id: TenantId | None = Field(
        default=None,
        examples=["prj_123"],
        description="Naive project id for calls that name none (sent as X-Naive-Project-Id).",
    )
    connect_timeout: float = Field(default=10.0, gt=0, description="Seconds to open a connection upstream.")
    first_byte_timeout: float = Field(
        default=120.0, gt=0, description="Seconds from sending a chat to the upstream's first byte."
    )
    read_timeout: float = Field(
        default=600.0,
        gt=0,
        description="Longest silence, in seconds, between two chunks of an answer (models think long).",
    )
    total_timeout: float = Field(
        default=1800.0, gt=0, description="Seconds one chat call may take in all, retries included."
    )
    max_retries: int = Field(
        default=2,
        ge=0,
        le=10,
        description="Retries of a call that failed before any token (429, 5xx, no connection).",
    )
    retry_max_wait: float = Field(
        default=20.0,
        ge=0,
        description="Longest wait before a retry; a longer Retry-After falls back to backoff.",
    )
    max_response_bytes: int = Field(
        default=32 * 1024 * 1024,
        ge=1024,
        description="Largest upstream answer accepted, in bytes: all it makes the server hold counts.",
    )
    max_image_bytes: int = Field(
        default=8 * 1024 * 1024,
        ge=0,
        description="Most bytes (decoded) of images one chat result shows as image blocks; an image past "
        "it is left out and the result says so. 0: none shown.",
    )
    max_stdio_line_bytes: int = Field(
        default=8 * 1024 * 1024,
        ge=1024,
        le=1024**3,
        description="stdio: largest message (one line) a client may send, in bytes; a longer one is dropped.",
    )
    models_cache_ttl: float = Field(
        default=300.0, ge=0, description="Seconds a model listing is reused before it is fetched again."
    )
    generation_wait: float = Field(
        default=5.0,
        ge=0,
        description="Seconds to keep asking for a generation's stats that the upstream does not have yet.",
    )
    progress_interval: float = Field(
        default=0.1, ge=0, description="Least seconds between two progress notifications of a call."
    )
    heartbeat_interval: float = Field(
        default=5.0,
        gt=0,
        le=10,
        description="Seconds of silence after which a call tells the client it is still working.",
    )
    allowed_models: ListSetting = Field(
        default_factory=list,
        description="Model id patterns chat may use, comma-separated or as JSON, e.g. anthropic/*,*:free. "
        "Empty: any.",
        examples=["anthropic/*,openai/*"],
    )
    free_models: ListSetting = Field(
        default_factory=list,
        description="Model id patterns that may be called under a credit cap although the model list "
        "prices them at 0 or not at all, comma-separated or as JSON, e.g. *:free. Empty: none.",
        examples=["*:free"],
    )
    capped_max_tokens: int = Field(
        default=4096,
        ge=1,
        le=2_000_000,
        description="Under a credit cap, the max_tokens a chat call without one is sent with (less if "
        "the model's listed longest output or a quarter of what a cap has left is less).",
    )
    max_call_credits: float | None = Field(
        default=None, gt=0, description="Most credits one chat call may cost."
    )
    max_total_credits: float | None = Field(
        default=None, gt=0, description="Most credits spent through this store in all, ever."
    )
    max_total_credits_per_day: float | None = Field(
        default=None, gt=0, description="Most credits spent through this store per UTC day."
    )
    max_total_credits_per_month: float | None = Field(
        default=None, gt=0, description="Most credits spent through this store per UTC month."
    )
    max_tenant_credits: float | None = Field(
        default=None, gt=0, description="Most credits spent for each Naive user (tenant), ever."
    )
    max_tenant_credits_per_day: float | None = Field(
        default=None, gt=0, description="Most credits spent for each Naive user (tenant) per UTC day."
    )
    max_tenant_credits_per_month: float | None = Field(
        default=None, gt=0, description="Most credits spent for each Naive user (tenant) per UTC month."
    )
    min_credits_remaining: float | None = Field(
        default=None, ge=0, description="Chat calls stop when the balance would fall below this many credits."
    )
    # The same caps in USD: what a backend without credits (the proxy, OpenRouter) counts in; on
    # Naive's typed routes they are converted to credits at the rate answered calls show.
    max_call_usd: float | None = Field(default=None, gt=0, description="Most USD one chat call may cost.")
    max_total_usd: float | None = Field(
        default=None, gt=0, description="Most USD spent through this store in all, ever."
    )
    max_total_usd_per_day: float | None = Field(
        default=None, gt=0, description="Most USD spent through this store per UTC day."
    )
    max_total_usd_per_month: float | None = Field(
        default=None, gt=0, description="Most USD spent through this store per UTC month."
    )
    max_tenant_usd: float | None = Field(
        default=None, gt=0, description="Most USD spent for each Naive user (tenant), ever."
    )
    max_tenant_usd_per_day: float | None = Field(
        default=None, gt=0, description="Most USD spent for each Naive user (tenant) per UTC day."
    )
    max_tenant_usd_per_month: float | None = Field(
        default=None, gt=0, description="Most USD spent for each Naive user (tenant) per UTC month."
    )
    min_usd_remaining: float | None = Field(
        default=None,
        ge=0,
        description="Chat calls stop when the balance would fall below this many USD (on OpenRouter, "
        "the key's remaining limit or credits, GET /key or /credits).",
    )
    credits_per_usd: float = Field(
        default=25.0,
        gt=0,
        description="Credits per USD assumed for cost estimates until an answered call shows the real rate.",
    )
    cap_wait: float = Field(
        default=10.0,
        ge=0,
        le=600,
        description="Seconds a call that fits a cap only once calls in flight settle may wait for them.",
    )
    store: str | None = Field(
        default=None,
        examples=["/var/lib/naive-mcp/state.db"],
        description="Where state lives: unset, a SQLite file in the user's data directory; a path; "
        "`memory`; or postgresql://user:password@host/db. Environment or flag.",
    )
    store_lease: float = Field(
        default=30.0,
        ge=1,
        le=3600,
        description="Seconds after which a silent process's reservations are settled by another.",
    )
    threads: bool = Field(
        default=True,
        description="Keep conversations (threads) in the store, so a chat can continue one by thread_id: "
        "its prompts and answers are then written there. false: nothing of a prompt or an answer is "
        "ever written, chat results carry no thread_id and long answers come back whole.",
    )
    thread_ttl: float = Field(
        default=7 * 86_400.0,
        gt=0,
        description="Seconds a thread is kept after its last turn (default 7 days); then it is deleted.",
    )
    thread_max_turns: int = Field(
        default=200, ge=2, le=10_000, description="Most turns (messages and answers) one thread holds."
    )
    thread_max_chars: int = Field(
        default=1_000_000,
        ge=1_000,
        description="Most characters (of its messages as JSON) one thread holds; its last answer may "
        "take it past this, and then it is continued no more.",
    )
    threads_per_caller: int = Field(
        default=500,
        ge=1,
        description="Most threads one caller (API key and tenant) keeps; starting another forgets the "
        "least recently used.",
    )
    job_ttl: float = Field(
        default=3_600.0,
        gt=0,
        le=30 * 86_400,
        description="Seconds a background job (or MCP task) and its result are kept after it ended "
        "(default 1 hour); then it is deleted.",
    )
    jobs_per_caller: int = Field(
        default=20,
        ge=1,
        le=1_000,
        description="Most background jobs one caller (API key and tenant) has at once: starting another "
        "forgets the oldest ended one; with this many working, no more start.",
    )
    max_jobs: int = Field(
        default=100,
        ge=1,
        le=10_000,
        description="Most background jobs (and MCP tasks) this process runs at once, of all callers; "
        "past it, a background call is refused and nothing is sent.",
    )
    task_answer_wait: float = Field(
        default=1.0,
        ge=0,
        le=60,
        description="Seconds a chat or compare from a client that speaks the 2026-07-28 tasks extension "
        "may take to be answered inline; one not ended by then becomes a task (0: every one does).",
    )
    max_result_chars: int = Field(
        default=40_000,
        ge=1_000,
        description="An answer longer than this (characters) comes back as its beginning and a link "
        "(resource) to the whole of it, kept with its thread: about 10,000 tokens, under what Claude "
        "Code and other clients accept from a tool.",
    )
    file_roots: ListSetting = Field(
        default_factory=list,
        examples=["/home/me/project"],
        description="Directories chat and compare may read `files` from and write `output_file` to "
        "(absolute paths, comma-separated or as JSON), when the client offers no MCP roots; over HTTP the "
        "only roots (client roots are not trusted there), and files are off there without them.",
    )
    max_file_bytes: int = Field(
        default=256 * 1024,
        ge=1,
        le=64 * 1024 * 1024,
        description="files: largest file read, in bytes; a larger one is skipped (never cut) and the "
        "result says so.",
    )
    max_files_bytes: int = Field(
        default=2 * 1024 * 1024,
        ge=1,
        le=256 * 1024 * 1024,
        description="files: most bytes of files one call sends in all; a file past it is skipped.",
    )
    max_files: int = Field(
        default=200,
        ge=1,
        le=10_000,
        description="files: most files one call sends; a glob's walk stops there and says so.",
    )
    transport: Literal["stdio", "streamable-http", "sse"] = Field(
        default="stdio", description="stdio (a client starts the server), streamable-http, or sse (legacy)."
    )
    host: str = Field(
        default="127.0.0.1", description="HTTP: address to listen on; beyond loopback only with auth set."
    )
    port: int = Field(default=8000, ge=1, le=65535, description="HTTP: port to listen on.")
    path: str | None = Field(
        default=None,
        pattern=r"^/[\w./-]*$",
        examples=["/mcp"],
        description="HTTP: endpoint path (default /mcp, or /sse for sse).",
    )
    stateless: bool = Field(
        default=False, description="streamable-http: keep no session between requests (for load balancers)."
    )
    workers: int = Field(
        default=1,
        ge=1,
        description="HTTP: processes serving at once on one listening socket, sharing the store, so "
        f"that calls/s grows with cores (at most {MAX_WORKERS}). More than 1 only for stateless "
        "streamable-http on a shared store (a SQLite file or PostgreSQL).",
    )
    # Environment only, like the key: these are secrets.
    auth_tokens: CliSuppress[Annotated[dict[str, TokenGrant], NoDecode]] = Field(
        default_factory=dict,
        description="HTTP: bearer tokens clients must send, comma-separated (tok1,tok2) or as JSON: "
        '["tok", …] or {"tok": {"user_id": …, "project_id": …, "may_name": ["user_id", "project_id"]}}: '
        "pinned ids bind every call, may_name lists the ids a client may choose; any other id a call "
        "names is refused.",
        examples=['{"a-long-random-token": {"user_id": "usr_123"}}'],
    )
    client_keys: bool = Field(
        default=False,
        description="HTTP: accept each client's own Naive API key as its bearer token, once the upstream "
        "has accepted it.",
    )
    client_key_cache_ttl: float = Field(
        default=300.0,
        ge=1,
        le=86_400,
        description="HTTP, client keys: seconds the upstream's verdict on a key (accepted, refused) is kept.",
    )
    client_key_cache_size: int = Field(
        default=10_000,
        ge=1,
        le=1_000_000,
        description="HTTP, client keys: most keys whose verdict is kept (accepted ones, refused ones: each).",
    )
    client_key_checks_per_minute: int = Field(
        default=120,
        ge=1,
        le=100_000,
        description="HTTP, client keys: most new keys checked with the upstream in any minute; past it "
        "a new key gets 503 with Retry-After.",
    )
    allowed_hosts: ListSetting = Field(
        default_factory=list,
        description="HTTP: Host headers to accept besides the bind address (host[:port|:*]), "
        "comma-separated or as JSON.",
        examples=["mcp.example.com,mcp.example.com:*"],
    )
    allowed_origins: ListSetting = Field(
        default_factory=list,
        description="HTTP: browser Origins to accept (scheme://host[:port|:*]), comma-separated or as JSON.",
        examples=["https://app.example.com"],
    )
    max_request_bytes: int = Field(
        default=1_048_576, ge=1024, description="HTTP: largest request body accepted, in bytes."
    )
    max_sessions: int = Field(
        default=1000,
        ge=1,
        le=100_000,
        description="streamable-http: most stateful sessions open at once, in all (each holds memory).",
    )
    max_sessions_per_client: int = Field(
        default=100,
        ge=1,
        le=100_000,
        description="streamable-http: most stateful sessions one client (bearer token) may hold open "
        "(with auth; without it, only NAIVE_MAX_SESSIONS applies).",
    )
    session_idle_timeout: float = Field(
        default=600.0,
        gt=0,
        le=86_400,
        description="streamable-http: seconds a stateful session may go without any request in flight "
        "(an open GET stream counts) before it is ended; its client then opens a new one.",
    )
    max_sse_streams: int = Field(
        default=1000,
        ge=1,
        le=100_000,
        description="HTTP: most SSE streams held open at once, in all: legacy SSE sessions and "
        "streamable-http GET streams (each holds a connection); at most three quarters of the "
        "connections (NAIVE_MAX_CONNECTIONS).",
    )
    max_sse_streams_per_client: int = Field(
        default=100,
        ge=1,
        le=100_000,
        description="HTTP: most SSE streams one client (bearer token) may hold open (with auth; "
        "without it, only NAIVE_MAX_SSE_STREAMS applies).",
    )
    max_requests_per_client: int = Field(
        default=100,
        ge=1,
        le=100_000,
        description="streamable-http: most requests (POST, DELETE) one client (bearer token) may have in "
        "flight at once, its GET streams aside; never more than half of max_connections. Only with "
        "auth: without it, the connections bound them.",
    )
    max_connections: int | None = Field(
        default=None,
        ge=1,
        le=1_000_000,
        examples=["1000"],
        description="HTTP: most client connections held open at once (default 1000, fewer when the "
        "file-descriptor limit allows fewer).",
    )
    headers_timeout: float = Field(
        default=10.0,
        gt=0,
        le=3600,
        description="HTTP: seconds a client has to send a request's headers, from connecting (or from "
        "the first byte of a later request on a kept-alive connection).",
    )
    body_timeout: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="HTTP: seconds a client has to send a request's body once its headers are in.",
    )
    keepalive_timeout: int = Field(
        default=5, ge=1, le=3600, description="HTTP: seconds an idle connection stays open between requests."
    )
    shutdown_grace: int = Field(
        default=30, ge=0, description="HTTP: seconds calls in flight get to finish on SIGINT/SIGTERM."
    )
    sandbox: bool = Field(
        default=False,
        description="Serve the built-in sandbox upstream on loopback and use it: no key, no network.",
    )
    event_loop: EventLoop = Field(
        default="auto",
        description="The event loop serving runs on: uvloop when installed (auto; the `fast` extra), "
        "or asyncio; `uvloop` refuses to start without it.",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="Log level (logs go to stderr)."
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Arguments (and the command line, which pydantic-settings puts first), then the
        environment: no .env file and no secrets directory, which naive-mcp never reads."""
        return init_settings, env_settings

    @field_validator("api_key", "openrouter_api_key", mode="before")
    @classmethod
    def _blank_is_no_key(cls, value: object) -> object:
        # Client configs often ship "NAIVE_API_KEY": "" as a placeholder: that is no key.
        if isinstance(value, str) and not value.strip():
            return None
        if isinstance(value, SecretStr) and not value.get_secret_value().strip():
            return None
        return value

    @field_validator(
        "allowed_models", "free_models", "allowed_hosts", "allowed_origins", "file_roots", mode="before"
    )
    @classmethod
    def _comma_or_json_list(cls, value: object) -> object:
        return _list_setting(value)

    @field_validator("file_roots")
    @classmethod
    def _absolute_directories(cls, roots: list[str]) -> list[str]:
        for root in roots:
            if "\0" in root or not PurePath(root).is_absolute():
                raise ValueError(
                    f"{root!r} is not an absolute path: name each root whole, e.g. /home/me/project"
                )
        return roots

    @field_validator("auth_tokens", mode="before")
    @classmethod
    def _token_list(cls, value: object) -> object:
        # A plain list of tokens: none of them pinned to a tenant.
        if isinstance(value, str):
            value = _list_setting(value) if not value.lstrip().startswith("{") else _json_setting(value)
        if isinstance(value, list):
            if not all(isinstance(token, str) for token in value):
                raise ValueError("a list of tokens holds strings only")
            return {token: {} for token in value}
        return value

    @field_validator("store")
    @classmethod
    def _known_store(cls, value: str | None) -> str | None:
        try:
            StoreLocation.parse(value)
        except NaiveError as error:
            raise ValueError(error.message) from None
        return value

    @field_validator("workers")
    @classmethod
    def _workers_share_what_they_serve(cls, value: int, info: ValidationInfo) -> int:
        """More than one worker only where nothing lives in one process: every call's state in a
        shared store, no session (the kernel gives each connection to any worker)."""
        if value > MAX_WORKERS:
            raise ValueError(
                f"at most {MAX_WORKERS}: each worker is a whole server process, with its own connections "
                "to the upstream and the store; more workers than the machine's cores add memory, not speed"
            )
        if value == 1:
            return value
        transport = info.data.get("transport")
        if transport == "stdio":
            raise ValueError(
                f"{value} workers serve HTTP, and stdio is one client's pipe to one process: set "
                "NAIVE_TRANSPORT=streamable-http with NAIVE_STATELESS=true (--stateless)"
            )
        if transport == "sse" or (transport == "streamable-http" and not info.data.get("stateless")):
            session = "a legacy SSE session" if transport == "sse" else "a stateful session"
            fix = "Serve NAIVE_TRANSPORT=streamable-http with" if transport == "sse" else "Add"
            raise ValueError(
                f"{value} workers need stateless streamable-http: {session} lives in one process, "
                f"and the kernel hands each connection to any worker. {fix} --stateless "
                "(NAIVE_STATELESS=true), or keep sessions with replicas of one worker each behind "
                "haproxy (deploy/haproxy.cfg)"
            )
        if (info.data.get("store") or "").strip() == "memory":
            raise ValueError(
                f"{value} workers need a store they share, and NAIVE_STORE=memory is each process's own: a "
                "cap would hold per worker, not in all. Leave NAIVE_STORE unset (a SQLite file), name a "
                "file, or use postgresql://…"
            )
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _any_case(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("api_key")
    @classmethod
    def _else_the_openrouter_key(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        return value if value is not None else info.data.get("openrouter_api_key")

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str, info: ValidationInfo) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        openrouter_key = info.data.get("openrouter_api_key")
        if (
            value == DEFAULT_BASE_URL
            and openrouter_key is not None
            and info.data.get("api_key") is openrouter_key
        ):
            return OPENROUTER_BASE_URL  # only an OpenRouter key: OpenRouter, unless a base is named
        return openrouter_base(value.rstrip("/"))

    @model_validator(mode="after")
    def _fits_the_backend(self) -> Settings:
        """What only Naive's typed routes have, or only backends without credits count in."""
        backend = self.backend
        if backend.typed:
            return self
        for name in ("default_user_id", "default_project_id"):
            if getattr(self, name) is not None:
                raise ValueError(
                    f"NAIVE_{name.upper()} names a Naive tenant, and only Naive's typed routes have "
                    f"tenants; NAIVE_BASE_URL {self.shown_base_url} is {backend.name}"
                )
        if any(grant.user_id or grant.project_id or grant.may_name for grant in self.auth_tokens.values()):
            raise ValueError(
                "NAIVE_AUTH_TOKENS pins or lets clients name a Naive tenant, and only Naive's typed "
                f"routes have tenants; NAIVE_BASE_URL {self.shown_base_url} is {backend.name}"
            )
        credit_settings = [
            f"NAIVE_{name.upper()}"
            for name in type(self).model_fields
            if "credits" in name and name != "credits_per_usd" and getattr(self, name) is not None
        ]
        if credit_settings:
            raise ValueError(
                f"{', '.join(credit_settings)}: {backend.name} reports no credits, only USD: set the "
                f"same caps in USD instead (e.g. NAIVE_MAX_CALL_USD=0.5, NAIVE_MIN_USD_REMAINING=1)"
            )
        return self

    @property
    def backend(self) -> Backend:
        return Backend.of(self.base_url, self.api_style)

    def secrets(self) -> list[str]:
        """Values that must never appear in output, logs or errors."""
        keys = {key.get_secret_value() for key in (self.api_key, self.openrouter_api_key) if key is not None}
        key = sorted(keys)
        password = urlsplit(self.base_url).password
        # As written in the URL, and decoded (as a driver's message would show it).
        upstream = {form for form in (password, unquote(password)) if form} if password else set()
        store = StoreLocation.parse(self.store).secrets
        return [*key, *self.auth_tokens, *sorted(upstream | set(store))]

    @property
    def shown_base_url(self) -> str:
        """The base URL without any user:password in it, for messages and logs."""
        parts = urlsplit(self.base_url)
        if parts.username is None and parts.password is None:
            return self.base_url
        host = parts.hostname or ""
        netloc = f"[{host}]" if ":" in host else host
        netloc += f":{parts.port}" if parts.port else ""
        return urlunsplit(parts._replace(netloc=netloc))

    @property
    def endpoint_path(self) -> str:
        return self.path or ("/sse" if self.transport == "sse" else "/mcp")


def _json_setting(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        # Never the text itself: it may hold a secret.
        raise ValueError(f"is not valid JSON (line {exc.lineno}, column {exc.colno})") from None


def _list_setting(value: object) -> object:
    """A list from the environment: JSON (`["a", "b"]`, or one JSON string `"a"`) or
    comma-separated (`a,b`); blank is empty."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.startswith("["):
        return _json_setting(text)
    if text.startswith('"'):
        return [_json_setting(text)]  # one item, commas and all; a non-string is refused by type
    return [item.strip() for item in text.split(",") if item.strip()]


# Examples for bad-setting messages where the field's default is no example.
_EXAMPLES: dict[type, str] = {float: "10", int: "10", bool: "true", str: "…"}
_SETTINGS_ERROR_FIELD = re.compile(r'field "(\w+)"')


def setting_problems(error: ValidationError | SettingsError) -> str:
    """What is wrong with the settings, one problem per setting: its name, what is wrong, and an
    example of a good value (`NAIVE_X: …; e.g. NAIVE_X=…`). Never the rejected value, which may
    be a secret; nor a key inside a setting (a token of NAIVE_AUTH_TOKENS is one)."""
    if isinstance(error, SettingsError):
        found = _SETTINGS_ERROR_FIELD.search(str(error))
        if found is None or found.group(1) not in Settings.model_fields:
            return str(error)
        return _problem(found.group(1), "could not be read")
    lines: dict[str, None] = {}
    for problem in error.errors(include_input=False, include_url=False):
        loc = problem["loc"]
        name = str(loc[0]) if loc else ""
        if name not in Settings.model_fields:
            lines[f"{name or 'settings'}: {plain_message(problem)}"] = None
            continue
        # Inside NAIVE_AUTH_TOKENS the next step is a token: name what is under it, not the token.
        inner = loc[2:] if name == "auth_tokens" else loc[1:]
        where = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in inner)
        if name == "auth_tokens" and len(loc) > 1:
            where = f"a token's {where.lstrip('.') or 'grant'}"
        where = where.lstrip(".")
        what = plain_message(problem)
        lines[_problem(name, f"{where}: {what}" if where else what)] = None
    return "\n".join(lines)


def _problem(name: str, what: str) -> str:
    env = f"NAIVE_{name.upper()}"
    return f"{env}: {what}; e.g. {env}={example_of(name)}"


def example_of(name: str) -> str:
    """A good value of setting `name`, as it is written in the environment."""
    field = Settings.model_fields[name]
    if field.examples:
        return str(field.examples[0])
    default = field.get_default(call_default_factory=True)
    if default not in (None, [], {}):
        if isinstance(default, bool):
            return "true" if not default else "false"
        return f"{default:g}" if isinstance(default, float) else str(default)
    annotation = field.annotation
    for kind, example in _EXAMPLES.items():
        if annotation is kind or kind in getattr(annotation, "__args__", ()):
            return example
    return "…"
