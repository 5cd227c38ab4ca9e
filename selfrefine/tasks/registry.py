"""Stage name → module, and `execute`: run one stage through the stage runner.

Each stage module defines `STAGE`, `CODE_VERSION`, a config class and `run(ctx) -> StageReturn`,
and may define `pin(config) -> config`: it fills in fingerprints of things the config names but
the store does not hold (a local base model directory), so they take part in the stage key.
"""

from __future__ import annotations

import importlib
import uuid
from collections.abc import Mapping
from types import ModuleType

from pydantic import BaseModel

from selfrefine.errors import ConfigError
from selfrefine.storage.artifacts import ArtifactStore
from selfrefine.storage.engine import Store
from selfrefine.tasks.runner import StageOutcome, run_stage

MODULES = {
    "ingest_data": "selfrefine.tasks.ingest",
    "train_judge": "selfrefine.tasks.train_judge",
    "generate": "selfrefine.tasks.generate",
    "bootstrap_rationales": "selfrefine.tasks.bootstrap_rationales",
    "score_filter": "selfrefine.tasks.score_filter",
    "policy_round": "selfrefine.tasks.policy_round",
    "evaluate": "selfrefine.tasks.evaluate",
    # One module, two stages: the iteration's policy and the run's base policy answer apart, so the
    # base's answers keep one stage key across iterations and runs.
    "policy_responses": "selfrefine.tasks.policy_responses",
    "base_responses": "selfrefine.tasks.policy_responses",
    "evaluate_policy": "selfrefine.tasks.evaluate_policy",
    # The evaluator measured as an instrument: the evaluate stage's best-of-n on the run's sets.
    "evaluate_evaluator": "selfrefine.tasks.evaluate",
}
CONFIG_CLASSES = {
    "ingest_data": "IngestConfig", "train_judge": "TrainJudgeConfig", "generate": "GenerateConfig",
    "bootstrap_rationales": "BootstrapConfig", "score_filter": "ScoreFilterConfig",
    "policy_round": "PolicyRoundConfig", "evaluate": "EvaluateConfig",
    "policy_responses": "RespondConfig", "base_responses": "RespondConfig", "evaluate_policy": "EvaluatePolicyConfig",
    "evaluate_evaluator": "EvaluateConfig",
}


def stage_module(stage: str) -> ModuleType:
    if stage not in MODULES:
        raise ConfigError(f"unknown stage {stage!r}; stages are {sorted(MODULES)}")
    return importlib.import_module(MODULES[stage])


def config_class(stage: str) -> type[BaseModel]:
    return getattr(stage_module(stage), CONFIG_CLASSES[stage])


def execute(stage: str, config: BaseModel, inputs: Mapping[str, uuid.UUID], *,
            iteration_id: uuid.UUID | None, seed: int | None, placement: str = "inline",
            store: Store | None = None, artifacts: ArtifactStore | None = None) -> StageOutcome:
    module = stage_module(stage)
    if hasattr(module, "pin"):
        config = module.pin(config)
    return run_stage(stage, module.run, config, inputs, code_version=module.CODE_VERSION,
                     iteration_id=iteration_id, seed=seed, placement=placement, store=store,
                     artifacts=artifacts)
