"""End-to-end self-refine runs through a real Prefect server: lineage, Prefect ids, resume."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid

import pytest
from sqlalchemy import select

from selfrefine.runtime.registry import stage_names
from selfrefine.storage import repository as repo
from selfrefine.storage.engine import Store
from selfrefine.storage.lineage import lineage
from selfrefine.storage.schema import Artifact, Iteration, Run, RunStatus, StageRun, StageStatus
from tests.flows.conftest import REPO, run_ids, selfrefine, show
from tests.storage.conftest import pg_skip_reason, pg_url  # noqa: F401 - fixtures

# Every stage of a run with policy prompts but the report, which runs outside the iterations.
STAGES = [name for name in stage_names() if name != "report"]


def _stage_rows(store: Store, run_id: uuid.UUID) -> dict[tuple[int, str], StageRun]:
    with store.session() as s:
        rows = s.execute(select(Iteration.index, StageRun).join(Iteration, StageRun.iteration_id == Iteration.id)
                         .where(Iteration.run_id == run_id)).all()
        return {(index, sr.stage): sr for index, sr in rows}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=[pytest.mark.postgres, pytest.mark.slow])])
def run_db_url(request, selfrefine_home, monkeypatch):
    """Like `db_url`; the PostgreSQL run is `slow` (make test-slow) to keep `make test` in budget."""
    if request.param == "sqlite":
        url = f"sqlite:///{selfrefine_home / 'store.db'}"
    else:
        url = request.getfixturevalue("pg_url")
    monkeypatch.setenv("SELFREFINE_DB_URL", url)
    return url


def test_two_iterations_on_the_tiny_preset(prefect_api, run_db_url):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from selfrefine.flows.self_refine import self_refine
    from selfrefine.storage import migrations

    store = Store(run_db_url, migrate=True)
    migrations.require_head(store.engine)
    run_id = uuid.UUID(self_refine(preset="tiny", n_iterations=2))
    with store.session() as s:
        run = s.get_one(Run, run_id)
        assert run.status == RunStatus.completed and run.prefect_flow_run_id
        its = repo.iterations_of(s, run_id)
        assert [(i.index, i.status) for i in its] == [(1, RunStatus.completed), (2, RunStatus.completed)]
        assert all(i.prefect_flow_run_id for i in its)
    rows = _stage_rows(store, run_id)
    assert sorted(rows) == sorted((i, st) for i in (1, 2) for st in STAGES)
    for (index, stage), sr in rows.items():
        assert sr.prefect_flow_run_id and sr.prefect_task_run_id, (index, stage)
        assert sr.status in (StageStatus.completed, StageStatus.reused)
    # The data is ingested once; iteration 2 reuses it, and the base policy's answers.
    assert rows[(2, "ingest_data")].status == StageStatus.reused
    assert rows[(2, "base_responses")].status == StageStatus.reused
    assert rows[(2, "evaluate_evaluator")].status == StageStatus.reused
    # Iteration 2's judge was trained from iteration 1's judge, pairs and rationales.
    with store.session() as s:
        inputs = repo.stage_inputs(s, rows[(2, "train_judge")])
        outputs1 = {st: repo.stage_outputs(s, rows[(1, st)]) for st in STAGES}
        assert inputs["init_judge"].id == outputs1["train_judge"]["judge"].id
        assert inputs["self_pairs"].id == outputs1["score_filter"]["pairs"].id
        assert inputs["rationales"].id == outputs1["bootstrap_rationales"]["rationales"].id
        # Each iteration's policy answers the held-out prompts and is judged against the base and
        # against the previous iteration's policy (iteration 1's previous is the base).
        for index in (1, 2):
            answered = repo.stage_inputs(s, rows[(index, "policy_responses")])["policy"]
            assert answered.id == repo.stage_outputs(s, rows[(index, "policy_round")])["policy"].id
        judged = {i: repo.stage_inputs(s, rows[(i, "evaluate_policy")]) for i in (1, 2)}
        base = outputs1["base_responses"]["responses"].id
        assert judged[1]["previous_responses"].id == judged[1]["base_responses"].id == base
        assert judged[2]["base_responses"].id == base
        assert judged[2]["previous_responses"].id == outputs1["policy_responses"]["responses"].id
        # Every model's lineage reaches the seed data.
        models = s.scalars(select(Artifact).where(Artifact.kind == "model")).all()
        assert len(models) == 4
        for model in models:
            graph = lineage(s, model)
            ancestors = {a.name for a in graph.artifacts.values()}
            assert "seed_pairs_0" in ancestors, (model.name, ancestors)
    # Each iteration published its metrics table and lineage to the Prefect UI.
    with get_client(sync_client=True) as client:
        keys = {a.key for a in client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(like_=f"run-{str(run_id)[:8]}")))}
    assert {f"run-{str(run_id)[:8]}-iter-{i}-{kind}" for i in (1, 2) for kind in ("metrics", "lineage")} <= keys
    store.dispose()


def _snapshot(rows, keep) -> dict:
    return {k: (sr.id, sr.attempt, sr.status, sr.ended_at) for k, sr in rows.items() if keep(k)}


def _check_resume(store: Store, run_id: str, failed_stage: str, status: StageStatus, resume_fn) -> None:
    before = _stage_rows(store, uuid.UUID(run_id))
    assert before[(2, failed_stage)].status == status
    fault_at = STAGES.index(failed_stage)
    done_before = _snapshot(before, lambda k: k[0] == 1 or STAGES.index(k[1]) < fault_at)
    assert len(done_before) == len(STAGES) + fault_at
    resume_fn()
    after = _stage_rows(store, uuid.UUID(run_id))
    # Zero recomputed: the same rows, attempts and end times as before the resume.
    assert _snapshot(after, lambda k: k in done_before) == done_before
    assert after[(2, failed_stage)].attempt == 2
    assert after[(2, failed_stage)].status == StageStatus.completed
    assert all(sr.status in (StageStatus.completed, StageStatus.reused) for sr in after.values())
    with store.session() as s:
        assert s.get_one(Run, uuid.UUID(run_id)).status == RunStatus.completed


def test_a_stage_failure_fails_the_run_and_resume_completes_it(prefect_api, monkeypatch):
    from selfrefine.errors import StageFailedError
    from selfrefine.flows.self_refine import resume, self_refine

    monkeypatch.setenv("SELFREFINE_FAULT", "score_filter@2:start")
    with pytest.raises(StageFailedError, match="injected fault"):
        self_refine(preset="tiny", n_iterations=2)
    monkeypatch.delenv("SELFREFINE_FAULT")
    store = Store()
    with store.session() as s:
        (run,) = repo.list_runs(s)
        assert run.status == RunStatus.failed and "injected fault" in run.error
    _check_resume(store, str(run.id), "score_filter", StageStatus.failed, lambda: resume(str(run.id)))
    store.dispose()


def test_sigkill_mid_stage_then_resume_completes_the_run(cli_env):
    proc = selfrefine(cli_env, "run", "--preset", "tiny", "-n", "2",
                      fault="train_judge@2:before_store:kill", check=False)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    (run_id,) = run_ids(cli_env)
    store = Store()
    # The killed stage's row is left `running`; its process is dead, so resume takes it over.
    _check_resume(store, run_id, "train_judge", StageStatus.running,
                  lambda: selfrefine(cli_env, "resume", run_id[:8]))
    report = show(cli_env, run_id)
    assert report["status"] == "completed" and len(report["iterations"]) == 2
    store.dispose()


def test_a_second_concurrent_resume_is_refused(prefect_api, cli_env, monkeypatch):
    from selfrefine.errors import LeaseHeldError, StageFailedError
    from selfrefine.flows.self_refine import prepare_resume, resume, self_refine

    monkeypatch.setenv("SELFREFINE_FAULT", "train_judge@1:start")
    with pytest.raises(StageFailedError):
        self_refine(preset="tiny", n_iterations=1)
    monkeypatch.delenv("SELFREFINE_FAULT")
    store = Store()
    with store.session() as s:
        run_id = str(repo.list_runs(s)[0].id)
    first = subprocess.Popen([sys.executable, "-m", "selfrefine", "resume", run_id], cwd=REPO,
                             env={**cli_env, "SELFREFINE_FAULT": "train_judge@1:start:sleep=60"},
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with store.session() as s:
                if s.get_one(Run, uuid.UUID(run_id)).lease_owner:
                    break
            assert first.poll() is None, first.stderr.read()
            time.sleep(0.5)
        else:
            pytest.fail("the first resume never took the lease")
        with pytest.raises(LeaseHeldError):
            prepare_resume(run_id)
        second = selfrefine(cli_env, "resume", run_id, check=False)
        assert second.returncode == 2
        assert "is being driven by" in second.stderr and second.stderr.count("\n") == 1
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    # The first resume died holding the lease: a later resume on this host takes it and finishes.
    resume(run_id)
    with store.session() as s:
        assert s.get_one(Run, uuid.UUID(run_id)).status == RunStatus.completed
    store.dispose()


def test_resume_with_a_changed_config_is_refused_unless_allowed(prefect_api):
    from selfrefine.errors import ConfigError
    from selfrefine.flows.config import load_preset
    from selfrefine.flows.self_refine import resume, self_refine

    run_id = self_refine(preset="tiny", n_iterations=1)
    changed_cfg = load_preset("tiny").model_copy(deep=True)
    changed_cfg.evaluate.n_bins = 5
    with pytest.raises(ConfigError, match="different configuration"):
        resume(run_id, config=changed_cfg)
    store = Store()
    before = _stage_rows(store, uuid.UUID(run_id))
    resume(run_id, config=changed_cfg, allow_config_change=True)
    after = _stage_rows(store, uuid.UUID(run_id))
    changed = {k for k in after if (after[k].attempt, after[k].stage_key) != (before[k].attempt, before[k].stage_key)}
    assert changed == {(1, "evaluate")}
    store.dispose()
