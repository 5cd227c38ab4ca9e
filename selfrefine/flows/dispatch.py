"""Run a stage where its placement says: inline (this process) or on a Prefect work pool.

A pool placement names a deployment of the `stage` flow (`prefect.yaml` defines one per pool).
The dispatch waits for that flow run and then reads the outcome from the shared store. Its
idempotency key is the stage key plus the attempt the job will be, so a retried dispatch (a
Prefect task retry, a crashed parent) finds the job still in flight instead of starting a second
one. A job that can no longer finish gets a new attempt, hence a new key and a fresh flow run:
the stage's row failed, or is `running` but stale (its worker was killed: storage/liveness.py),
or the flow run under the key ended without completing (its worker died, perhaps before it
touched the row at all).

Every dispatch is a stage boundary: a driver that lost its run lease stops there.
"""

from __future__ import annotations

import logging
import uuid
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from pydantic import BaseModel

from selfrefine.errors import StageFailedError
from selfrefine.flows.lease import require_lease
from selfrefine.progress import LOGGER_NAME, format_seconds
from selfrefine.runtime.keys import key_for
from selfrefine.runtime.registry import execute, get_stage
from selfrefine.runtime.stage import StageOutcome
from selfrefine.storage import repository as repo
from selfrefine.storage.engine import Store, default_store
from selfrefine.storage.liveness import stage_run_is_stale
from selfrefine.storage.schema import Artifact, StageStatus

STAGE_FLOW = "stage"
log = logging.getLogger(__name__)
progress_log = logging.getLogger(LOGGER_NAME)

# The state of the `stage` flow run created under an idempotency key (a Prefect `State`), or None.
FlowRunLookup = Callable[[str], Any]


def dispatch_stage(stage: str, config: BaseModel, inputs: Mapping[str, uuid.UUID], *,
                   iteration_id: uuid.UUID, seed: int | None, placement: str = "inline",
                   store: Store | None = None) -> StageOutcome:
    require_lease(iteration_id)
    # The stage in flight, shown without -v (see selfrefine.progress).
    where = "" if placement == "inline" else f" on pool {placement}"
    progress_log.info("stage %s: started%s", stage, where)
    started = time.perf_counter()
    if placement == "inline":
        outcome = execute(stage, config, inputs, iteration_id=iteration_id, seed=seed, store=store)
    else:
        outcome = _run_on_pool(stage, config, inputs, iteration_id, seed, placement, store or default_store())
    progress_log.info("stage %s: %s in %s", stage, outcome.status, format_seconds(time.perf_counter() - started))
    return outcome


def idempotency_key(store: Store, stage: str, config: BaseModel, inputs: Mapping[str, uuid.UUID],
                    iteration_id: uuid.UUID, seed: int | None,
                    flow_run_state: FlowRunLookup | None = None) -> str:
    """The key of the job that will run this stage: '<iteration>:<stage>:<stage key>:<attempt>'.

    The attempt is the row's while its job is in flight (a `running` row that is not stale), the
    next one otherwise; then every attempt whose flow run ended without completing is passed over.
    `flow_run_state` looks a key up (default: the Prefect API)."""
    with store.session() as s:
        digests = {role: s.get_one(Artifact, art_id).sha256 for role, art_id in inputs.items()}
        row = repo.stage_run_for(s, iteration_id, stage)
        if row is None:
            attempt = 1
        elif row.status == StageStatus.running and not stage_run_is_stale(row):
            attempt = row.attempt
        else:
            attempt = row.attempt + 1
    key, _ = key_for(get_stage(stage), config, digests, seed)
    prefix = f"{iteration_id}:{stage}:{key}"
    if flow_run_state is not None:
        return f"{prefix}:{_first_open_attempt(prefix, attempt, flow_run_state)}"
    with _prefect_lookup() as lookup:
        return f"{prefix}:{_first_open_attempt(prefix, attempt, lookup)}"


def _first_open_attempt(prefix: str, attempt: int, flow_run_state: FlowRunLookup) -> int:
    while True:
        state = flow_run_state(f"{prefix}:{attempt}")
        if state is None or not state.is_final() or state.is_completed():
            return attempt
        log.info("%s: the job of attempt %d ended %s; dispatching attempt %d",
                 prefix.split(":")[1], attempt, state.name, attempt + 1)
        attempt += 1


@contextmanager
def _prefect_lookup() -> Iterator[FlowRunLookup]:
    """Looks `stage` flow runs up by idempotency key through one Prefect client (the server keeps a
    key unique per flow, whatever deployment created the run)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterIdempotencyKey,
    )

    with get_client(sync_client=True) as client:
        def state(key: str):
            runs = client.read_flow_runs(
                flow_filter=FlowFilter(name=FlowFilterName(any_=[STAGE_FLOW])),
                flow_run_filter=FlowRunFilter(idempotency_key=FlowRunFilterIdempotencyKey(any_=[key])),
                limit=1)
            return runs[0].state if runs else None

        yield state


def _run_on_pool(stage, config, inputs, iteration_id, seed, placement, store) -> StageOutcome:
    from prefect.deployments import run_deployment

    key = idempotency_key(store, stage, config, inputs, iteration_id, seed)
    parameters = {"stage": stage, "config": config.model_dump(mode="json"),
                  "inputs": {role: str(i) for role, i in inputs.items()},
                  "iteration_id": str(iteration_id), "seed": seed, "placement": placement}
    log.info("%s: dispatching to deployment %s/%s (idempotency key %s)", stage, STAGE_FLOW, placement, key[-24:])
    flow_run = run_deployment(f"{STAGE_FLOW}/{placement}", parameters=parameters,
                              idempotency_key=key, timeout=None)
    if not flow_run.state or not flow_run.state.is_completed():
        state = flow_run.state.name if flow_run.state else "unknown"
        raise StageFailedError(f"stage {stage} on pool deployment {STAGE_FLOW}/{placement} ended "
                               f"{state} (flow run {flow_run.id}); see `selfrefine show` for its error; "
                               "a resume dispatches it again")
    with store.session() as s:
        row = repo.stage_run_for(s, iteration_id, stage)
        if row is None or row.status not in (StageStatus.completed, StageStatus.reused):
            raise StageFailedError(f"stage {stage} finished on {placement} but the store has no "
                                   "completed stage run for it; are the worker and this process "
                                   "using the same SELFREFINE_DB_URL?")
        outputs = {role: a.id for role, a in repo.stage_outputs(s, row).items()}
        return StageOutcome(row.id, row.stage_key, "ran", outputs)
