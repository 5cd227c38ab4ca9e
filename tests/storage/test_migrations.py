"""Alembic owns the schema: one head, reversible with data present, and in step with the models."""

from __future__ import annotations

import uuid

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import func, select

from selfrefine.storage import migrations
from selfrefine.storage import repository as repo
from selfrefine.storage.engine import Store, create_store_engine
from selfrefine.storage.schema import Base, Run, StageRun, StageStatus


def test_there_is_exactly_one_head():
    heads = ScriptDirectory.from_config(migrations.alembic_config()).get_heads()
    assert len(heads) == 1


def test_models_match_migrations(db_url):
    engine = create_store_engine(db_url)
    migrations.upgrade(engine)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    assert diff == []


def test_upgrade_downgrade_upgrade_with_rows(db_url):
    store = Store(db_url, migrate=True)
    with store.session() as s:
        run = repo.create_run(s, name="kept", n_iterations=2, config={"a": 1}, config_digest="d")
        it = repo.get_or_create_iteration(s, run.id, 1)
        s.add(StageRun(iteration_id=it.id, stage="train_judge", stage_key="k" * 64,
                       status=StageStatus.completed, code_version="1"))
    migrations.downgrade(store.engine, "base")
    assert set(store.table_names()) <= {"alembic_version"}
    migrations.upgrade(store.engine)
    assert migrations.current_revision(store.engine) == migrations.head_revision()
    # The schema is back and usable: rows can be written again.
    with store.session() as s:
        repo.create_run(s, name="again", n_iterations=1, config={}, config_digest="d")
        assert s.scalar(select(func.count()).select_from(Run)) == 1
    store.dispose()


def test_shared_databases_must_be_migrated_explicitly(db_url):
    from selfrefine.errors import StoreError
    import pytest

    engine = create_store_engine(db_url)
    if engine.dialect.name == "sqlite":
        Store(db_url)  # the embedded default migrates itself
        assert migrations.current_revision(engine) == migrations.head_revision()
    else:
        with pytest.raises(StoreError, match="selfrefine db upgrade"):
            Store(db_url)
        migrations.upgrade(engine)
        Store(db_url)


def test_completed_stage_key_is_unique(db_url):
    import pytest
    from sqlalchemy.exc import IntegrityError

    store = Store(db_url, migrate=True)
    key = uuid.uuid4().hex * 2
    with store.session() as s:
        s.add(StageRun(stage="a", stage_key=key, status=StageStatus.completed, code_version="1"))
        # Failed attempts and reuses may share the key.
        s.add(StageRun(stage="a", stage_key=key, status=StageStatus.failed, code_version="1"))
    with pytest.raises(IntegrityError):
        with store.session() as s:
            s.add(StageRun(stage="a", stage_key=key, status=StageStatus.completed, code_version="1"))
    store.dispose()
