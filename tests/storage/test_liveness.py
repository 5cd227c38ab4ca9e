"""Liveness of claims (storage/liveness.py): a `running` stage run or a run lease is stale when its
process is dead or silent. A reused pid, another boot or another container under the same host
name never keeps a dead claim alive or lets a live one be taken over; a stale row is taken over by
exactly one of two concurrent claimers; a driver that lost its lease stops at the next stage.
SQLite and PostgreSQL."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import replace
from datetime import timedelta

import pytest
from sqlalchemy import event, func, select, update

from selfrefine.errors import LeaseHeldError
from selfrefine.flows import lease as lease_module
from selfrefine.flows.lease import RunLease
from selfrefine.runtime.runner import _claim, run_stage
from selfrefine.runtime.stage import Stage
from selfrefine.storage import liveness
from selfrefine.storage.artifacts import ArtifactStore
from selfrefine.storage.doctor import run_checks
from selfrefine.storage.schema import Run, StageRun, StageStatus, utcnow
from tests.reliability.conftest import dead_pid
from tests.storage.stagefns import CountConfig, write_text

HERE = liveness.current_process()
SILENT = liveness.STALE_AFTER + timedelta(seconds=5)


def _running_row(store, iteration, proc: liveness.ProcessIdentity, beat_age=timedelta(0)):
    """This iteration's `write` stage run, left `running` by `proc`, last heartbeat `beat_age` ago."""
    with store.session() as s:
        row = StageRun(iteration_id=iteration.id, stage="write", stage_key="x" * 64, status=StageStatus.running,
                       attempt=1, code_version="1", heartbeat_at=utcnow() - beat_age,
                       **liveness.claim_fields(proc))
        s.add(row)
        s.flush()
        return row.id


def _write(store, iteration):
    return run_stage(Stage("write", "1", CountConfig, write_text), CountConfig(), {}, iteration_id=iteration.id,
                     store=store)


def _doctor_stale(store) -> list[str]:
    return [f.subject for f in run_checks(store, ArtifactStore()) if f.check == "stale_stage_run"]


def test_this_process_is_named_beyond_its_pid():
    assert HERE.pid == os.getpid() and HERE.boot_id and HERE.pid_ns and HERE.started
    assert liveness.process_start(dead_pid()) is None
    assert not liveness.is_dead(HERE)


def test_a_claim_records_the_process_beyond_its_pid(store, iteration):
    out = _write(store, iteration)
    with store.session() as s:
        row = s.get_one(StageRun, out.stage_run_id)
        assert liveness.stage_run_process(row) == HERE


def test_a_reused_pid_does_not_keep_a_dead_row_alive(store, iteration):
    # The pid is alive (it is this process's), but the row's process started at another time.
    row_id = _running_row(store, iteration, replace(HERE, started=HERE.started - 1))
    assert _doctor_stale(store) == [str(row_id)]
    out = _write(store, iteration)
    with store.session() as s:
        row = s.get_one(StageRun, out.stage_run_id)
        assert (row.id, row.status, row.attempt) == (row_id, StageStatus.completed, 2)


def test_the_same_live_process_keeps_its_row(store, iteration):
    _running_row(store, iteration, HERE)
    assert _doctor_stale(store) == []
    with pytest.raises(LeaseHeldError, match="running in process"):
        _write(store, iteration)


@pytest.mark.parametrize("elsewhere", [{"boot_id": "another-boot"}, {"pid_ns": "pid:[1]"}],
                         ids=["another-boot", "another-container"])
def test_a_row_from_another_boot_or_container_is_judged_by_its_heartbeat(store, iteration, elsewhere):
    # Same host name, but the pid means another process there: that it is gone here says nothing.
    proc = replace(HERE, pid=dead_pid(), started=None, **elsewhere)
    row_id = _running_row(store, iteration, proc)
    assert _doctor_stale(store) == []
    with pytest.raises(LeaseHeldError, match="running in process"):
        _write(store, iteration)
    with store.session() as s:  # it stops beating: now it is stale
        s.execute(update(StageRun).where(StageRun.id == row_id).values(heartbeat_at=utcnow() - SILENT))
    assert _doctor_stale(store) == [str(row_id)]
    assert _write(store, iteration).stage_run_id == row_id


@pytest.mark.parametrize("host", ["this-host", "other-host"])
def test_a_silent_row_is_stale_even_if_its_pid_is_alive(store, iteration, host):
    proc = HERE if host == "this-host" else replace(HERE, host="other-host")
    row_id = _running_row(store, iteration, proc, beat_age=SILENT)
    assert _doctor_stale(store) == [str(row_id)]
    assert _write(store, iteration).stage_run_id == row_id


def test_a_lease_held_by_a_reused_pid_is_free(store, iteration):
    run_id = iteration.run_id
    with store.session() as s:
        run = s.get_one(Run, run_id)
        run.lease_owner, run.lease_expires_at = f"{HERE.host}:{HERE.pid}:old", utcnow() + timedelta(hours=1)
        run.lease_boot_id, run.lease_pid_ns, run.lease_pid_start = HERE.boot_id, HERE.pid_ns, HERE.started - 1
    RunLease.check_free(store, run_id)
    with RunLease(store, run_id) as held:
        with store.session() as s:
            run = s.get_one(Run, run_id)
            assert run.lease_owner == held.owner and run.lease_pid_start == HERE.started


def test_a_lease_from_another_boot_holds_until_it_expires(store, iteration):
    run_id = iteration.run_id
    with store.session() as s:
        run = s.get_one(Run, run_id)
        run.lease_owner, run.lease_expires_at = f"{HERE.host}:{dead_pid()}:other", utcnow() + timedelta(hours=1)
        run.lease_boot_id, run.lease_pid_ns = "another-boot", HERE.pid_ns
    with pytest.raises(LeaseHeldError, match="being driven by"):
        RunLease.check_free(store, run_id)
    with pytest.raises(LeaseHeldError, match="being driven by"):
        RunLease(store, run_id).__enter__()
    with store.session() as s:
        s.get_one(Run, run_id).lease_expires_at = utcnow() - timedelta(seconds=1)
    with RunLease(store, run_id):
        pass


def test_of_two_claimers_of_one_stale_row_exactly_one_wins(store, iteration):
    row_id = _running_row(store, iteration, replace(HERE, pid=dead_pid(), started=None))
    arrived = {"a": threading.Event(), "b": threading.Event()}
    me = threading.local()

    def rendezvous(conn, cursor, statement, params, context, executemany):
        # Each claimer's first UPDATE of the row waits until the other has read the row too (on
        # PostgreSQL); on SQLite the other cannot read before this one commits (BEGIN IMMEDIATE),
        # so after a short wait it goes on alone.
        name = getattr(me, "name", None)
        if name and not getattr(me, "met", False) and statement.lstrip().upper().startswith("UPDATE STAGE_RUNS"):
            me.met = True
            arrived[name].set()
            arrived["b" if name == "a" else "a"].wait(timeout=2)

    results = {}

    def claim(name):
        me.name = name
        try:
            results[name] = _claim(store, "write", "k" * 64, iteration.id, CountConfig(), "1", None, "inline")
        except LeaseHeldError as exc:
            results[name] = exc

    event.listen(store.engine, "before_cursor_execute", rendezvous)
    try:
        threads = [threading.Thread(target=claim, args=(n,)) for n in arrived]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
    finally:
        event.remove(store.engine, "before_cursor_execute", rendezvous)
    won = [r for r in results.values() if not isinstance(r, Exception)]
    lost = [r for r in results.values() if isinstance(r, LeaseHeldError)]
    assert won == [(row_id, 2)] and len(lost) == 1, results
    with store.session() as s:
        row = s.get_one(StageRun, row_id)
        assert (row.status, row.attempt, row.pid) == (StageStatus.running, 2, os.getpid())


def test_a_taken_over_claim_registers_nothing(store, iteration):
    """A process whose row was taken over as stale neither completes nor fails the new claim."""
    from selfrefine.runtime import runner

    row_id, attempt = _claim(store, "write", "k" * 64, iteration.id, CountConfig(), "1", None, "inline")
    with store.session() as s:  # taken over by another claim (attempt + 1)
        s.execute(update(StageRun).where(StageRun.id == row_id).values(attempt=attempt + 1))
    with pytest.raises(LeaseHeldError, match="taken over"):
        runner._register(store, row_id, "k" * 64, "write", {}, {}, [], attempt)
    runner._record_failure(store, row_id, RuntimeError("late"), attempt)
    with store.session() as s:
        row = s.get_one(StageRun, row_id)
        assert (row.status, row.attempt, row.error) == (StageStatus.running, attempt + 1, None)


# -- the run lease at stage boundaries ------------------------------------------------------------


def _ingest_config():
    from selfrefine.flows.config import load_preset
    from selfrefine.flows.preflight import preflight

    return preflight(load_preset("tiny"))


def _steal(store, run_id) -> None:
    with store.session() as s:
        s.execute(update(Run).where(Run.id == run_id)
                  .values(lease_owner="other-host:1:thief", lease_expires_at=utcnow() + timedelta(hours=1)))


def _stage_rows(store) -> int:
    with store.session() as s:
        return s.scalar(select(func.count()).select_from(StageRun))


@pytest.mark.parametrize("noticed_by", ["renewal", "stage boundary"])
def test_a_driver_that_lost_its_lease_stops_at_the_next_stage(store, iteration, monkeypatch, noticed_by):
    from selfrefine.flows.dispatch import dispatch_stage

    config = _ingest_config()
    renew = timedelta(seconds=0.2) if noticed_by == "renewal" else timedelta(hours=1)
    monkeypatch.setattr(lease_module, "RENEW_EVERY", renew)
    with RunLease(store, iteration.run_id) as held:
        # While the lease is held, a stage runs.
        dispatch_stage("ingest_data", config, {}, iteration_id=iteration.id, seed=None, store=store)
        assert _stage_rows(store) == 1
        _steal(store, iteration.run_id)
        if noticed_by == "renewal":
            deadline = time.monotonic() + 10
            while not held.lost.is_set() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert held.lost.is_set()
        with pytest.raises(LeaseHeldError, match="lost the run's lease .*thief.* stops here"):
            dispatch_stage("ingest_data", config, {}, iteration_id=iteration.id, seed=None, store=store)
    assert _stage_rows(store) == 1
    with store.session() as s:  # leaving does not release the thief's lease
        assert s.get_one(Run, iteration.run_id).lease_owner == "other-host:1:thief"
