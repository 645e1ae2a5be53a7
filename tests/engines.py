"""Real PostgreSQL, nginx and haproxy for the tests, run privately on loopback.

Context managers, usable anywhere:

- `postgres_server(tmp)`: a throwaway PostgreSQL cluster on 127.0.0.1 (password auth for the
  role `naive`, tuned for speed over durability), stopped and removed at exit.
- `balancer(kind, upstream_ports, tmp)`: nginx or haproxy in front of the given loopback ports,
  run from the very configuration we ship (`deploy/nginx.conf`, `deploy/haproxy.cfg`); yields
  its base URL. Upstreams may be stopped and restarted (on the same port) while it runs.

Pytest fixtures (a plugin: `pytest_plugins` in conftest.py):

- `postgres_server` (session): one server for the test session, started when a test first asks.
- `postgres_url` (function): a new, empty database on it for each test, dropped afterwards.

The programs come from Debian's packages, which `scripts/services` installs. A missing one fails
the test, saying so; nothing is skipped. Nothing here reaches beyond loopback, and every wait is
for an event (a process ready, a port answering) with a generous deadline, not a fixed sleep.
"""

from __future__ import annotations

import os
import pwd
import re
import secrets
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import httpx2
import psycopg
import pytest
from psycopg import sql

from bench.upstream import free_port

# Generous: these bound waits for events (ready, answering, stopped), never the tests' work.
STARTUP_SECONDS = 60
STOP_SECONDS = 60
# Another process may take a free port between free_port() and the bind; then try a new one.
PORT_ATTEMPTS = 5

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
POSTGRES_ROOT = Path("/usr/lib/postgresql")
POSTGRES_USER = "naive"
# initdb and postgres refuse to run as root; as root, they run as Debian's `postgres` user.
POSTGRES_OS_USER = "postgres"

BalancerKind = Literal["nginx", "haproxy"]


class ServiceMissing(RuntimeError):
    """A program the test needs is not installed."""

    def __init__(self, what: str) -> None:
        super().__init__(f"{what} not found: run scripts/services to install it (Debian's packages)")


class _AddressInUse(RuntimeError):
    """The port chosen was taken before the server could bind it."""


# --- PostgreSQL -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PostgresServer:
    """A running PostgreSQL on 127.0.0.1:`port`; the role `naive` may do anything on it."""

    port: int
    password: str
    host: str = "127.0.0.1"
    user: str = POSTGRES_USER

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}:{self.password}@{self.host}:{self.port}/{database}"

    def create_database(self, name: str | None = None) -> str:
        """A new, empty database (named `name`, or something unique); returns its URL."""
        name = name or f"test_{uuid.uuid4().hex[:16]}"
        with self._admin() as connection:
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop a database, ending any connection still open to it."""
        with self._admin() as connection:
            connection.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )

    def _admin(self) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(self.url(), autocommit=True, connect_timeout=STARTUP_SECONDS)


def postgres_bin() -> Path:
    """The newest /usr/lib/postgresql/<version>/bin that holds a server."""
    found = [path.parent for path in POSTGRES_ROOT.glob("*/bin/postgres")]
    if not found:
        raise ServiceMissing(f"PostgreSQL ({POSTGRES_ROOT}/*/bin/postgres)")
    return max(found, key=lambda bin_dir: _version_key(bin_dir.parent.name))


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) if part.isdigit() else -1 for part in version.split("."))


@contextmanager
def postgres_server(tmp: Path) -> Iterator[PostgresServer]:
    """initdb a cluster, start it on a free loopback port, and stop and remove it at exit.

    The cluster lives in a directory of its own under `tmp`; as root, where the server must run
    as the `postgres` user, which cannot enter pytest's private temp dirs, under the system temp
    dir instead (and its log is copied into `tmp` at exit). The Unix socket is in that directory.
    """
    bin_dir = postgres_bin()
    as_root = os.geteuid() == 0
    base = Path(tempfile.mkdtemp(prefix="naive-pg-", dir=None if as_root else tmp))
    data, log = base / "data", base / "postgres.log"
    try:
        if as_root:
            account = _postgres_account()
            os.chown(base, account.pw_uid, account.pw_gid)
        password = secrets.token_hex(16)
        _initdb(bin_dir, base, data, password)
        _write_settings(data, base)
        server = _start_postgres(bin_dir, data, log, password)
        try:
            yield server
        finally:
            _stop_postgres(bin_dir, data)
    finally:
        if log.exists():
            shutil.copyfile(log, tmp / "postgres.log")
        shutil.rmtree(base, ignore_errors=True)


def _postgres_account() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(POSTGRES_OS_USER)
    except KeyError:
        raise ServiceMissing(f"the {POSTGRES_OS_USER!r} user (made by Debian's postgresql package)") from None


def _as_owner(command: list[str]) -> list[str]:
    """`command`, run as the `postgres` user when we are root."""
    if os.geteuid() != 0:
        return command
    return [shutil.which("runuser") or "/usr/sbin/runuser", "-u", POSTGRES_OS_USER, "--", *command]


def _run(command: list[str]) -> None:
    done = subprocess.run(
        _as_owner(command), stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False
    )
    if done.returncode:
        raise RuntimeError(f"{command[0]} failed ({done.returncode}): {done.stdout}{done.stderr}")


def _initdb(bin_dir: Path, base: Path, data: Path, password: str) -> None:
    password_file = base / "password"
    password_file.write_text(password)
    if os.geteuid() == 0:
        account = _postgres_account()
        os.chown(password_file, account.pw_uid, account.pw_gid)
    password_file.chmod(0o600)
    try:
        _run(
            [
                str(bin_dir / "initdb"),
                f"--pgdata={data}",
                f"--username={POSTGRES_USER}",
                f"--pwfile={password_file}",
                "--auth=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
                "--no-instructions",
            ]
        )
    finally:
        password_file.unlink()


def _write_settings(data: Path, socket_dir: Path) -> None:
    """Loopback only, and speed over durability: the cluster is thrown away after the tests."""
    settings = {
        "listen_addresses": "'127.0.0.1'",
        "unix_socket_directories": f"'{socket_dir}'",
        "max_connections": "300",
        "fsync": "off",
        "synchronous_commit": "off",
        "full_page_writes": "off",
    }
    with (data / "postgresql.conf").open("a") as conf:
        conf.write("\n# tests/engines.py\n")
        conf.writelines(f"{name} = {value}\n" for name, value in settings.items())


def _start_postgres(bin_dir: Path, data: Path, log: Path, password: str) -> PostgresServer:
    for _ in range(PORT_ATTEMPTS):
        port = free_port()
        started = subprocess.run(
            _as_owner(
                [
                    str(bin_dir / "pg_ctl"),
                    "start",
                    f"--pgdata={data}",
                    f"--log={log}",
                    "--wait",
                    f"--timeout={STARTUP_SECONDS}",
                    "--silent",
                    f"--options=-p {port}",
                ]
            ),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
        )
        if started.returncode == 0:
            server = PostgresServer(port=port, password=password)
            _wait_for_postgres(server)
            return server
        text = log.read_text(errors="replace") if log.exists() else ""
        if "could not bind" not in text and "already in use" not in text:
            raise RuntimeError(f"PostgreSQL did not start: {started.stdout}{started.stderr}\n{text[-4000:]}")
    raise RuntimeError(f"PostgreSQL found no free port in {PORT_ATTEMPTS} tries")


def _wait_for_postgres(server: PostgresServer) -> None:
    """pg_ctl waited for the server to be ready; this checks that our password gets us in."""
    deadline = time.monotonic() + STARTUP_SECONDS
    while True:
        try:
            with psycopg.connect(server.url(), connect_timeout=5) as connection:
                connection.execute("SELECT 1")
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _stop_postgres(bin_dir: Path, data: Path) -> None:
    pg_ctl = str(bin_dir / "pg_ctl")
    try:
        _run([pg_ctl, "stop", f"--pgdata={data}", "--mode=fast", "--wait", f"--timeout={STOP_SECONDS}"])
    except RuntimeError:
        _run([pg_ctl, "stop", f"--pgdata={data}", "--mode=immediate", "--wait"])


@pytest.fixture(scope="session", name="postgres_server")
def postgres_server_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    """One PostgreSQL for the whole test session, started when a test first asks for it."""
    try:
        postgres_bin()
        missing = None
    except ServiceMissing as error:
        missing = str(error)
    if missing is not None:
        pytest.fail(missing, pytrace=False)
    with postgres_server(tmp_path_factory.mktemp("postgres")) as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A new, empty database for this test alone: postgresql://naive:…@127.0.0.1:PORT/test_…"""
    name = f"test_{uuid.uuid4().hex[:16]}"
    url = postgres_server.create_database(name)
    yield url
    postgres_server.drop_database(name)


# --- Load balancers ---------------------------------------------------------------------------


@contextmanager
def balancer(kind: BalancerKind, upstream_ports: Sequence[int], tmp: Path) -> Iterator[str]:
    """nginx or haproxy, in the foreground, in front of `upstream_ports` on 127.0.0.1.

    Its configuration is deploy/nginx.conf or deploy/haproxy.cfg with only the listen address,
    the upstream servers and file paths (pid, logs, temp dirs, all in `tmp`) changed. Yields
    `http://127.0.0.1:PORT` once GET /health answers 200 through it, so at least one upstream must
    be up by then. At exit it is stopped (SIGTERM, SIGKILL if it lingers); its log is in `tmp`.
    """
    if not upstream_ports:
        raise ValueError("a balancer needs at least one upstream port")
    program = _program(kind)
    tmp.mkdir(parents=True, exist_ok=True)
    for _ in range(PORT_ATTEMPTS):
        port = free_port()
        process, logs = _start_balancer(kind, program, port, upstream_ports, tmp)
        try:
            url = f"http://127.0.0.1:{port}"
            _wait_until_answering(url, process, logs)
            break
        except _AddressInUse:
            _stop(process)
        except BaseException:
            _stop(process)
            raise
    else:
        raise RuntimeError(f"{kind} found no free port in {PORT_ATTEMPTS} tries")
    try:
        yield url
    finally:
        _stop(process)


def _program(kind: BalancerKind) -> str:
    found = shutil.which(kind) or shutil.which(kind, path="/usr/sbin:/usr/local/sbin")
    if found is None:
        raise ServiceMissing(kind)
    return found


def _start_balancer(
    kind: BalancerKind, program: str, port: int, upstream_ports: Sequence[int], tmp: Path
) -> tuple[subprocess.Popen[bytes], list[Path]]:
    """Start it; returns the process and where it logs."""
    output = tmp / f"{kind}.out"  # its stdout and stderr
    if kind == "nginx":
        config = tmp / "nginx.conf"
        config.write_text(nginx_config(port, upstream_ports, tmp))
        # -e: where errors go before the configuration's own error_log is open: the same file.
        (error_log,) = re.findall(r"^[ \t]*error_log[ \t]+([^\s;]+)", config.read_text(), flags=re.MULTILINE)
        command = [program, "-e", error_log, "-p", str(tmp), "-c", str(config), "-g", "daemon off;"]
        logs = [output, Path(error_log)]
        Path(error_log).unlink(missing_ok=True)  # from an attempt that found its port taken
    else:
        config = tmp / "haproxy.cfg"
        config.write_text(haproxy_config(port, upstream_ports, tmp))
        command = [program, "-db", "-f", str(config)]  # -db: in the foreground; it logs to stdout
        logs = [output]
    with output.open("wb") as out:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    return process, logs


def _wait_until_answering(url: str, process: subprocess.Popen[bytes], logs: list[Path]) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    with httpx2.Client(timeout=5) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                text = "".join(log.read_text(errors="replace") for log in logs if log.exists())
                if "already in use" in text:
                    raise _AddressInUse(text)
                raise RuntimeError(f"{process.args!r} exited with status {process.returncode}:\n{text}")
            try:
                if client.get(f"{url}/health").status_code == 200:
                    return
            except httpx2.TransportError:
                pass
            time.sleep(0.05)
    shown = ", ".join(map(str, logs))
    raise RuntimeError(f"{url}/health did not answer 200 within {STARTUP_SECONDS} s (logs: {shown})")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def nginx_config(port: int, upstream_ports: Sequence[int], tmp: Path) -> str:
    """deploy/nginx.conf, listening on 127.0.0.1:`port`, with its files in `tmp`."""
    text = (DEPLOY / "nginx.conf").read_text()
    text = _replace_servers(
        text, r"^([ \t]*)server[ \t]+\S+:\d+([^;\n]*);", lambda _, p: f"server 127.0.0.1:{p}", upstream_ports
    )
    text = _substitute(text, r"^([ \t]*listen[ \t]+)[^;\s]+", rf"\g<1>127.0.0.1:{port}", count=1)
    for directive, count in [("pid", 1), ("error_log", 1), ("access_log", 1), (r"\w+_temp_path", 5)]:
        text = _relocate(text, directive, tmp / "nginx", count)
    return text


def haproxy_config(port: int, upstream_ports: Sequence[int], tmp: Path) -> str:
    """deploy/haproxy.cfg, listening on 127.0.0.1:`port`, logging to stdout, its pid file in `tmp`."""
    text = (DEPLOY / "haproxy.cfg").read_text()
    text = _replace_servers(
        text,
        r"^([ \t]*)server[ \t]+\S+[ \t]+\S+:\d+([^\n]*)",
        lambda i, p: f"server replica{i} 127.0.0.1:{p}",
        upstream_ports,
    )
    text = _substitute(text, r"^([ \t]*bind[ \t]+)\S+", rf"\g<1>127.0.0.1:{port}", count=1)
    text = _substitute(text, r"^([ \t]*log[ \t]+)/\S+", r"\g<1>stdout format raw", count=1)
    text = _relocate(text, "pidfile", tmp / "haproxy", 1)
    if os.geteuid() != 0:  # only root may chroot and change user; then it runs as we do
        text = _substitute(text, r"^[ \t]*(user|group|chroot)[ \t][^\n]*\n", "", count=3)
    return text


def _substitute(text: str, pattern: str, replacement: str, count: int) -> str:
    """Replace `pattern` (per line), which must match exactly `count` times."""
    new, matched = re.subn(pattern, replacement, text, flags=re.MULTILINE)
    if matched != count:
        raise AssertionError(
            f"expected {count} line(s) matching {pattern!r} in the shipped config, found {matched}"
        )
    return new


def _relocate(text: str, directive: str, directory: Path, count: int) -> str:
    """Move the absolute path a `directive` names into `directory`, keeping its file name."""
    directory.mkdir(parents=True, exist_ok=True)

    def moved(match: re.Match[str]) -> str:
        return f"{match[1]}{directory / Path(match[2]).name}"

    pattern = rf"^([ \t]*(?:{directive})[ \t]+)(/[^\s;]+)"
    new, matched = re.subn(pattern, moved, text, flags=re.MULTILINE)
    if matched != count:
        raise AssertionError(f"expected {count} {directive} line(s) in the shipped config, found {matched}")
    return new


def _replace_servers(text: str, pattern: str, server: Callable[[int, int], str], ports: Sequence[int]) -> str:
    """Replace the (consecutive) upstream server lines by one per port, each keeping the first
    line's indentation and parameters."""
    matches = list(re.finditer(pattern, text, flags=re.MULTILINE))
    if not matches:
        raise AssertionError(f"no upstream server lines matching {pattern!r} in the shipped config")
    first, last = matches[0], matches[-1]
    between = text[first.start() : last.end()]
    if len(between.splitlines()) != len(matches):
        raise AssertionError("the shipped config's upstream server lines must be consecutive")
    indent, parameters = first[1], first[2]
    terminator = ";" if first[0].rstrip().endswith(";") else ""
    lines = [f"{indent}{server(i, port)}{parameters}{terminator}" for i, port in enumerate(ports, 1)]
    return text[: first.start()] + "\n".join(lines) + text[last.end() :]
