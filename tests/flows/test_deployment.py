"""prefect.yaml deployments on process work pools, with a stage dispatched to a second pool."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid

import pytest

from selfrefine.flows.config import load_preset
from selfrefine.storage import repository as repo
from selfrefine.storage.engine import Store
from selfrefine.storage.schema import Run, RunStatus, StageStatus
from tests.flows.conftest import REPO

PREFECT = [os.path.join(os.path.dirname(os.sys.executable), "prefect")]


def _prefect(env, *args, timeout=300):
    proc = subprocess.run(PREFECT + list(args), cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"prefect {' '.join(args)}:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def _stop(proc: subprocess.Popen) -> None:
    # A process worker ignores the first SIGTERM for a long while: SIGINT, then SIGKILL.
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def test_deploy_run_and_dispatch_a_stage_to_a_second_pool(cli_env, tmp_path):
    env = {**cli_env, "SELFREFINE_PROJECT_DIR": str(REPO), "PREFECT_LOGGING_LEVEL": "INFO"}
    for pool in ("local", "local-gpu"):
        _prefect(env, "work-pool", "create", pool, "--type", "process", "--overwrite")
    _prefect(env, "--no-prompt", "deploy", "--name", "self-refine", "--name", "local-gpu")
    logs = {pool: open(tmp_path / f"worker-{pool}.log", "w") for pool in ("local", "local-gpu")}
    workers = [subprocess.Popen(PREFECT + ["worker", "start", "--pool", pool], cwd=REPO, env=env,
                                stdout=logs[pool], stderr=subprocess.STDOUT, start_new_session=True)
               for pool in ("local", "local-gpu")]
    try:
        cfg = load_preset("tiny").model_copy(update={"placement": {"generate": "local-gpu"}})
        params = json.dumps({"config": cfg.model_dump(mode="json"), "n_iterations": 1})
        _prefect(env, "deployment", "run", "self-refine/self-refine", "--params", params)
        store = Store()
        deadline = time.monotonic() + 600
        run = None
        while time.monotonic() < deadline:
            with store.session() as s:
                runs = repo.list_runs(s)
            if runs and runs[0].status in (RunStatus.completed, RunStatus.failed):
                run = runs[0]
                break
            time.sleep(2)
        else:
            for f in logs.values():
                f.flush()
            pytest.fail("the deployed run did not finish in time:\n"
                        + (tmp_path / "worker-local.log").read_text()[-3000:])
        assert run.status == RunStatus.completed, run.error
        with store.session() as s:
            (it,) = repo.iterations_of(s, run.id)
            rows = {sr.stage: sr for sr in repo.stage_runs_of(s, it.id)}
        assert run.prefect_flow_run_id and it.prefect_flow_run_id
        generate = rows["generate"]
        assert generate.status == StageStatus.completed and generate.placement == "local-gpu"
        # It ran in its own `stage` flow run on the second pool's worker, not in the iteration's.
        assert generate.prefect_flow_run_id not in (None, it.prefect_flow_run_id)
        assert all(r.prefect_flow_run_id == it.prefect_flow_run_id
                   for name, r in rows.items() if name not in ("generate",) and r.status == StageStatus.completed)
        gpu_log = (tmp_path / "worker-local-gpu.log").read_text()
        assert "stage" in gpu_log
        store.dispose()
    finally:
        for w in workers:
            _stop(w)
        for f in logs.values():
            f.close()


def _worker(env, pool: str, log_path) -> tuple[subprocess.Popen, object]:
    log = open(log_path, "w")
    return subprocess.Popen(PREFECT + ["worker", "start", "--pool", pool], cwd=REPO, env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True), log


@pytest.mark.slow
def test_a_stage_job_killed_on_its_worker_is_dispatched_again_by_resume(cli_env, tmp_path):
    """The pool job of `generate` dies by SIGKILL inside the stage: its row is left `running` and
    its flow run ends Crashed. A resume must not get that flow run back under the same idempotency
    key: it dispatches a new attempt, which takes the dead job's row over and completes the run."""
    from tests.flows.conftest import run_ids, selfrefine

    env = {**cli_env, "SELFREFINE_PROJECT_DIR": str(REPO), "PREFECT_LOGGING_LEVEL": "INFO"}
    _prefect(env, "work-pool", "create", "local-gpu", "--type", "process", "--overwrite")
    _prefect(env, "--no-prompt", "deploy", "--name", "local-gpu")
    run_args = ("--preset", "tiny", "-n", "1", "--set", "placement.generate=local-gpu")
    worker, log = _worker({**env, "SELFREFINE_FAULT": "generate:start:kill"}, "local-gpu",
                          tmp_path / "killing-worker.log")
    try:
        first = selfrefine(env, "run", *run_args, check=False)
    finally:
        _stop(worker)
        log.close()
    assert first.returncode != 0 and "Crashed" in first.stderr, first.stderr[-3000:]
    (run_id,) = run_ids(env)
    store = Store()
    with store.session() as s:
        (it,) = repo.iterations_of(s, uuid.UUID(run_id))
        killed = repo.stage_run_for(s, it.id, "generate")
        assert (killed.status, killed.attempt, killed.placement) == (StageStatus.running, 1, "local-gpu")

    worker, log = _worker(env, "local-gpu", tmp_path / "worker.log")
    try:
        selfrefine(env, "resume", run_id, timeout=900)
    finally:
        _stop(worker)
        log.close()
    with store.session() as s:
        assert s.get_one(Run, uuid.UUID(run_id)).status == RunStatus.completed
        row = repo.stage_run_for(s, it.id, "generate")
        assert (row.id, row.status, row.attempt) == (killed.id, StageStatus.completed, 2)
        # A second flow run did it: not the crashed one.
        assert row.prefect_flow_run_id not in (None, killed.prefect_flow_run_id)
    store.dispose()
