"""A store's SQLAlchemy engine, and its schema migrated forward.

SQLite runs in WAL mode (readers never wait for the writer) with `synchronous=NORMAL` (a commit
survives the process dying; only a power cut may lose the newest ones), and every transaction
takes the write lock at BEGIN (`BEGIN IMMEDIATE`), so two processes reserving at once queue
instead of failing on a lock upgrade.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, inspect, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import StaticPool

from naive_mcp.errors import ConfigurationError
from naive_mcp.store.location import StoreLocation

logger = logging.getLogger(__name__)

# The schema this code reads and writes: the newest revision under migrations/versions.
SCHEMA_REVISION = "0003"
_MIGRATIONS = Path(__file__).with_name("migrations")
# A process waits this long for another's write transaction before giving up (seconds).
_SQLITE_BUSY_SECONDS = 30
# Serialises concurrent migrations of one PostgreSQL database (any constant will do; ours).
_MIGRATION_LOCK = 0x6E61697665  # "naive"


def create_store_engine(
    location: StoreLocation, *, pool_size: int = 10, busy_seconds: float = _SQLITE_BUSY_SECONDS
) -> Engine:
    """`busy_seconds`: how long a SQLite connection waits for another's write lock (0: not at all)."""
    if location.kind == "postgresql":
        return create_engine(location.url, pool_size=pool_size, max_overflow=0, pool_pre_ping=True)
    if location.kind == "memory":
        template = _MEMORY_TEMPLATE.ready(location)
        engine = create_engine(location.url, poolclass=StaticPool, creator=template.copy)
    else:
        path = Path(location.shown)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigurationError(
                f"cannot create the store's directory {path.parent}: {exc.strerror}. Set NAIVE_STORE to a "
                "writable path.",
                kind="bad_store",
            ) from exc
        engine = create_engine(
            location.url, connect_args={"check_same_thread": False, "timeout": busy_seconds}
        )
    _sqlite_transactions(engine, wal=location.kind == "sqlite", busy_seconds=busy_seconds)
    return engine


def _sqlite_transactions(engine: Engine, *, wal: bool, busy_seconds: float = _SQLITE_BUSY_SECONDS) -> None:
    """pysqlite's own transaction handling is off (it begins late and lazily); ours begins every
    transaction with the write lock (SQLAlchemy's documented recipe for pysqlite)."""

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: object) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        if wal:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_seconds * 1000)}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        # On the DBAPI connection: through exec_driver_sql it cost ~9 µs more, on each of a
        # call's three transactions. (A lock it cannot get raises sqlite3's OperationalError.)
        dbapi = connection.connection.dbapi_connection
        assert dbapi is not None, "a connection beginning a transaction has its DBAPI connection"
        dbapi.cursor().execute("BEGIN IMMEDIATE")


# Alembic keeps its context in module globals: two stores migrating at once in one process
# (each on a worker thread) would share it and collide.
_MIGRATING = threading.Lock()


def migrate(engine: Engine, location: StoreLocation) -> None:
    """Bring the schema to SCHEMA_REVISION, in one transaction that one process at a time runs;
    refuse a store that a newer naive-mcp has migrated past what this code knows."""
    try:
        with _MIGRATING, engine.begin() as connection:
            if engine.dialect.name == "postgresql":
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
            current = _revision(connection)
            if current != SCHEMA_REVISION:
                _upgrade(connection, current, location)
    except SQLAlchemyError as exc:
        raise ConfigurationError(
            f"cannot open the store at {location.shown}: {_reason(exc)}", kind="bad_store"
        ) from exc


def _revision(connection: Connection) -> str | None:
    if not inspect(connection).has_table("alembic_version"):
        return None
    row = connection.execute(text("SELECT version_num FROM alembic_version")).first()
    return None if row is None else str(row[0])


def _upgrade(connection: Connection, current: str | None, location: StoreLocation) -> None:
    # Alembic is imported only when there is something to migrate: most starts have nothing to do.
    from alembic import command
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    config.attributes["connection"] = connection
    known = {script.revision for script in ScriptDirectory.from_config(config).walk_revisions()}
    if current is not None and current not in known:
        raise ConfigurationError(
            f"the store at {location.shown} has schema revision {current}, newer than this naive-mcp knows "
            f"(up to {SCHEMA_REVISION}): upgrade naive-mcp, or point NAIVE_STORE at another store.",
            kind="store_too_new",
        )
    logger.info(
        "migrating the store at %s from %s to %s", location.shown, current or "empty", SCHEMA_REVISION
    )
    command.upgrade(config, SCHEMA_REVISION)


class _MemoryTemplate:
    """An empty store migrated (by alembic, as every store is) once per process, which each memory
    store starts as a copy of: the same schema, and a test or throwaway run pays for no migration."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._database: sqlite3.Connection | None = None

    def ready(self, location: StoreLocation) -> _MemoryTemplate:
        """Migrate it now (once): not while a store's own migration holds the migration lock."""
        with self._lock:
            if self._database is None:
                database = sqlite3.connect(":memory:", check_same_thread=False)
                engine = create_engine(location.url, poolclass=StaticPool, creator=lambda: database)
                _sqlite_transactions(engine, wal=False)
                migrate(engine, location)
                self._database = database
        return self

    def copy(self) -> sqlite3.Connection:
        copy = sqlite3.connect(":memory:", check_same_thread=False)
        with self._lock:
            assert self._database is not None, "ready() first"
            self._database.backup(copy)
        return copy


_MEMORY_TEMPLATE = _MemoryTemplate()


def _reason(exc: SQLAlchemyError) -> str:
    original = getattr(exc, "orig", None)
    return str(original or exc).strip().splitlines()[0]
