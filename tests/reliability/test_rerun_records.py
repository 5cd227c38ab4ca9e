"""Re-running a stage of an iteration under a new key (a resume with a changed config, or outputs
found altered) keeps the record of the old outputs and never mixes old and new outputs."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from selfrefine.runtime.runner import run_stage
from selfrefine.runtime.stage import Stage
from selfrefine.storage import repository as repo
from selfrefine.storage.artifacts import ArtifactStore
from selfrefine.storage.doctor import run_checks
from selfrefine.storage.engine import Store
from selfrefine.storage.schema import Artifact, ArtifactEdge, EdgeKind, StageRun, StageStatus
from tests.storage.conftest import db_url, iteration, pg_skip_reason, pg_url, store  # noqa: F401 - fixtures
from tests.storage.stagefns import CountConfig, write_text



def text_of(store: Store, outcome) -> str:
    with store.session() as s:
        art = s.get_one(Artifact, outcome.outputs["data"])
    return ArtifactStore().local_path(art.uri).read_text()


def write(store, iteration, text: str):
    return run_stage(Stage("write", "1", CountConfig, write_text), CountConfig(text=text), {},
                     iteration_id=iteration.id, store=store)


def test_a_new_key_gets_a_new_row_and_the_old_outputs_keep_their_record(store, iteration):
    old = write(store, iteration, "old")
    new = write(store, iteration, "new")
    assert new.stage_run_id != old.stage_run_id and text_of(store, new) == "newnew"
    with store.session() as s:
        current = repo.stage_run_for(s, iteration.id, "write")
        assert current.id == new.stage_run_id and current.attempt == 2
        assert {r: a.id for r, a in repo.stage_outputs(s, current).items()} == new.outputs
        kept = s.get_one(StageRun, old.stage_run_id)
        assert (kept.status, kept.iteration_id, kept.stage_key) == (StageStatus.completed, None, old.stage_key)
        makes = s.scalars(select(ArtifactEdge.artifact_id).where(
            ArtifactEdge.stage_run_id == old.stage_run_id, ArtifactEdge.kind == EdgeKind.makes)).all()
        assert makes == [old.outputs["data"]]
    # Reuse by either key hands out that key's own outputs.
    assert text_of(store, write(store, iteration, "new")) == "newnew"
    again_old = write(store, iteration, "old")
    assert again_old.status == "reused" and text_of(store, again_old) == "oldold"
    assert run_checks(store, ArtifactStore()) == []


def test_recomputing_altered_outputs_keeps_the_invalidated_record(store, iteration):
    first = write(store, iteration, "x")
    artifacts = ArtifactStore()
    with store.session() as s:
        path = artifacts.local_path(s.get_one(Artifact, first.outputs["data"]).uri)
    path.chmod(0o644)
    path.write_text("tampered")
    again = write(store, iteration, "x")
    assert again.status == "ran" and again.stage_run_id != first.stage_run_id
    with store.session() as s:
        assert s.get_one(StageRun, first.stage_run_id).status == StageStatus.invalidated
        current = repo.stage_run_for(s, iteration.id, "write")
        assert current.id == again.stage_run_id
        assert len(repo.edges_of(s, current.id, EdgeKind.makes)) == 1
    # Identical bytes were stored again, so the old record verifies too.
    assert text_of(store, again) == "xx" and run_checks(store, artifacts) == []
