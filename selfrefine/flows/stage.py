"""The `stage` flow: the entry point a work-pool worker runs for one dispatched stage."""

from __future__ import annotations

import uuid
from typing import Any

from prefect import flow
from pydantic import BaseModel

from selfrefine.data.paths import confine_model_name
from selfrefine.runtime.registry import execute, get_stage


@flow(name="stage")
def stage(stage: str, config: dict[str, Any], inputs: dict[str, str], iteration_id: str,
          seed: int | None = None, placement: str = "inline") -> dict[str, Any]:
    """Run one stage of an iteration through the stage runner, against the shared store."""
    cfg = get_stage(stage).config.model_validate(config)
    confine_stage_models(stage, cfg)  # a config sent straight to this deployment is checked too
    outcome = execute(stage, cfg, {role: uuid.UUID(v) for role, v in inputs.items()},
                      iteration_id=uuid.UUID(iteration_id), seed=seed, placement=placement)
    return {"stage_run_id": str(outcome.stage_run_id), "status": outcome.status,
            "outputs": {role: str(v) for role, v in outcome.outputs.items()}}


# Config fields of the stages that name a model to load (a directory, alias, hub id or artifact id).
MODEL_FIELD_NAMES = ("base_model", "judge_model", "evaluator", "base_policy", "embedding_model", "model")


def confine_stage_models(stage: str, cfg: BaseModel) -> None:
    """Every local model directory in a stage's config lies inside $SELFREFINE_DATA_ROOT when it is
    set, as preflight checks for a whole run (`PathEscapeError` naming the field)."""
    for name in MODEL_FIELD_NAMES:
        value = getattr(cfg, name, None)
        if isinstance(value, str):
            confine_model_name(value, f"{stage}.{name}")
