"""The real services of tests/engines.py: PostgreSQL, and nginx and haproxy run from deploy/."""

from __future__ import annotations

import uuid
from contextlib import AbstractContextManager, ExitStack
from pathlib import Path

import httpx2
import psycopg
import pytest

from bench.upstream import free_port, sandbox_process
from tests.conftest import DEFAULT_MODEL
from tests.engines import BalancerKind, PostgresServer, balancer

pytestmark = pytest.mark.slow

REQUESTS = 4  # of each kind, GET and POST, per check


def test_postgres_url_connects_with_its_password(postgres_url: str) -> None:
    assert postgres_url.startswith("postgresql://naive:")
    assert "@127.0.0.1:" in postgres_url
    with psycopg.connect(postgres_url) as connection:
        connection.execute("CREATE TABLE t (x int)")
        connection.execute("INSERT INTO t VALUES (1)")
        assert connection.execute("SELECT x FROM t").fetchall() == [(1,)]
        assert connection.execute("SHOW fsync").fetchone() == ("off",)
        assert connection.execute("SHOW max_connections").fetchone() == ("300",)


def test_each_postgres_url_is_a_database_of_its_own(
    postgres_url: str, postgres_server: PostgresServer
) -> None:
    other = postgres_server.create_database()
    assert other != postgres_url
    with psycopg.connect(postgres_url) as mine, psycopg.connect(other) as theirs:
        mine.execute("CREATE TABLE only_here (x int)")
        mine.commit()
        assert theirs.execute("SELECT to_regclass('only_here')").fetchone() == (None,)
        assert (
            mine.execute("SELECT current_database()").fetchone()
            != theirs.execute("SELECT current_database()").fetchone()
        )
    postgres_server.drop_database(other.rsplit("/", 1)[1])


_urls_seen: set[str] = set()


@pytest.mark.parametrize("run", [1, 2])
def test_every_test_gets_an_empty_database(postgres_url: str, run: int) -> None:
    """Whichever of the two runs first, the other one does not see its table."""
    assert postgres_url not in _urls_seen
    _urls_seen.add(postgres_url)
    with psycopg.connect(postgres_url) as connection:
        tables = "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
        assert connection.execute(tables).fetchone() == (0,)
        connection.execute("CREATE TABLE left_behind (x int)")


def test_postgres_refuses_a_wrong_password(postgres_server: PostgresServer) -> None:
    wrong = PostgresServer(port=postgres_server.port, password="wrong")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(wrong.url(), connect_timeout=30)


@pytest.mark.parametrize("kind", ["nginx", "haproxy"])
def test_balancer_passes_requests_on_when_an_upstream_is_killed(kind: BalancerKind, tmp_path: Path) -> None:
    """Through the shipped config, round robin over two upstreams; once one is killed, every
    request, POSTs included, still succeeds: a refused connection moves it to the other one."""
    with ExitStack() as stack:
        killed, kept = ExitStack(), ExitStack()
        stack.enter_context(kept)
        stack.enter_context(killed)
        ports = [
            port_of(killed.enter_context(sandbox_process())),
            port_of(kept.enter_context(sandbox_process())),
        ]
        url = stack.enter_context(balancer(kind, ports, tmp_path))
        client = stack.enter_context(httpx2.Client(base_url=url, timeout=30))
        assert_all_served(client)

        killed.close()
        assert_all_served(client)


@pytest.mark.parametrize("kind", ["nginx", "haproxy"])
def test_balancer_survives_a_rolling_restart(kind: BalancerKind, tmp_path: Path) -> None:
    """An upstream restarted on its port gets requests again at once: stop one, start it again,
    stop the other straight away, and no request fails (no failure is remembered, see deploy/)."""
    first, second = free_port(), free_port()
    with ExitStack() as stack:
        upstreams = {port: stack.enter_context(ExitStack()) for port in (first, second)}
        for port, upstream in upstreams.items():
            upstream.enter_context(sandbox_on(port))
        url = stack.enter_context(balancer(kind, [first, second], tmp_path))
        client = stack.enter_context(httpx2.Client(base_url=url, timeout=30))
        assert_all_served(client)

        upstreams[first].close()
        assert_all_served(client)

        upstreams[first].enter_context(sandbox_on(first))
        upstreams[second].close()
        assert_all_served(client)


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def assert_all_served(client: httpx2.Client) -> None:
    """Every request succeeds. Round robin over two upstreams sends one of any two consecutive
    requests to each, so with one of them down both the GETs and the POSTs meet it."""
    for _ in range(REQUESTS):
        health = client.get("/health")
        assert (health.status_code, health.json()) == (200, {"status": "ok"})
    for _ in range(REQUESTS):
        # The sandbox answers 401 without Authorization: this shows that the header is passed on.
        chat = client.post(
            "/v1/llm/chat/completions",
            headers={"Authorization": f"Bearer nv_sk_test_{uuid.uuid4().hex}"},
            json={"model": DEFAULT_MODEL, "messages": [{"role": "user", "content": "hello"}]},
        )
        assert chat.status_code == 200, chat.text
        assert chat.json()["choices"][0]["message"]["content"]


def sandbox_on(port: int) -> AbstractContextManager[str]:
    """The sandbox upstream in a process of its own on a given port, so that it can be restarted
    on the same one."""
    return sandbox_process(port=port)
