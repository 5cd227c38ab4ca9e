"""`selfrefine doctor`: each check on a store with exactly the damage a fault or a person leaves,
`--fix` repairs only what is safe, and live work is never touched. SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import select

from selfrefine.cli import main
from selfrefine.runtime.runner import run_stage
from selfrefine.runtime.stage import Stage
from selfrefine.storage import repository as repo
from selfrefine.storage.artifacts import ArtifactStore
from selfrefine.storage.doctor import repair, run_checks
from selfrefine.storage.engine import Store
from selfrefine.storage.liveness import STALE_AFTER
from selfrefine.storage.schema import Artifact, Iteration, Run, RunStatus, StageRun, StageStatus, utcnow
from tests.reliability.conftest import REPO, dead_pid
from tests.storage.conftest import db_url, iteration, pg_skip_reason, pg_url, store  # noqa: F401 - fixtures
from tests.storage.stagefns import CountConfig, upper_dir, write_text



@pytest.fixture
def outputs(store, iteration):
    """Two completed stages: a file artifact and a directory artifact made from it."""
    a = run_stage(Stage("write", "1", CountConfig, write_text), CountConfig(), {},
                  iteration_id=iteration.id, store=store)
    b = run_stage(Stage("upper", "1", CountConfig, upper_dir), CountConfig(), {"data": a.outputs["data"]},
                  iteration_id=iteration.id, store=store)
    return a.outputs["data"], b.outputs["model"]


def doctor_cli(capsys, *args: str) -> tuple[int, dict]:
    code = main(["doctor", "--json", *args])
    return code, json.loads(capsys.readouterr().out)


def checks(findings) -> list[tuple[str, str]]:
    return sorted((f.check, f.subject) for f in findings)


def test_a_healthy_store_has_no_findings(store, outputs, capsys):
    assert run_checks(store, ArtifactStore()) == []
    assert main(["doctor"]) == 0
    assert capsys.readouterr().out.strip() == "no problems found"


def test_sigkill_mid_stage_is_found_and_fix_repairs_only_that(store, iteration, outputs, db_url, capsys):
    proc = subprocess.run([sys.executable, "-m", "tests.storage.stagefns", "kill-mid-write", db_url,
                           str(iteration.id)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr
    artifacts = ArtifactStore()
    (leftover,) = artifacts.staging_paths()
    with store.session() as s:
        row = repo.stage_run_for(s, iteration.id, "writer")
    assert checks(run_checks(store, artifacts)) == [("abandoned_staging", leftover),
                                                    ("stale_stage_run", str(row.id))]
    objects_before = artifacts.stored_keys()

    code, report = doctor_cli(capsys)
    assert code == 1 and {f["check"] for f in report["findings"]} == {"abandoned_staging", "stale_stage_run"}
    code, report = doctor_cli(capsys, "--fix")
    assert code == 0 and len(report["repaired"]) == 2 and report["remaining"] == []
    assert artifacts.staging_paths() == [] and artifacts.stored_keys() == objects_before
    with store.session() as s:
        row = s.get_one(StageRun, row.id)
        assert row.status == StageStatus.failed and "selfrefine doctor" in row.error
        completed = s.scalars(select(StageRun.status).where(StageRun.stage.in_(["write", "upper"]))).all()
        assert completed == [StageStatus.completed] * 2
    assert doctor_cli(capsys) == (0, {"findings": [], "repaired": [], "remaining": []})


def test_live_work_is_not_reported_or_touched(store, iteration, capsys):
    artifacts = ArtifactStore()
    with store.session() as s:  # a stage run of this (live) process, heartbeat just now
        s.add(StageRun(iteration_id=iteration.id, stage="busy", stage_key="b" * 64, status=StageStatus.running,
                       attempt=1, code_version="1", host=socket.gethostname(), pid=os.getpid(),
                       heartbeat_at=utcnow()))
        s.add(StageRun(iteration_id=iteration.id, stage="elsewhere", stage_key="e" * 64,
                       status=StageStatus.running, attempt=1, code_version="1", host="other-host",
                       pid=1, heartbeat_at=utcnow()))
        run = s.get_one(Run, iteration.run_id)
        run.status, run.lease_owner = RunStatus.running, f"{socket.gethostname()}:{os.getpid()}:t"
        run.lease_expires_at = utcnow() + timedelta(seconds=90)
        s.get_one(Iteration, iteration.id).status = RunStatus.running
    with artifacts.staging() as live:
        (live / "half-written.bin").write_bytes(b"x" * 1000)
        assert run_checks(store, artifacts) == []
        assert doctor_cli(capsys, "--fix")[0] == 0
        assert (live / "half-written.bin").exists()


def test_stale_rows_of_dead_drivers_are_marked_failed(store, iteration, capsys):
    pid = dead_pid()
    with store.session() as s:
        here = s.get_one(Run, iteration.run_id)
        here.status, here.lease_owner = RunStatus.running, f"{socket.gethostname()}:{pid}:t"
        here.lease_expires_at = utcnow() + timedelta(seconds=90)  # unexpired, but its process is dead
        s.get_one(Iteration, iteration.id).status = RunStatus.running
        elsewhere = repo.create_run(s, name="other host", n_iterations=1, config={}, config_digest="d")
        elsewhere.status, elsewhere.lease_owner = RunStatus.running, "gone-host:7:t"
        elsewhere.lease_expires_at = utcnow() - timedelta(seconds=1)
        silent = StageRun(iteration_id=iteration.id, stage="silent", stage_key="s" * 64,
                          status=StageStatus.running, attempt=3, code_version="1", host="gone-host",
                          pid=7, heartbeat_at=utcnow() - STALE_AFTER - timedelta(seconds=5))
        s.add(silent)
        s.flush()
        ids = {"run": str(here.id), "other": str(elsewhere.id), "stage": str(silent.id)}
    found = checks(run_checks(store, ArtifactStore()))
    assert found == sorted([("stale_run", ids["run"]), ("stale_run", ids["other"]),
                            ("stale_iteration", str(iteration.id)), ("stale_stage_run", ids["stage"])])
    code, report = doctor_cli(capsys, "--fix")
    assert code == 0 and len(report["repaired"]) == 4
    with store.session() as s:
        assert s.get_one(Run, uuid.UUID(ids["run"])).status == RunStatus.failed
        assert s.get_one(Run, uuid.UUID(ids["other"])).status == RunStatus.failed
        assert s.get_one(Iteration, iteration.id).status == RunStatus.failed
        row = s.get_one(StageRun, uuid.UUID(ids["stage"]))
        assert (row.status, row.attempt) == (StageStatus.failed, 3)


def test_a_stale_row_taken_over_meanwhile_is_not_failed(store, iteration):
    """--fix re-checks at the moment it acts: a resume that claimed the row since the check wins."""
    with store.session() as s:
        row = StageRun(iteration_id=iteration.id, stage="write", stage_key="x" * 64, status=StageStatus.running,
                       attempt=1, code_version="1", host=socket.gethostname(), pid=dead_pid(),
                       heartbeat_at=utcnow())
        s.add(row)
    findings = run_checks(store, ArtifactStore())
    assert [f.check for f in findings] == ["stale_stage_run"]
    out = run_stage(Stage("write", "1", CountConfig, write_text), CountConfig(), {},
                    iteration_id=iteration.id, store=store)
    assert repair(store, ArtifactStore(), findings) == []
    with store.session() as s:
        assert s.get_one(StageRun, out.stage_run_id).status == StageStatus.completed


def test_altered_and_missing_artifacts_are_reported_and_never_deleted(store, outputs, capsys):
    data_id, model_id = outputs
    artifacts = ArtifactStore()
    with store.session() as s:
        data, model = s.get_one(Artifact, data_id), s.get_one(Artifact, model_id)
    altered = artifacts.local_path(data.uri)
    altered.chmod(0o644)
    altered.write_text("tampered")
    import shutil

    shutil.rmtree(artifacts.local_path(model.uri))
    assert checks(run_checks(store, artifacts)) == sorted([("digest_mismatch", str(data_id)),
                                                           ("missing_file", str(model_id))])
    code, report = doctor_cli(capsys, "--fix")
    assert code == 1 and report["repaired"] == [] and len(report["remaining"]) == 2
    assert altered.read_text() == "tampered"
    main(["doctor"])
    text = capsys.readouterr().out
    assert "digest_mismatch" in text and "was altered" in text and "2 problem(s) found" in text


def test_unknown_objects_and_artifacts_without_a_maker(store, outputs, iteration):
    artifacts = ArtifactStore()
    with artifacts.staging() as out:
        (out / "stray.txt").write_text("stored, never registered")
        stray = artifacts.put(out / "stray.txt")
        (out / "hand.txt").write_text("registered by hand")
        hand = artifacts.put(out / "hand.txt")
    with store.session() as s:
        no_maker = repo.register_artifact(s, hand, kind="dataset", name="by-hand", stage_run_id=None)
        # A row that names a maker without the maker's `makes` edge.
        writer = s.scalar(select(StageRun).where(StageRun.stage == "write"))
        no_edge = Artifact(kind="dataset", name="no-edge", uri=hand.key, sha256=hand.sha256,
                           size_bytes=hand.size_bytes, stage_run_id=writer.id)
        s.add(no_edge)
        s.flush()
        ids = (str(no_maker.id), str(no_edge.id))
    assert checks(run_checks(store, artifacts)) == sorted([
        ("unknown_object", stray.key), ("orphan_artifact", ids[0]), ("orphan_artifact", ids[1])])
    assert repair(store, artifacts, run_checks(store, artifacts)) == []
    assert artifacts.exists(stray.key)


def test_an_unreachable_store_is_one_line_and_exit_2(monkeypatch, capsys):
    monkeypatch.setenv("SELFREFINE_DB_URL", "postgresql+psycopg://doctor:pw-9f3a@127.0.0.1:1/none")
    assert main(["doctor"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot reach the database" in err and "pw-9f3a" not in err
