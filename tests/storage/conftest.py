"""Store fixtures: every store test runs on SQLite and, where the server is there, PostgreSQL."""

from __future__ import annotations

import os
import uuid

import pytest
from sqlalchemy import create_engine, text

PG_ADMIN_URL = os.environ.get("SELFREFINE_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def _pg_available() -> str | None:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed"
    try:
        with create_engine(PG_ADMIN_URL).connect():
            return None
    except Exception as exc:  # noqa: BLE001 - any failure means: skip with the reason
        return f"PostgreSQL not reachable at {PG_ADMIN_URL}: {str(exc).splitlines()[0]}"


@pytest.fixture(scope="session")
def pg_skip_reason() -> str | None:
    return _pg_available()


@pytest.fixture
def pg_url(pg_skip_reason):
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    if pg_skip_reason:
        pytest.skip(pg_skip_reason)
    name = f"selfrefine_t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    yield url
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request, selfrefine_home, monkeypatch):
    """The store URL for one test, on each backend; also exported as SELFREFINE_DB_URL."""
    if request.param == "sqlite":
        url = f"sqlite:///{selfrefine_home / 'store.db'}"
    else:
        url = request.getfixturevalue("pg_url")
    monkeypatch.setenv("SELFREFINE_DB_URL", url)
    return url


@pytest.fixture
def store(db_url):
    """A migrated store on this test's backend."""
    from selfrefine.storage.engine import Store

    s = Store(db_url, migrate=True)
    yield s
    s.dispose()


@pytest.fixture
def iteration(store):
    """Iteration 1 of a fresh run in `store`."""
    from selfrefine.storage import repository as repo

    with store.session() as s:
        run = repo.create_run(s, name="test", n_iterations=2, config={}, config_digest="d")
        return repo.get_or_create_iteration(s, run.id, 1)
