"""Run a stage where its placement says: inline (this process) or on a Prefect work pool.

A pool placement names a deployment of the `stage` flow (`prefect.yaml` defines one per pool).
The dispatch waits for that flow run and then reads the outcome from the shared store. Its
idempotency key is derived from the stage key and the attempt the job will be, so a retried
dispatch (a Prefect task retry, a crashed parent) finds the job already started instead of
starting a second one, while a resume after a failure starts a fresh attempt.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping

from pydantic import BaseModel

from selfrefine.errors import StageFailedError
from selfrefine.storage import repository as repo
from selfrefine.storage.engine import Store, default_store
from selfrefine.storage.schema import Artifact, StageStatus
from selfrefine.tasks.keys import stage_key
from selfrefine.tasks.registry import execute, stage_module
from selfrefine.tasks.runner import StageOutcome

STAGE_FLOW = "stage"
log = logging.getLogger(__name__)


def dispatch_stage(stage: str, config: BaseModel, inputs: Mapping[str, uuid.UUID], *,
                   iteration_id: uuid.UUID, seed: int | None, placement: str = "inline",
                   store: Store | None = None) -> StageOutcome:
    if placement == "inline":
        return execute(stage, config, inputs, iteration_id=iteration_id, seed=seed, store=store)
    return _run_on_pool(stage, config, inputs, iteration_id, seed, placement, store or default_store())


def idempotency_key(store: Store, stage: str, config: BaseModel, inputs: Mapping[str, uuid.UUID],
                    iteration_id: uuid.UUID, seed: int | None) -> str:
    with store.session() as s:
        digests = {role: s.get_one(Artifact, art_id).sha256 for role, art_id in inputs.items()}
        row = repo.stage_run_for(s, iteration_id, stage)
        attempt = 1 if row is None else row.attempt + (row.status != StageStatus.running)
    key = stage_key(stage, stage_module(stage).CODE_VERSION, config, digests, seed)
    return f"{iteration_id}:{stage}:{key}:{attempt}"


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
                               f"{state} (flow run {flow_run.id}); see `selfrefine show` for its error")
    with store.session() as s:
        row = repo.stage_run_for(s, iteration_id, stage)
        if row is None or row.status not in (StageStatus.completed, StageStatus.reused):
            raise StageFailedError(f"stage {stage} finished on {placement} but the store has no "
                                   "completed stage run for it; are the worker and this process "
                                   "using the same SELFREFINE_DB_URL?")
        outputs = {role: a.id for role, a in repo.stage_outputs(s, row).items()}
        return StageOutcome(row.id, row.stage_key, "ran", outputs)
