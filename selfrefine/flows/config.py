"""`RunConfig`: the typed configuration of a self-refine run, composed of one config per stage.

It is the parameter form of the `self-refine` deployment in the Prefect UI, so every field is
documented. Presets (`tiny`, `cpu`, `gpu`, …) are YAML files in `selfrefine/presets/` that fill it.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from selfrefine.data import DataSource
from selfrefine.errors import ConfigError
from selfrefine.models.judge_info import trained_reading
from selfrefine.runtime.registry import gpu_stages, iteration_stages
from selfrefine.tasks.bootstrap_rationales import BootstrapConfig
from selfrefine.tasks.evaluate import EvaluateConfig
from selfrefine.tasks.evaluate_policy import EvaluatePolicyConfig
from selfrefine.tasks.generate import GenerateConfig
from selfrefine.tasks.policy_round import PolicyRoundConfig
from selfrefine.tasks.score_filter import ScoreFilterConfig
from selfrefine.tasks.train_judge import TrainJudgeConfig

# The stages of one iteration, in order (runtime/registry.py lists every stage).
STAGES = iteration_stages()
# Stages that run models on accelerators: the ones a cluster sends to a GPU work pool.
GPU_STAGES = gpu_stages()


class DataConfig(BaseModel):
    """The data a run reads. Every source is validated before any stage starts."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    seed_pairs: list[DataSource] = Field(min_length=1, description=(
        "Human-labelled preference pairs the judge is trained on (and bootstraps rationales on)."))
    prompts: list[DataSource] = Field(min_length=1, description="Prompts the policy generates candidates for.")
    heldout_pairs: list[DataSource] = Field(min_length=1, description="Held-out labelled pairs for evaluation.")
    bestofn: list[DataSource] = Field(default_factory=list, description=(
        "Optional best-of-n sets (prompts with candidates carrying reference preferences) for the "
        "best-of-n win rate."))
    policy_prompts: list[DataSource] = Field(default_factory=list, description=(
        "Optional held-out prompts the policy is evaluated on (evaluate_policy); they must not be among "
        "the `prompts` the loop generates training candidates for."))


class RunConfig(BaseModel):
    """Everything a self-refine run needs besides the number of iterations."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: str = Field("self-refine", min_length=1, max_length=200, description="A label for the run.")
    seed: int = Field(0, ge=0, description="Seed of every stage (each stage derives its own from it).")
    data: DataConfig = Field(description="Seed pairs, prompts, held-out pairs and best-of-n sets.")
    dimension_definitions: dict[str, str] = Field(default_factory=dict, description=(
        "User-defined preference dimensions (name → verbalised definition), used by every stage."))
    train_judge: TrainJudgeConfig = Field(default_factory=TrainJudgeConfig, description="Judge training.")
    generate: GenerateConfig = Field(default_factory=GenerateConfig, description="Controllable generation.")
    bootstrap_rationales: BootstrapConfig = Field(default_factory=BootstrapConfig, description="STaR rationales.")
    score_filter: ScoreFilterConfig = Field(default_factory=ScoreFilterConfig, description="Scoring and filtering.")
    policy_round: PolicyRoundConfig = Field(default_factory=PolicyRoundConfig, description="DPO or rejection sampling.")
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig, description="Evaluation.")
    evaluate_policy: EvaluatePolicyConfig = Field(default_factory=EvaluatePolicyConfig, description=(
        "Policy evaluation by an independent evaluator (with data.policy_prompts)."))
    placement: dict[str, str] = Field(default_factory=dict, json_schema_extra={"affects_output": False},
                                      description=(
        "Where each stage runs: 'inline' (this process, the default) or the name of a Prefect work "
        "pool whose workers run the `stage` deployment (e.g. {'train_judge': 'gpu'})."))

    @field_validator("placement")
    @classmethod
    def _known_stages(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(value) - set(STAGES))
        if unknown:
            raise ValueError(f"placement names unknown stages {unknown}; stages are {list(STAGES)}")
        return value

    @model_validator(mode="after")
    def _tricks_fit_judge_kind(self) -> RunConfig:
        if "reward_head" in self.train_judge.judge_kinds and self.evaluate.uses_generative_tricks:
            raise ValueError("evaluate.demonstrations and evaluate.chain_of_thought prompt a generative judge; "
                             "train_judge trains a 'reward_head' judge (judge_kind or dimension_judge_kinds). "
                             "Set demonstrations: 0 and chain_of_thought: null, or only generative judge kinds")
        return self

    @model_validator(mode="after")
    def _policy_evaluation_has_an_evaluator(self) -> RunConfig:
        if self.data.policy_prompts and not self.evaluate_policy.evaluator:
            raise ValueError("data.policy_prompts asks for policy evaluation, which needs evaluate_policy.evaluator: "
                             "a judge directory, model artifact id, alias or hub id of a reward model that the "
                             "loop never trains")
        return self

    @model_validator(mode="after")
    def _read_the_judge_as_trained(self) -> RunConfig:
        # The judge records the reading it is trained for (judge.json); the run's own stages use the
        # same reading unless the config sets one, so a judge trained without the pairwise prompt is
        # never asked it.
        reading = trained_reading(self.train_judge.example_kinds)
        ranking = {"absolute": "absolute", "yes_log_odds": "yes_log_odds"}[reading["bestofn_scoring"]]
        pairwise_ok = self.evaluate.chain_of_thought is None  # chain of thought is a pairwise prompt
        _fill_unset(self, "evaluate", pairwise_verdicts=reading["pairwise_verdicts"] if pairwise_ok else None,
                    bestofn_scoring=reading["bestofn_scoring"])
        _fill_unset(self, "score_filter", pairwise_verdicts=reading["pairwise_verdicts"], ranking=ranking)
        if self.train_judge.keep_best is not None:
            gate = self.train_judge.keep_best
            unset = {"pairwise_verdicts": reading["pairwise_verdicts"]}
            unset = {k: v for k, v in unset.items() if k not in gate.model_fields_set}
            if unset:
                judge = self.train_judge.model_copy(update={"keep_best": gate.model_copy(update=unset)})
                object.__setattr__(self, "train_judge", judge)
        return self

    @model_validator(mode="after")
    def _share_dimensions(self) -> RunConfig:
        # One place to define a dimension; every stage sees the same definitions.
        if self.dimension_definitions:
            for stage in config_sections():
                sub = getattr(self, stage)
                merged = {**self.dimension_definitions, **sub.dimension_definitions}
                object.__setattr__(self, stage, sub.model_copy(update={"dimension_definitions": merged}))
        return self

    @property
    def evaluates_policy(self) -> bool:
        return bool(self.data.policy_prompts)

    def base_policy(self) -> str:
        return self.evaluate_policy.base_policy or self.train_judge.base_model

    def placement_of(self, stage: str) -> str:
        return self.placement.get(stage, "inline")


def _fill_unset(config: RunConfig, section: str, **values: str | None) -> None:
    """Set the fields of `config.<section>` the user left unset (None values are left alone)."""
    sub = getattr(config, section)
    update = {k: v for k, v in values.items() if v is not None and k not in sub.model_fields_set}
    if update:
        object.__setattr__(config, section, sub.model_copy(update=update))


def config_sections() -> tuple[str, ...]:
    """The stages with a config section of their own in `RunConfig` (the response stages are
    configured under evaluate_policy.responses, evaluate_evaluator by evaluate_policy)."""
    return tuple(name for name in STAGES if name in RunConfig.model_fields)


def preset_dir() -> Path:
    return Path(str(importlib.resources.files("selfrefine") / "presets"))


def preset_names() -> list[str]:
    return sorted(p.stem for p in preset_dir().glob("*.yaml"))


def load_config_file(path: str | Path) -> RunConfig:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return parse_config(raw, where=str(path))


def parse_config(raw: Any, where: str = "<config>") -> RunConfig:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: a run config must be a mapping, got {type(raw).__name__}")
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        more = f" (and {exc.error_count() - 1} more problems)" if exc.error_count() > 1 else ""
        at = f"field '{field}'" if field else "fields together"  # a cross-field rule names no one field
        raise ConfigError(f"{where}: {at}: {first['msg']}{more}") from None


def load_preset(name: str) -> RunConfig:
    path = preset_dir() / f"{name}.yaml"
    if not path.exists():
        raise ConfigError(f"unknown preset {name!r}; presets are {preset_names()} "
                          "(or pass a YAML file with --config)")
    return load_config_file(path)
