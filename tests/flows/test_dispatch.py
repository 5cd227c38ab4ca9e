"""The idempotency key of a pool dispatch: a job still in flight is found again, a job that can no
longer finish (its flow run ended without completing, or its stage row is stale) gets a new
attempt. Real store rows on SQLite and PostgreSQL; flow runs as Prefect states, and once through a
real Prefect server."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import timedelta

from prefect.states import Completed, Crashed, Failed, Running

from selfrefine.flows.config import load_preset
from selfrefine.flows.dispatch import idempotency_key
from selfrefine.storage import liveness
from selfrefine.storage.schema import StageRun, StageStatus, utcnow
from tests.reliability.conftest import dead_pid
from tests.storage.conftest import db_url, iteration, pg_skip_reason, pg_url, store  # noqa: F401 - fixtures

CONFIG = load_preset("tiny").generate
HERE = liveness.current_process()


def _key(store, iteration, flow_runs: dict | None = None) -> str:
    def lookup(key: str):
        return (flow_runs or {}).get(int(key.rsplit(":", 1)[1]))

    return idempotency_key(store, "generate", CONFIG, {}, iteration.id, 7, flow_run_state=lookup)


def _attempt(key: str) -> int:
    return int(key.rsplit(":", 1)[1])


def _row(store, iteration, status: StageStatus, attempt: int, proc: liveness.ProcessIdentity,
         beat_age=timedelta(0)) -> None:
    with store.session() as s:
        s.add(StageRun(iteration_id=iteration.id, stage="generate", stage_key="g" * 64, status=status,
                       attempt=attempt, code_version="1", heartbeat_at=utcnow() - beat_age,
                       **liveness.claim_fields(proc)))


def test_a_first_dispatch_is_attempt_1_and_a_crashed_job_before_any_claim_is_passed_over(store, iteration):
    first = _key(store, iteration)
    assert _attempt(first) == 1 and first.startswith(f"{iteration.id}:generate:")
    assert _key(store, iteration, {1: Completed()}) == first  # done: the same job, found again
    assert _key(store, iteration, {1: Running()}) == first  # in flight: waited for, not restarted
    # The worker died before it touched the row: the row is still absent, the job final.
    assert _attempt(_key(store, iteration, {1: Crashed()})) == 2
    assert _attempt(_key(store, iteration, {1: Crashed(), 2: Failed()})) == 3


def test_a_job_in_flight_keeps_its_key(store, iteration):
    _row(store, iteration, StageStatus.running, 1, HERE)
    assert _attempt(_key(store, iteration, {1: Running()})) == 1


def test_a_job_whose_row_was_left_running_by_a_killed_worker_gets_a_new_attempt(store, iteration):
    # SIGKILLed mid-stage: the row stays `running` and the flow run ends Crashed...
    _row(store, iteration, StageStatus.running, 1, replace(HERE, pid=dead_pid(), started=None))
    assert _attempt(_key(store, iteration, {1: Crashed()})) == 2
    # ...or, when the worker died with it, the flow run is never marked final: the stale row decides.
    assert _attempt(_key(store, iteration, {1: Running()})) == 2
    assert _attempt(_key(store, iteration, {1: Running(), 2: Crashed()})) == 3


def test_a_silent_row_on_another_host_gets_a_new_attempt(store, iteration):
    _row(store, iteration, StageStatus.running, 1, replace(HERE, host="other-host"),
         beat_age=liveness.STALE_AFTER + timedelta(seconds=5))
    assert _attempt(_key(store, iteration, {1: Running()})) == 2


def test_a_failed_row_gets_the_next_attempt(store, iteration):
    _row(store, iteration, StageStatus.failed, 2, HERE)
    assert _attempt(_key(store, iteration, {2: Failed()})) == 3
    assert _attempt(_key(store, iteration, {2: Failed(), 3: Crashed()})) == 4


def test_crashed_flow_runs_are_found_by_key_on_a_prefect_server(prefect_api, store, iteration):
    from prefect.client.orchestration import get_client

    from selfrefine.flows.stage import stage as stage_flow

    prefix = _key(store, iteration).rsplit(":", 1)[0]
    with get_client(sync_client=True) as client:
        flow_id = client.create_flow(stage_flow)
        deployment_id = client.create_deployment(flow_id=flow_id, name=f"dispatch-{uuid.uuid4().hex[:6]}")
        for attempt in (1, 2):
            run = client.create_flow_run_from_deployment(deployment_id, idempotency_key=f"{prefix}:{attempt}")
            client.set_flow_run_state(run.id, Crashed(), force=True)
        client.create_flow_run_from_deployment(deployment_id, idempotency_key=f"{prefix}:3")  # scheduled
    assert idempotency_key(store, "generate", CONFIG, {}, iteration.id, 7) == f"{prefix}:3"

