"""Which store a `NAIVE_STORE` value names (no SQLAlchemy here: it is imported only when the
store is opened, so a server that only lists its tools never pays for it).

- unset: a SQLite file in the user's data directory, shared by every process of that user;
- a path (or `sqlite:///path`): that SQLite file;
- `memory`: SQLite in this process only (tests, throwaway runs);
- `postgresql://…` (or `postgres://…`): PostgreSQL, for replicas on several hosts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import platformdirs

from naive_mcp.errors import ConfigurationError

STORE_FILE = "store.sqlite3"

Engine_ = Literal["memory", "sqlite", "postgresql"]
# Connection parameters that carry a secret when given in the URL's query.
_SECRET_PARAMETERS = frozenset({"password", "sslpassword"})


@dataclass(frozen=True)
class StoreLocation:
    """Where the state lives, parsed from NAIVE_STORE."""

    kind: Engine_
    url: str  # SQLAlchemy URL, password included: never shown
    shown: str  # for messages and logs: no password

    @classmethod
    def parse(cls, value: str | None) -> StoreLocation:
        if value is None or not value.strip():
            path = Path(platformdirs.user_data_dir("naive-mcp", appauthor=False)) / STORE_FILE
            return cls._sqlite(path)
        value = value.strip()
        if value == "memory":
            return cls("memory", "sqlite+pysqlite://", "memory")
        if value.startswith(("postgresql://", "postgres://", "postgresql+psycopg://")):
            from sqlalchemy.engine import make_url  # only for PostgreSQL: SQLAlchemy loads late

            try:
                url = make_url(value).set(drivername="postgresql+psycopg")
            except Exception as exc:  # sqlalchemy raises ArgumentError, ValueError
                raise ConfigurationError(
                    "NAIVE_STORE is not a valid PostgreSQL URL: postgresql://HOST:5432/DB, with the user "
                    "and password before the host as USER:PASSWORD@HOST",
                    kind="bad_store",
                ) from exc
            # A password may also come as a query parameter (libpq's `?password=`): never shown.
            query = {k: ("***" if k.lower() in _SECRET_PARAMETERS else v) for k, v in url.query.items()}
            return cls(
                "postgresql",
                url.render_as_string(hide_password=False),
                url.set(query=query).render_as_string(hide_password=True),
            )
        if value.startswith("sqlite:///"):
            return cls._sqlite(Path(value.removeprefix("sqlite:///")))
        if "://" in value:
            raise ConfigurationError(
                f"NAIVE_STORE names an unknown kind of store ({value.split('://', 1)[0]}://): use a file "
                "path, `memory`, or postgresql://HOST/DB (with USER:PASSWORD@ before the host)",
                kind="bad_store",
            )
        return cls._sqlite(Path(value))

    @classmethod
    def _sqlite(cls, path: Path) -> StoreLocation:
        path = path.expanduser().absolute()
        return cls("sqlite", f"sqlite+pysqlite:///{path}", str(path))

    @property
    def secrets(self) -> list[str]:
        """The password(s) in the URL, as written and as decoded: values never to show."""
        if self.kind != "postgresql":
            return []
        from urllib.parse import quote

        from sqlalchemy.engine import make_url

        url = make_url(self.url)
        found = [str(url.password)] if url.password is not None else []
        for name, value in url.query.items():
            if name.lower() in _SECRET_PARAMETERS:
                found += [value] if isinstance(value, str) else list(value)
        return sorted({form for secret in found if secret for form in (secret, quote(secret, safe=""))})

    @property
    def password(self) -> str | None:
        if self.kind != "postgresql":
            return None
        from sqlalchemy.engine import make_url

        password = make_url(self.url).password
        return None if password is None else str(password)
