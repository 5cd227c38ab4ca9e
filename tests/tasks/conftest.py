"""Fixtures for the stage tests: a SQLite store and artifact store per test, fixture data files,
and row counts to show that bad input leaves the store untouched."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select

from selfrefine.storage.artifacts import ArtifactStore
from selfrefine.storage.engine import Store
from selfrefine.storage.schema import Artifact, ArtifactEdge, Iteration, Metric, Run, StageRun

FIXTURES = Path(__file__).resolve().parent / "fixtures"
# Every table a stage or a run writes to.
STORE_TABLES = (Run, Iteration, StageRun, Artifact, ArtifactEdge, Metric)


def row_counts(store: Store) -> dict[str, int]:
    """Rows per table of the store, by table name."""
    with store.session() as s:
        return {t.__tablename__: s.scalar(select(func.count()).select_from(t)) for t in STORE_TABLES}


def stored_paths(artifacts: ArtifactStore) -> list[str]:
    """Every object and staging entry under a local artifact root."""
    return sorted(artifacts.stored_keys()) + artifacts.staging_paths()


@pytest.fixture
def fixtures_dir() -> Path:
    return FIXTURES


@pytest.fixture
def store(selfrefine_home) -> Store:
    """A fresh SQLite store in this test's SELFREFINE_HOME."""
    s = Store(f"sqlite:///{selfrefine_home / 'store.db'}")
    yield s
    s.dispose()


@pytest.fixture
def artifacts(selfrefine_home) -> ArtifactStore:
    return ArtifactStore(str(selfrefine_home / "artifacts"))
