"""The stages, listed once, and `execute`: run one stage by name through the stage runner.

Each stage module in `selfrefine/tasks/` declares its stage in one `Stage` object (policy_responses
and evaluate declare two each). `STAGES` lists them in the order a run takes them; the flows, the
`stage` deployment, the tests and the benchmarks derive what they need from it (the stages of an
iteration, the GPU stages, a stage's config class).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping

from pydantic import BaseModel

from selfrefine.errors import ConfigError
from selfrefine.runtime.runner import run_stage
from selfrefine.runtime.stage import Stage, StageOutcome
from selfrefine.storage.artifacts import ArtifactStore
from selfrefine.storage.engine import Store
from selfrefine.tasks import (
    bootstrap_rationales,
    evaluate,
    evaluate_policy,
    generate,
    ingest,
    policy_responses,
    policy_round,
    report,
    score_filter,
    train_judge,
)

# The order of a run: ingest_data, the stages of each iteration, report. An iteration's last four
# evaluate the policy and run only when the run has policy prompts.
STAGES: tuple[Stage, ...] = (
    ingest.STAGE,
    train_judge.STAGE,
    generate.STAGE,
    bootstrap_rationales.STAGE,
    score_filter.STAGE,
    policy_round.STAGE,
    evaluate.STAGE,
    policy_responses.BASE_STAGE,
    policy_responses.STAGE,
    evaluate.EVALUATOR_STAGE,
    evaluate_policy.STAGE,
    report.STAGE,
)


def stage_names() -> list[str]:
    return [s.name for s in STAGES]


def iteration_stages() -> tuple[str, ...]:
    """The names of the stages of one iteration, in order."""
    return tuple(s.name for s in STAGES if s.per_iteration)


def gpu_stages() -> tuple[str, ...]:
    """The names of the stages that run models on accelerators (a cluster sends them to a GPU pool)."""
    return tuple(s.name for s in STAGES if s.gpu)


def get_stage(name: str) -> Stage:
    for stage in STAGES:
        if stage.name == name:
            return stage
    raise ConfigError(f"unknown stage {name!r}; stages are {sorted(stage_names())}")


def execute(stage: str, config: BaseModel, inputs: Mapping[str, uuid.UUID], *,
            iteration_id: uuid.UUID | None, seed: int | None, placement: str = "inline",
            store: Store | None = None, artifacts: ArtifactStore | None = None) -> StageOutcome:
    return run_stage(get_stage(stage), config, inputs, iteration_id=iteration_id, seed=seed,
                     placement=placement, store=store, artifacts=artifacts)
