"""Engine and sessions for the store: SQLite by default (WAL, busy timeout), any SQLAlchemy URL.

The schema is owned by Alembic. The embedded SQLite default migrates itself on open (one user,
one file); shared databases (PostgreSQL) must be migrated explicitly with `selfrefine db upgrade`
so that several workers never race to change the schema.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Iterator

from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from selfrefine import settings
from selfrefine.errors import StoreError

SQLITE_BUSY_TIMEOUT_S = 60
# Names a Prefect Secret block holding the store URL, so that a password need not sit in a
# deployment's or worker's environment (used when SELFREFINE_DB_URL is not set).
DB_URL_SECRET_ENV = "SELFREFINE_DB_URL_SECRET"


def store_url() -> str:
    """The store's URL: `$SELFREFINE_DB_URL`; else the value of the Prefect Secret block named by
    `$SELFREFINE_DB_URL_SECRET`; else the SQLite default under `$SELFREFINE_HOME`."""
    block = os.environ.get(DB_URL_SECRET_ENV)
    if os.environ.get("SELFREFINE_DB_URL") or not block:
        return settings.db_url()
    return _secret(block)


@lru_cache(maxsize=4)
def _secret(block: str) -> str:
    from prefect.blocks.system import Secret

    try:
        value = Secret.load(block).get()
    except Exception as exc:  # noqa: BLE001 - missing block, no API, no permission: one message
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StoreError(f"cannot read the store URL from the Prefect Secret block {block!r} "
                         f"({DB_URL_SECRET_ENV}): {reason}; create it (see README, 'On a cluster') "
                         "or set SELFREFINE_DB_URL") from None
    if not isinstance(value, str) or not value.strip():
        raise StoreError(f"the Prefect Secret block {block!r} ({DB_URL_SECRET_ENV}) must hold the "
                         "store URL as a string")
    return value.strip()


def redact_url(url: str) -> str:
    """The URL with any password replaced by ***, safe for logs and messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparseable database URL>"


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_S * 1000}")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA synchronous=NORMAL")
    # 64 MiB page cache: lineage queries walk large parts of the edge table.
    cur.execute("PRAGMA cache_size=-65536")
    cur.close()


def create_store_engine(url: str | None = None) -> Engine:
    """An engine for `url` (default `store_url()`); errors name the redacted URL."""
    url = url or store_url()
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise StoreError(f"invalid database URL {redact_url(url)!r}: {exc}; "
                         "set SELFREFINE_DB_URL to a SQLAlchemy URL such as "
                         "sqlite:////path/store.db or postgresql+psycopg://user@host/db") from None
    kwargs: dict = {}
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_S}
    else:
        kwargs["pool_pre_ping"] = True
    try:
        engine = create_engine(parsed, **kwargs)
    except (NoSuchModuleError, ImportError) as exc:
        raise StoreError(f"no database driver for {redact_url(url)!r} ({exc}); "
                         "install it, e.g. pip install 'selfrefine[postgres]'") from None
    if parsed.get_backend_name() == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
        # pysqlite's own transaction handling defers BEGIN; take the write lock up front instead
        # so two writers serialise on busy_timeout rather than failing on lock upgrade.
        event.listen(engine, "connect", lambda c, r: setattr(c, "isolation_level", None))
        event.listen(engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE"))
    return engine


def check_reachable(engine: Engine, url: str) -> None:
    try:
        with engine.connect():
            pass
    except OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise StoreError(f"cannot reach the database {redact_url(url)!r}: {reason}; "
                         "check SELFREFINE_DB_URL") from None


class Store:
    """An engine plus a session factory; the one handle repository functions receive sessions from."""

    def __init__(self, url: str | None = None, *, migrate: bool | None = None):
        self.url = url or store_url()
        self.engine = create_store_engine(self.url)
        check_reachable(self.engine, self.url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        is_sqlite = self.engine.dialect.name == "sqlite"
        from selfrefine.storage import migrations

        if migrate if migrate is not None else is_sqlite:
            migrations.upgrade(self.engine)
        else:
            migrations.require_head(self.engine)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session in one transaction: committed on success, rolled back on any error."""
        with self._sessions() as session, session.begin():
            yield session

    def table_names(self) -> list[str]:
        return inspect(self.engine).get_table_names()

    def dispose(self) -> None:
        self.engine.dispose()


@lru_cache(maxsize=8)
def _cached_store(url: str) -> Store:
    return Store(url)


def default_store() -> Store:
    """The store at `store_url()`, created once per process and URL."""
    return _cached_store(store_url())
