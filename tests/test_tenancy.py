"""Tenancy over HTTP has no holes (issue 11, holes 6, 9 and 10), each attack reproduced on loopback:

- a token's pins bind every field they name, and a field it does not name is the server's default
  unless the grant's `may_name` lets the client choose it: a project-pinned token cannot act as
  another user or read another tenant's usage, a user-pinned token cannot name another project,
  an unpinned token cannot invent tenants (and one allowed to is still held by the total caps);
- client keys authenticate only once the upstream has accepted them: a bad key gets 401, a good
  one is checked once, the verdicts are bounded, and a flood of random keys makes a bounded
  number of upstream requests;
- a session's owner is the token's full digest.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp.types import CallToolResult, TextResourceContents
from pydantic import ValidationError

from naive_mcp.access import AccessControl, TokenGrant
from naive_mcp.caller import OWN_TENANT
from naive_mcp.errors import UpstreamError, UpstreamUnreachable
from naive_mcp.keycheck import KeyCheck, KeyCheckUnavailable, KeyRefused
from naive_mcp.sandbox import RunningSandbox, serve_in_thread
from naive_mcp.settings import Settings
from naive_mcp.store import CallRecord, CallResult, Exactly, StoreLocation, UsageScope
from naive_mcp.store.store import Store
from tests.conftest import DEFAULT_MODEL, upstream_env
from tests.helpers import text_of
from tests.remote import HttpServer, connect, free_port, http_server

pytestmark = pytest.mark.anyio

INITIALIZE = json.dumps(
    {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "attacker", "version": "0"},
        },
    }
).encode()
MCP_HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
# The sandbox bills usage.cost times 1.05, at $0.50 a credit.
SANDBOX_CREDITS_PER_USD = "2.1"


def token(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex}"


async def chat(server: HttpServer, bearer: str, prompt: str, **arguments: Any) -> CallToolResult:
    async with connect(server, bearer) as client:
        return await client.call_tool("naive_llm_chat", {"prompt": prompt, **arguments})


async def usage(server: HttpServer, bearer: str) -> dict[str, Any]:
    async with connect(server, bearer) as client:
        content = (await client.read_resource("naive://usage")).contents[0]
    assert isinstance(content, TextResourceContents)
    figures: dict[str, Any] = json.loads(content.text)
    return figures


def generation_id(result: CallToolResult) -> str:
    assert result.structured_content is not None, text_of(result)
    made: str = result.structured_content["id"]
    return made


def refused_for(result: CallToolResult, field: str) -> str:
    assert result.is_error
    text = text_of(result)
    assert text.startswith(f"Invalid arguments:\n- {field}: ")
    assert "Nothing was sent upstream and no credits were spent." in text
    return text


def chats_seen(sandbox: RunningSandbox, key: str) -> list[tuple[str, str | None, str | None]]:
    """(prompt, user, project) of every chat the upstream got with `key`."""
    return [
        (r.body["messages"][-1]["content"], r.user_id, r.project_id)
        for r in sandbox.sandbox.ledger.requests(key)
        if r.path.endswith("/chat/completions")
    ]


# --- pins bind what they name; what they do not name is the server's default -------------------


@pytest.mark.slow
async def test_a_project_pinned_token_cannot_act_as_a_user_or_read_other_tenants(
    sandbox: RunningSandbox, api_key: str, tmp_path: Path
) -> None:
    project, alice, operator = token("project"), token("alice"), token("operator")
    tokens = {
        project: {"project_id": "prj_p"},
        alice: {"user_id": "usr_alice", "project_id": "prj_a"},
        operator: {"may_name": ["user_id", "project_id"]},
    }
    with http_server(
        tmp_path, {**upstream_env(sandbox, api_key), "NAIVE_AUTH_TOKENS": json.dumps(tokens)}
    ) as server:
        own = await chat(server, project, "as the project")
        as_mallory = await chat(server, project, "as mallory", user_id="usr_mallory")
        elsewhere = await chat(server, project, "in another project", project_id="prj_q")
        alices = await chat(server, alice, "alice's")
        assert not (
            await chat(server, operator, "bob in prj_p", user_id="usr_bob", project_id="prj_p")
        ).is_error
        projects_view = await usage(server, project)
        operators_view = await usage(server, operator)
        async with connect(server, project) as client:
            lookups = [
                await client.call_tool("naive_llm_generation", {"id": generation_id(made)})
                for made in (own, alices)
            ]

    assert not own.is_error
    assert (
        "may not choose the Naive user (its calls go as the API key's own subject); leave user_id out, or ask "
        in (refused_for(as_mallory, "user_id"))
    )
    assert 'add "user_id" to its "may_name" in NAIVE_AUTH_TOKENS' in text_of(as_mallory)
    assert "is pinned to another Naive project; leave project_id out" in refused_for(elsewhere, "project_id")
    # What reached the upstream: the project's own call, as the project; no refused one.
    assert chats_seen(sandbox, api_key) == [
        ("as the project", None, "prj_p"),
        ("alice's", "usr_alice", "prj_a"),
        ("bob in prj_p", "usr_bob", "prj_p"),
    ]
    # The project's token reads its own calls only: not alice's, not bob's in its own project.
    assert projects_view["total"]["calls"] == 1 and set(projects_view["by_tenant"]) == {OWN_TENANT}
    assert projects_view["by_outcome"]["answered"]["calls"] == 1
    assert operators_view["total"]["calls"] == 3
    # Generation stats too: its own call's, not alice's (which the upstream would show: same key).
    assert not lookups[0].is_error
    assert "no call this connection's token could have made through this server got this generation id" in (
        refused_for(lookups[1], "id")
    )
    # (Stats come a moment after the answer: the own lookup may have asked twice, past a brief 404.)
    asked = {r.query for r in sandbox.sandbox.ledger.requests(api_key) if r.path.endswith("/generation")}
    assert asked == {f"id={generation_id(own)}"}, "alice's id never reached the upstream"
    assert set(operators_view["by_tenant"]) == {OWN_TENANT, "usr_alice", "usr_bob"}


@pytest.mark.slow
async def test_a_user_pinned_token_cannot_name_another_project_and_nothing_goes_upstream(
    sandbox: RunningSandbox, api_key: str, tmp_path: Path
) -> None:
    carol, carol_in_prj_c = token("carol"), token("carol-c")
    tokens = {
        carol: {"user_id": "usr_carol"},
        carol_in_prj_c: {"user_id": "usr_carol", "project_id": "prj_c"},
    }
    env = {**upstream_env(sandbox, api_key), "NAIVE_AUTH_TOKENS": json.dumps(tokens)}
    with http_server(tmp_path, env | {"NAIVE_DEFAULT_PROJECT_ID": "prj_default"}) as server:
        own = await chat(server, carol, "carol's")
        default_named = await chat(server, carol, "the default, named", project_id="prj_default")
        other_project = await chat(server, carol, "into alice's project", project_id="prj_a")
        as_me = await chat(server, carol, "as the key", user_id="me")
        assert not (await chat(server, carol_in_prj_c, "carol in prj_c")).is_error
        carols_view = await usage(server, carol)

    assert not own.is_error and not default_named.is_error
    text = refused_for(other_project, "project_id")
    assert (
        "may not choose the Naive project (its calls go as the server's default (NAIVE_DEFAULT_PROJECT_ID))"
        in text
    )
    assert "is pinned to another Naive user; leave user_id out" in refused_for(as_me, "user_id")
    assert chats_seen(sandbox, api_key) == [
        ("carol's", "usr_carol", "prj_default"),
        ("the default, named", "usr_carol", "prj_default"),
        ("carol in prj_c", "usr_carol", "prj_c"),
    ]
    # The calls it could have made: carol's in the default project, not those pinned to prj_c.
    assert carols_view["total"]["calls"] == 2 and set(carols_view["by_tenant"]) == {"usr_carol"}


@pytest.mark.slow
async def test_tokens_invent_no_tenants_unless_allowed_and_then_the_total_cap_holds(
    sandbox: RunningSandbox, api_key: str, tmp_path: Path
) -> None:
    # One call costs about 0.00043 credits and reserves about 0.0006: one fits a tenant's cap.
    tenant_cap, total_cap = 0.0008, 0.003
    plain, inventor = token("plain"), token("inventor")
    env = {
        **upstream_env(sandbox, api_key),
        "NAIVE_AUTH_TOKENS": json.dumps({plain: {}, inventor: {"may_name": ["user_id"]}}),
        "NAIVE_MAX_TENANT_CREDITS": str(tenant_cap),
        "NAIVE_MAX_TOTAL_CREDITS": str(total_cap),
        "NAIVE_CREDITS_PER_USD": SANDBOX_CREDITS_PER_USD,
    }
    arguments = {"prompt": "x" * 2000, "model": "mistralai/mistral-small-3.2", "max_tokens": 600}
    outcomes: list[CallToolResult] = []

    async def invent(first: int) -> None:
        async with connect(server, inventor) as client:
            for n in range(first, first + 10):
                outcomes.append(
                    await client.call_tool("naive_llm_chat", {**arguments, "user_id": f"usr_made_up_{n}"})
                )

    with http_server(tmp_path, env) as server:
        invented_by_plain = await chat(server, plain, "as a made-up user", user_id="usr_made_up")
        with anyio.fail_after(120):
            async with anyio.create_task_group() as group:
                for first in range(0, 40, 10):
                    group.start_soon(invent, first)
        inventors_view = await usage(server, inventor)

    assert "may not choose the Naive user" in refused_for(invented_by_plain, "user_id")
    answered = [o for o in outcomes if not o.is_error]
    turned_away = [o for o in outcomes if o.is_error]
    assert answered and turned_away
    assert all("NAIVE_MAX_TOTAL_CREDITS" in text_of(o) for o in turned_away)
    spent = inventors_view["total"]["credits"]
    assert inventors_view["total"]["calls"] == len(answered) == len(chats_seen(sandbox, api_key))
    assert spent <= total_cap, f"40 invented tenants spent {spent / tenant_cap:.2f}x one tenant's cap"
    print(f"40 invented tenants: {len(answered)} answered, {spent / tenant_cap:.2f}x one tenant's cap")  # noqa: T201


def test_a_grant_that_pins_a_field_it_lets_the_client_name_is_refused_at_start() -> None:
    with pytest.raises(ValidationError, match="user_id is both pinned and in may_name"):
        Settings(auth_tokens={"t": {"user_id": "usr_a", "may_name": ["user_id"]}})
    with pytest.raises(ValidationError, match="may_name"):
        Settings(auth_tokens={"t": {"may_name": ["model"]}})
    assert Settings(auth_tokens=["a", "b"]).auth_tokens == {"a": TokenGrant(), "b": TokenGrant()}
    assert TokenGrant().may_name == frozenset(), "the plain list form lets a client name nothing"


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
async def test_the_usage_scope_filters_keys_users_and_projects_including_empty_ones(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    where = str(tmp_path / "store.db") if kind == "sqlite" else request.getfixturevalue("postgres_url")
    store = await Store.open(StoreLocation.parse(where))
    rows = [
        ("k1", "usr_a", "prj_a"),
        ("k1", None, "prj_a"),
        ("k1", "usr_a", None),
        ("k1", None, None),
        ("k2", "usr_a", "prj_a"),
    ]
    try:
        for n, (key, user, project) in enumerate(rows):
            call = CallRecord(f"c{n}", time.time(), key, user, project, "m")
            answered = CallResult("answered", 0.5, credits_reported=True, model="m", generation_id=f"gen-{n}")
            await store.record(call, answered)

        async def seen(scope: UsageScope) -> set[tuple[str, str | None]]:
            return {(row.key_digest, row.user_id) for row in await store.usage(scope)}

        assert len(await store.usage(UsageScope())) == 3  # grouped by key, user, model and outcome
        assert await seen(UsageScope("k1", user=Exactly(None))) == {("k1", None)}
        k1_none = await store.usage(UsageScope("k1", user=Exactly(None), project=Exactly(None)))
        assert [row.tally.calls for row in k1_none] == [1]
        k1_prj_a = await store.usage(UsageScope("k1", project=Exactly("prj_a")))
        assert sum(row.tally.calls for row in k1_prj_a) == 2
        assert await seen(UsageScope(user=Exactly("usr_a"), project=Exactly("prj_a"))) == {
            ("k1", "usr_a"),
            ("k2", "usr_a"),
        }
        assert await store.made_within(
            "gen-1", UsageScope("k1", user=Exactly(None), project=Exactly("prj_a"))
        )
        assert not await store.made_within(
            "gen-1", UsageScope("k1", user=Exactly(None), project=Exactly(None))
        )
        assert not await store.made_within("gen-4", UsageScope("k1"))
        assert await store.made_within("gen-4", UsageScope())
    finally:
        await store.aclose()


# --- client keys: authentication once the upstream has accepted the key ------------------------


@pytest.mark.slow
async def test_a_bad_client_key_gets_401_and_a_good_one_is_checked_upstream_once(
    sandbox: RunningSandbox, tmp_path: Path
) -> None:
    good, bad = f"nv_sk_test_good_{uuid.uuid4().hex}", f"nv_sk_test_revoked_{uuid.uuid4().hex}"
    shapeless = f"not-a-key-{uuid.uuid4().hex}"
    with http_server(tmp_path, {**upstream_env(sandbox, None), "NAIVE_CLIENT_KEYS": "true"}) as server:
        with httpx2.Client(timeout=30) as http:
            bad_posts = [
                http.post(
                    server.url, content=INITIALIZE, headers={**MCP_HEADERS, "Authorization": f"Bearer {bad}"}
                )
                for _ in range(20)
            ]
            bad_stream = http.get(
                server.url, headers={"Accept": "text/event-stream", "Authorization": f"Bearer {bad}"}
            )
            shapeless_post = http.post(
                server.url,
                content=INITIALIZE,
                headers={**MCP_HEADERS, "Authorization": f"Bearer {shapeless}"},
            )
        async with connect(server, good) as first:
            for n in range(5):
                assert not (await first.call_tool("naive_llm_chat", {"prompt": f"first {n}"})).is_error
        async with connect(server, good) as second:
            for n in range(5):
                assert not (await second.call_tool("naive_llm_chat", {"prompt": f"second {n}"})).is_error

    for response in [*bad_posts, bad_stream, shapeless_post]:
        assert response.status_code == 401
        assert "mcp-session-id" not in response.headers, "a refused key opens no session"
    ledger = sandbox.sandbox.ledger
    assert [r.path for r in ledger.requests(bad)] == ["/v1/llm/models"], (
        "21 tries, one check: the verdict is kept"
    )
    assert ledger.requests(shapeless) == [], "not shaped like a key: never sent upstream"
    paths = [r.path for r in ledger.requests(good)]
    assert paths.count("/v1/llm/models") == 1 and paths.count("/v1/llm/chat/completions") == 10
    assert paths[0] == "/v1/llm/models", "checked before anything else"


@pytest.mark.slow
async def test_a_flood_of_random_client_keys_makes_a_bounded_number_of_upstream_checks(
    sandbox: RunningSandbox, tmp_path: Path
) -> None:
    per_minute, flood = 20, 200
    known, newcomer = (f"nv_sk_test_{name}_{uuid.uuid4().hex}" for name in ("known", "newcomer"))
    randoms = [f"nv_sk_test_revoked_{uuid.uuid4().hex}" for _ in range(flood)]
    env = {
        **upstream_env(sandbox, None),
        "NAIVE_CLIENT_KEYS": "true",
        "NAIVE_CLIENT_KEY_CHECKS_PER_MINUTE": str(per_minute),
    }
    statuses: list[int] = []
    limit = anyio.Semaphore(25)

    async def attack(http: httpx2.AsyncClient, key: str) -> None:
        async with limit:
            response = await http.post(
                server.url, content=INITIALIZE, headers={**MCP_HEADERS, "Authorization": f"Bearer {key}"}
            )
            statuses.append(response.status_code)

    with http_server(tmp_path, env) as server:
        started = time.monotonic()
        assert not (await chat(server, known, "before the flood")).is_error
        async with httpx2.AsyncClient(timeout=30) as http:
            with anyio.fail_after(120):
                async with anyio.create_task_group() as group:
                    for key in randoms:
                        group.start_soon(attack, http, key)
            turned_away = await http.post(
                server.url, content=INITIALIZE, headers={**MCP_HEADERS, "Authorization": f"Bearer {newcomer}"}
            )
        minutes = int((time.monotonic() - started) // 60) + 1
        after = await chat(server, known, "after the flood")

    ledger = sandbox.sandbox.ledger
    checked = sum(1 for key in randoms if ledger.requests(key))
    assert checked + 1 <= per_minute * minutes, "the known key's check and the flood's share the budget"
    assert statuses.count(401) == checked and statuses.count(503) == flood - checked
    if minutes == 1:  # the minute's checks are spent: a new key waits, and is not sent upstream
        assert turned_away.status_code == 503 and ledger.requests(newcomer) == []
        assert int(turned_away.headers["retry-after"]) >= 1
        assert "NAIVE_CLIENT_KEY_CHECKS_PER_MINUTE (20)" in turned_away.json()["error_description"]
    assert not after.is_error, "a key already checked is not affected"
    assert [r.path for r in ledger.requests(known)].count("/v1/llm/models") == 1
    print(f"{flood} random keys: {checked} upstream checks, {flood - checked} turned away with 503")  # noqa: T201


@pytest.mark.slow
async def test_a_key_that_cannot_be_checked_gets_503_and_no_verdict_is_kept(tmp_path: Path) -> None:
    port = free_port()
    key = f"nv_sk_test_{uuid.uuid4().hex}"
    env = {
        "NAIVE_BASE_URL": f"http://127.0.0.1:{port}",
        "NAIVE_DEFAULT_MODEL": DEFAULT_MODEL,
        "NAIVE_CLIENT_KEYS": "true",
    }
    headers = {**MCP_HEADERS, "Authorization": f"Bearer {key}"}
    with http_server(tmp_path, env) as server:
        down = [httpx2.post(server.url, content=INITIALIZE, headers=headers, timeout=30) for _ in range(2)]
        with serve_in_thread(port=port) as back:
            async with connect(server, key) as client:
                result = await client.call_tool("naive_llm_chat", {"prompt": "back"})
            checks = [r for r in back.sandbox.ledger.requests(key) if r.path == "/v1/llm/models"]
        logs = server.logs()

    for response in down:
        assert response.status_code == 503 and response.headers["retry-after"] == "5"
        assert response.json()["error"] == "temporarily_unavailable"
        assert (
            "could not check this Naive key with the upstream (could not reach"
            in response.json()["error_description"]
        )
    assert not result.is_error and len(checks) == 1, (
        "once the upstream is back, the key is checked and accepted"
    )
    assert "Traceback" not in logs and key not in logs


async def test_client_key_verdicts_are_bounded_in_number_and_time_and_shared_by_concurrent_requests() -> None:
    now = [0.0]
    release = anyio.Event()
    asked: list[str] = []

    async def upstream(key: str) -> bool:
        asked.append(key)
        await release.wait()
        return "good" in key

    check = KeyCheck(upstream, ttl=300, size=3, per_minute=1000, clock=lambda: now[0])
    verdicts: list[bool] = []

    async def accepts(key: str) -> None:
        verdicts.append(await check.accepts(key))

    async with anyio.create_task_group() as group:  # 50 requests with one new key: one check
        for _ in range(50):
            group.start_soon(accepts, "good-0")
        await anyio.wait_all_tasks_blocked()
        release.set()
    assert verdicts == [True] * 50 and asked == ["good-0"]

    for key in ["bad-1", "bad-2", "bad-3", "bad-4", "bad-5"]:  # refused keys do not push good ones out
        assert not await check.accepts(key)
    assert await check.accepts("good-0") and check.checks == 6
    assert not await check.accepts("bad-1") and check.checks == 7, "only the newest 3 refusals are kept"
    for key in ["good-1", "good-2", "good-3"]:
        assert await check.accepts(key)
    assert await check.accepts("good-0") and check.checks == 11, "at most 3 accepted keys are kept"
    now[0] = 301.0
    assert await check.accepts("good-3") and check.checks == 12, "a verdict lives NAIVE_CLIENT_KEY_CACHE_TTL"


async def test_client_key_checks_are_bounded_per_minute_and_failures_are_not_kept() -> None:
    now = [0.0]
    hold = anyio.Event()
    failing = [
        UpstreamUnreachable("could not reach the upstream"),
        UpstreamError("busy", kind="rate_limited", status=429, retry_after=7.0),
    ]

    async def upstream(key: str) -> bool:
        if failing:
            raise failing.pop(0)
        await hold.wait()
        return False

    check = KeyCheck(upstream, ttl=300, size=1000, per_minute=8, clock=lambda: now[0])
    for retry_after in (5, 7):
        with pytest.raises(KeyCheckUnavailable) as unavailable:
            await check.accepts("nv_sk_test_x")
        assert unavailable.value.retry_after == retry_after
    assert "busy" not in unavailable.value.message, "the upstream's own words could echo the key"
    turned_away: list[KeyCheckUnavailable] = []

    async def attempt(key: str) -> None:
        try:
            await check.accepts(key)
        except KeyCheckUnavailable as refused:
            turned_away.append(refused)

    async with anyio.create_task_group() as group:  # 200 random keys at once
        for n in range(200):
            group.start_soon(attempt, f"random-{n}")
        await anyio.wait_all_tasks_blocked()
        hold.set()
    assert check.checks == 8 and len(turned_away) == 194, (
        "2 failed checks + 6 of the flood use the minute's 8"
    )
    for refused in turned_away:
        assert "NAIVE_CLIENT_KEY_CHECKS_PER_MINUTE (8)" in refused.message and refused.retry_after == 60
    now[0] = 60.0
    assert not await check.accepts("random-199") and check.checks == 9, "a new minute, new checks"


async def test_a_sessions_owner_is_the_tokens_full_digest() -> None:
    async def upstream(key: str) -> bool:
        return True

    access = AccessControl(
        {"team-token": TokenGrant()}, client_keys=KeyCheck(upstream, ttl=60, size=10, per_minute=10)
    )
    configured = await access.verify_token("team-token")
    client_key = await access.verify_token("nv_sk_test_abcdef")
    assert configured is not None and client_key is not None
    assert configured.client_id == f"token-{hashlib.sha256(b'team-token').hexdigest()}"
    assert client_key.client_id == f"naive-key-{hashlib.sha256(b'nv_sk_test_abcdef').hexdigest()}"
    with pytest.raises(KeyRefused, match=r"^not a Naive key \(nv_sk_live_…/nv_sk_test_…\), nor a token"):
        await access.verify_token("nv_sk_test_" + "a" * 300)  # no key of any size is checked


@pytest.mark.slow
async def test_on_openrouter_a_client_key_is_checked_with_get_key(
    sandbox: RunningSandbox, tmp_path: Path
) -> None:
    """OpenRouter lists its models to anyone: a client key is proved by `GET /key` instead."""
    good, revoked = f"sk-or-v1-{uuid.uuid4().hex}", f"sk-or-v1-revoked-{uuid.uuid4().hex}"
    env = {
        **upstream_env(sandbox, None),
        "NAIVE_CLIENT_KEYS": "true",
        "NAIVE_BASE_URL": f"{sandbox.url}/api/v1",
    }
    with http_server(tmp_path, env) as server:
        with httpx2.Client(timeout=30) as http:
            refused = http.post(
                server.url, content=INITIALIZE, headers={**MCP_HEADERS, "Authorization": f"Bearer {revoked}"}
            )
            shapeless = http.post(
                server.url, content=INITIALIZE, headers={**MCP_HEADERS, "Authorization": "Bearer a b"}
            )
        async with connect(server, good) as client:
            assert not (await client.call_tool("naive_llm_chat", {"prompt": "hi"})).is_error
    assert refused.status_code == 401 and "the upstream refused this key" in refused.text
    assert shapeless.status_code == 401
    ledger = sandbox.sandbox.ledger
    assert [r.path for r in ledger.requests(revoked)] == ["/api/v1/key"]
    assert [r.path for r in ledger.requests(good)] == ["/api/v1/key", "/api/v1/chat/completions"]
