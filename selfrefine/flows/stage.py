"""The `stage` flow: the entry point a work-pool worker runs for one dispatched stage."""

from __future__ import annotations

import uuid
from typing import Any

from prefect import flow

from selfrefine.runtime.registry import execute, get_stage


@flow(name="stage")
def stage(stage: str, config: dict[str, Any], inputs: dict[str, str], iteration_id: str,
          seed: int | None = None, placement: str = "inline") -> dict[str, Any]:
    """Run one stage of an iteration through the stage runner, against the shared store."""
    cfg = get_stage(stage).config.model_validate(config)
    outcome = execute(stage, cfg, {role: uuid.UUID(v) for role, v in inputs.items()},
                      iteration_id=uuid.UUID(iteration_id), seed=seed, placement=placement)
    return {"stage_run_id": str(outcome.stage_run_id), "status": outcome.status,
            "outputs": {role: str(v) for role, v in outcome.outputs.items()}}
