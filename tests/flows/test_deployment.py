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
from selfrefine.storage.schema import RunStatus, StageStatus
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
