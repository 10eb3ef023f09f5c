"""Engines for the two supported databases, set up so that a commit is on disk when it returns.

SQLite (the embedded default) runs in WAL mode with synchronous=FULL: readers (the dashboard) never
block the line's writer, and a committed verdict survives a power cut or SIGKILL. PostgreSQL (a
plant's server) is durable by default; we only ask for psycopg 3.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from cellsight.errors import ConfigError

DEFAULT_URL = "sqlite:///runs/line/trace.db"


def normalise_url(url: str) -> str:
    """Accept plain `postgresql://` URLs and route them to psycopg 3 (the driver we install)."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def make_engine(url: str = DEFAULT_URL) -> Engine:
    """An engine for `url`; creates the SQLite file's folder. A URL that cannot be used is a `ConfigError`."""
    try:
        url = normalise_url(url)
    except ArgumentError as exc:
        raise ConfigError(f"{url}: not a database URL; use sqlite:///path or postgresql://...") from exc
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            folder = Path(parsed.database).parent
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ConfigError(f"{folder}: cannot create the database folder ({exc.strerror or exc})") from exc
        engine = create_engine(url, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if backend == "postgresql":
        return create_engine(url, pool_pre_ping=True)
    raise ConfigError(f"{url}: unsupported database {backend!r}; use sqlite:///path or postgresql://...")


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()
