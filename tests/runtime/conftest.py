"""The store fixtures of tests/storage (a SQLite store, and Postgres where available, with an
iteration to run stages in) for the stage runner's tests."""

from tests.storage.conftest import db_url, iteration, pg_skip_reason, pg_url, store  # noqa: F401 - fixtures
