"""`RunKnobs`: the main settings of a run, set on top of a preset from the Prefect UI's form.

The `self-refine` deployment's form shows the preset, the number of iterations and these knobs
with their descriptions; the full `RunConfig` stays available below them. A knob left empty (None)
keeps the value of the preset (or of the full config when one is given).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from selfrefine.flows.config import RunConfig, parse_config
from selfrefine.models.generation.base import MAX_NEW_TOKENS

KEEP = " None keeps the preset's value."


class RunKnobs(BaseModel):
    """The main settings of a run; each one left empty keeps the preset's value."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    seed: int | None = Field(None, ge=0, description="Seed of every stage (each derives its own)." + KEEP)
    judge_train_steps: int | None = Field(None, ge=1, description=(
        "Optimizer steps of judge training (train_judge.recipe.max_steps) per iteration." + KEEP))
    samples_per_direction: int | None = Field(None, ge=1, description=(
        "Candidates generated per prompt for each of 'more' and 'less' {dimension} "
        "(generate.samples_per_direction)." + KEEP))
    max_new_tokens: int | None = Field(None, ge=1, le=MAX_NEW_TOKENS, description=(
        "Longest generated response, in tokens (generate.max_new_tokens)." + KEEP))
    rationales_per_pair: int | None = Field(None, ge=1, description=(
        "STaR rationales sampled per labelled pair (bootstrap_rationales.samples_per_pair)." + KEEP))
    filter_top_k: int | None = Field(None, ge=1, description=(
        "Self-generated pairs kept by score margin before the diversity step (score_filter.top_k)." + KEEP))
    filter_clusters: int | None = Field(None, ge=1, description=(
        "k-means clusters of the diversity step (score_filter.n_clusters)." + KEEP))
    policy_method: Literal["dpo", "rejection_sampling"] | None = Field(None, description=(
        "Policy update: 'dpo' (TRL DPOTrainer on the filtered pairs) or 'rejection_sampling' "
        "(best-of-n by judge score, then TRL SFTTrainer) (policy_round.method)." + KEEP))


# Knob → dotted RunConfig field it sets.
FIELDS = {"seed": "seed", "judge_train_steps": "train_judge.recipe.max_steps",
          "samples_per_direction": "generate.samples_per_direction",
          "max_new_tokens": "generate.max_new_tokens",
          "rationales_per_pair": "bootstrap_rationales.samples_per_pair",
          "filter_top_k": "score_filter.top_k", "filter_clusters": "score_filter.n_clusters",
          "policy_method": "policy_round.method"}


def apply_knobs(cfg: RunConfig, knobs: RunKnobs | None) -> RunConfig:
    """`cfg` with every knob that is set written into its field (validated again as a whole)."""
    changes = {name: value for name, value in (knobs or RunKnobs()).model_dump().items() if value is not None}
    if not changes:
        return cfg
    raw = cfg.model_dump(mode="json")
    for name, value in changes.items():
        *parents, leaf = FIELDS[name].split(".")
        node = raw
        for part in parents:
            node = node[part]
        node[leaf] = value
    return parse_config(raw, where="knobs")
