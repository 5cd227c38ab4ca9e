"""The stage runner: keys, reuse, recompute, failure records, stale takeover, crash safety."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import BaseModel, Field
from sqlalchemy import func, select

from selfrefine.errors import ArtifactIntegrityError, LeaseHeldError, NotFoundError
from selfrefine.models.training.reward_config import RewardRecipeConfig
from selfrefine.runtime.keys import output_affecting
from selfrefine.runtime.runner import run_stage
from selfrefine.runtime.stage import Stage
from selfrefine.storage import repository as repo
from selfrefine.storage.artifacts import ArtifactStore
from selfrefine.storage.engine import Store
from selfrefine.storage.schema import Artifact, ArtifactEdge, EdgeKind, Metric, StageRun, StageStatus, utcnow
from tests.storage import stagefns
from tests.storage.stagefns import CountConfig, upper_dir, write_text

REPO = Path(__file__).resolve().parents[2]



@pytest.fixture(autouse=True)
def _reset_calls():
    stagefns.CALLS.clear()


def _two_stages(store, iteration_id, cfg=None):
    a = run_stage(Stage("write", "1", CountConfig, write_text), cfg or CountConfig(), {},
                  iteration_id=iteration_id, store=store)
    b = run_stage(Stage("upper", "1", CountConfig, upper_dir), CountConfig(), {"data": a.outputs["data"]},
                  iteration_id=iteration_id, store=store)
    return a, b


def test_outputs_edges_and_metrics_are_registered(store, iteration):
    a, b = _two_stages(store, iteration.id)
    assert (a.status, b.status) == ("ran", "ran")
    with store.session() as s:
        sr = s.get_one(StageRun, b.stage_run_id)
        assert sr.status == StageStatus.completed and sr.attempt == 1
        assert sr.versions["torch"] and sr.host and sr.pid
        assert {r: x.id for r, x in repo.stage_inputs(s, sr).items()} == {"data": a.outputs["data"]}
        model = s.get_one(Artifact, b.outputs["model"])
        assert model.is_dir and model.stage_run_id == sr.id and len(model.sha256) == 64
        metrics = {m.name: m for m in s.scalars(select(Metric).where(Metric.stage_run_id == a.stage_run_id))}
        assert set(metrics) == {"chars", "stage_function_seconds"}
        assert (metrics["chars"].value, metrics["chars"].labels) == (10.0, {"part": "all"})
        assert metrics["stage_function_seconds"].value >= 0


def test_completed_stage_is_reused_without_calling_the_function(store, iteration):
    first = _two_stages(store, iteration.id)
    stagefns.CALLS.clear()
    again = _two_stages(store, iteration.id)
    assert stagefns.CALLS == []
    assert [o.status for o in again] == ["reused", "reused"]
    assert [o.outputs for o in again] == [o.outputs for o in first]


def test_reuse_across_iterations_is_recorded_as_reused_rows(store, iteration):
    first, _ = _two_stages(store, iteration.id)
    with store.session() as s:
        it2 = repo.get_or_create_iteration(s, iteration.run_id, 2)
    second, _ = _two_stages(store, it2.id)
    assert stagefns.CALLS == ["write", "upper"]
    with store.session() as s:
        row = s.get_one(StageRun, second.stage_run_id)
        assert row.status == StageStatus.reused and row.reused_from_id == first.stage_run_id
        assert repo.stage_outputs(s, row)["data"].id == first.outputs["data"]


def test_changing_an_output_affecting_field_recomputes_but_speed_fields_do_not(store, iteration):
    a, _ = _two_stages(store, iteration.id)
    stagefns.CALLS.clear()
    same = run_stage(Stage("write", "1", CountConfig, write_text), CountConfig(batch_size=64), {},
                     iteration_id=iteration.id, store=store)
    assert same.status == "reused" and stagefns.CALLS == []
    changed = run_stage(Stage("write", "1", CountConfig, write_text), CountConfig(repeat=3), {},
                        iteration_id=iteration.id, store=store)
    assert changed.status == "ran" and changed.stage_key != a.stage_key
    bumped = run_stage(Stage("write", "2", CountConfig, write_text), CountConfig(repeat=3), {},
                       iteration_id=iteration.id, store=store)
    assert bumped.status == "ran"
    with store.session() as s:  # retries in one iteration update one row
        assert s.get_one(StageRun, bumped.stage_run_id).attempt == 3


def test_altered_artifact_is_detected_and_the_stage_recomputes(store, iteration):
    a, _ = _two_stages(store, iteration.id)
    arts = ArtifactStore()
    with store.session() as s:
        art = s.get_one(Artifact, a.outputs["data"])
    path = arts.local_path(art.uri)
    path.chmod(0o644)
    path.write_text("tampered")
    with pytest.raises(ArtifactIntegrityError, match="altered"):
        arts.verify(art.uri, art.sha256)
    stagefns.CALLS.clear()
    again = run_stage(Stage("write", "1", CountConfig, write_text), CountConfig(), {},
                      iteration_id=iteration.id, store=store)
    assert again.status == "ran" and stagefns.CALLS == ["write"]
    with store.session() as s:
        statuses = {r.status for r in s.scalars(select(StageRun).where(StageRun.stage_key == a.stage_key))}
        assert StageStatus.completed in statuses
    # The recomputed bytes are identical, so the restored object verifies again.
    with store.session() as s:
        new = s.get_one(Artifact, again.outputs["data"])
    arts.verify(new.uri, new.sha256)


def test_failure_is_recorded_and_a_retry_counts_the_attempt(store, iteration):
    with pytest.raises(ValueError, match="boom"):
        run_stage(Stage("write", "1", CountConfig, stagefns.fail), CountConfig(), {},
                  iteration_id=iteration.id, store=store)
    with store.session() as s:
        row = repo.stage_run_for(s, iteration.id, "write")
        assert row.status == StageStatus.failed and "boom in stage" in row.error
        assert s.scalar(select(func.count()).select_from(Artifact)) == 0
    ok = run_stage(Stage("write", "1", CountConfig, write_text), CountConfig(), {},
                   iteration_id=iteration.id, store=store)
    with store.session() as s:
        row = s.get_one(StageRun, ok.stage_run_id)
        assert row.status == StageStatus.completed and row.attempt == 2 and row.error is None


def test_unknown_input_fails_before_any_row_is_written(store, iteration):
    import uuid

    with pytest.raises(NotFoundError, match="input 'data'"):
        run_stage(Stage("upper", "1", CountConfig, upper_dir), CountConfig(), {"data": uuid.uuid4()},
                  iteration_id=iteration.id, store=store)
    with store.session() as s:
        assert s.scalar(select(func.count()).select_from(StageRun)) == 0


def test_running_row_of_a_live_process_is_not_taken_over(store, iteration):
    import os

    with store.session() as s:
        s.add(StageRun(iteration_id=iteration.id, stage="write", stage_key="x" * 64,
                       status=StageStatus.running, attempt=1, code_version="1",
                       host=__import__("socket").gethostname(), pid=os.getppid(), heartbeat_at=utcnow()))
    with pytest.raises(LeaseHeldError, match="running in process"):
        run_stage(Stage("write", "1", CountConfig, write_text), CountConfig(), {},
                  iteration_id=iteration.id, store=store)


def test_stale_running_row_from_another_host_is_retried(store, iteration):
    with store.session() as s:
        s.add(StageRun(iteration_id=iteration.id, stage="write", stage_key="x" * 64,
                       status=StageStatus.running, attempt=1, code_version="1", host="gone-host",
                       pid=1, heartbeat_at=utcnow() - timedelta(hours=1)))
    out = run_stage(Stage("write", "1", CountConfig, write_text), CountConfig(), {},
                    iteration_id=iteration.id, store=store)
    with store.session() as s:
        row = s.get_one(StageRun, out.stage_run_id)
        assert row.status == StageStatus.completed and row.attempt == 2


def _consistent(store: Store) -> None:
    """Every registered artifact has its bytes and digest; every made artifact has one maker."""
    arts = ArtifactStore()
    with store.session() as s:
        for art in s.scalars(select(Artifact)):
            arts.verify(art.uri, art.sha256)
            makers = s.scalars(select(ArtifactEdge).where(ArtifactEdge.artifact_id == art.id,
                                                          ArtifactEdge.kind == EdgeKind.makes)).all()
            assert [m.stage_run_id for m in makers] == [art.stage_run_id]


def test_sigkill_while_writing_an_artifact_leaves_the_store_consistent(store, iteration, db_url):
    proc = subprocess.run([sys.executable, "-m", "tests.storage.stagefns", "kill-mid-write", db_url,
                           str(iteration.id)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr
    with store.session() as s:
        row = repo.stage_run_for(s, iteration.id, "writer")
        assert row.status == StageStatus.running  # left behind by the dead process
        assert s.scalar(select(func.count()).select_from(Artifact)) == 0
    _consistent(store)
    # The dead process's row is stale: a new attempt takes it over and completes.
    out = run_stage(Stage("writer", "1", CountConfig, write_text), CountConfig(), {},
                    iteration_id=iteration.id, store=store)
    with store.session() as s:
        assert s.get_one(StageRun, out.stage_run_id).attempt == 2
    _consistent(store)


def test_sigkill_between_storing_and_registering_registers_nothing(store, iteration, db_url, monkeypatch):
    env = {"SELFREFINE_FAULT": "stage:before_register:kill"}
    script = ("import sys, uuid; from tests.storage.stagefns import *; "
              "from selfrefine.storage.engine import Store; "
              "run_stage(Stage('stage', '1', CountConfig, write_text), CountConfig(), {}, "
              "iteration_id=uuid.UUID(sys.argv[2]), store=Store(sys.argv[1], migrate=False))")
    import os
    proc = subprocess.run([sys.executable, "-c", script, db_url, str(iteration.id)], cwd=REPO,
                          env={**os.environ, **env}, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr
    with store.session() as s:
        assert s.scalar(select(func.count()).select_from(Artifact)) == 0
    _consistent(store)


def test_two_processes_writing_stage_runs_concurrently_lose_nothing(store, db_url):
    with store.session() as s:
        runs = [repo.create_run(s, name=f"p{i}", n_iterations=20, config={}, config_digest="d")
                for i in range(2)]
    procs = [subprocess.Popen([sys.executable, "-m", "tests.storage.stagefns", "many", db_url,
                               str(run.id), "20", f"proc{i}"], cwd=REPO, stderr=subprocess.PIPE, text=True)
             for i, run in enumerate(runs)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    with store.session() as s:
        completed = s.scalars(select(StageRun).where(StageRun.status == StageStatus.completed)).all()
        assert len(completed) == 40
        assert s.scalar(select(func.count()).select_from(Artifact)) == 40
    _consistent(store)


def test_a_field_added_at_a_neutral_default_leaves_existing_keys_as_they_were():
    class Before(BaseModel):
        repeat: int = 2

    class After(Before):
        scale: float = Field(0.0, json_schema_extra={"key_omits_default": True})

    assert output_affecting(After()) == output_affecting(Before())  # recorded runs keep their keys
    assert output_affecting(After(scale=2.0)) == {"repeat": 2, "scale": 2.0}  # a change still recomputes
    recipe = RewardRecipeConfig()
    assert "margin_per_gap" not in output_affecting(recipe)
    assert output_affecting(recipe.model_copy(update={"margin_per_gap": 2.0}))["margin_per_gap"] == 2.0
