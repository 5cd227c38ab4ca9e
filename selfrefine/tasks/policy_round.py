"""`policy_round`: improve the policy on the judge's filtered preferences, with TRL.

- `dpo`: DPO (TRL DPOTrainer) on the filtered (chosen, rejected) pairs.
- `rejection_sampling`: for every prompt, the best of its N candidates by judge score (above an
  optional floor), then SFT (TRL SFTTrainer) on those.

Both train on the controllable-generation prompt ("… A more {adj} response: Assistant:"), the
prompt the next iteration generates with. Inputs: `pairs` (filtered pairs), `scores` (scored
candidates, for rejection sampling), `policy` (the model to improve). Output: `policy`.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Mapping, Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from selfrefine.data import PreferencePair
from selfrefine.models import prompts as P
from selfrefine.models.dimensions import get_dimension
from selfrefine.models.dimensions import dimension_definitions_field
from selfrefine.models.training.config import DPORecipeConfig, SFTRecipeConfig
from selfrefine.runtime.inputs import read_pairs, require
from selfrefine.runtime.stage import Output, Stage, StageContext, StageReturn

log = logging.getLogger(__name__)


class PolicyRoundConfig(BaseModel):
    """How the policy is improved."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    method: Literal["dpo", "rejection_sampling"] = Field("dpo", description=(
        "'dpo': DPO on the filtered pairs; 'rejection_sampling': SFT on the best-scored candidate "
        "of every prompt."))
    dpo: DPORecipeConfig = Field(default_factory=DPORecipeConfig, description="Recipe for method='dpo'.")
    sft: SFTRecipeConfig = Field(default_factory=SFTRecipeConfig, description="Recipe for method='rejection_sampling'.")
    min_score: float | None = Field(None, description=(
        "rejection_sampling: keep a prompt's best candidate only if its judge score is at least this "
        "(absolute scores lie in [-2, 1]; > 0 means the judge answered Yes)."))
    dimension_definitions: dict[str, str] = dimension_definitions_field()


def dpo_examples(pairs: Sequence[PreferencePair], extra: Mapping[str, str] | None = None) -> list[dict]:
    return [{"prompt": P.controllable_prompt(p.context, get_dimension(p.dimension, extra), "more"),
             "chosen": " " + p.chosen, "rejected": " " + p.rejected} for p in pairs]


def best_of_n_examples(scored: Sequence[dict], min_score: float | None,
                       extra: Mapping[str, str] | None = None) -> list[dict]:
    """The highest-scoring candidate per prompt (ties: the first seen) as an SFT example."""
    best: dict[str, dict] = {}
    for row in scored:
        current = best.get(row["prompt_id"])
        if current is None or row["score"] > current["score"]:
            best[row["prompt_id"]] = row
    examples = []
    for row in best.values():
        if min_score is not None and row["score"] < min_score:
            continue
        dim = get_dimension(row["dimension"], extra)
        examples.append({"prompt": P.controllable_prompt(row["context"], dim, "more"),
                         "completion": " " + row["text"]})
    return examples


def run(ctx: StageContext) -> StageReturn:
    from datasets import Dataset

    from selfrefine.models.judge_info import as_policy
    from selfrefine.models.training.dpo import train_dpo
    from selfrefine.models.training.sft import train_sft

    cfg: PolicyRoundConfig = ctx.config
    seed = ctx.seed or 0
    policy = str(require(ctx.inputs, "policy", ctx.stage).path)
    out = ctx.out_dir / "policy"
    if cfg.method == "dpo":
        pairs = read_pairs([require(ctx.inputs, "pairs", ctx.stage)], cfg.dimension_definitions)
        examples = dpo_examples(pairs, cfg.dimension_definitions)
    else:
        with open(require(ctx.inputs, "scores", ctx.stage).path, encoding="utf-8") as f:
            scored = [json.loads(line) for line in f if line.strip()]
        examples = best_of_n_examples(scored, cfg.min_score, cfg.dimension_definitions)
    if not examples:
        # Nothing passed the filters: the policy is unchanged, and the record says so.
        # (Same bytes, so the store keeps one copy; the lineage records this stage made it.)
        log.warning("policy_round: no training examples; the policy is carried over unchanged")
        shutil.copytree(policy, out)
        return StageReturn({"policy": Output(out, "model", {"method": cfg.method, "examples": 0,
                                                            "unchanged": True})},
                           [("train_examples", 0.0, {"method": cfg.method}), ("examples", 0.0, {})])
    dataset = Dataset.from_list(examples)
    policy = as_policy(policy)  # of a judge per dimension, the sub-judge that generated
    if cfg.method == "dpo":
        result = train_dpo(policy, dataset, out, cfg.dpo.model_copy(update={"seed": seed}))
    else:
        result = train_sft(policy, dataset, out, cfg.sft.model_copy(update={"seed": seed}))
    final_loss = result.loss_history[-1][1] if result.loss_history else float("nan")
    labels = {"method": cfg.method}
    metrics = [("examples", float(len(examples)), {}),
               ("train_examples", float(len(examples)), labels), ("final_loss", float(final_loss), labels),
               ("train_seconds", float(result.seconds), labels)]
    meta = {"method": cfg.method, "examples": len(examples), "final_loss": final_loss}
    return StageReturn({"policy": Output(out, "model", meta)}, metrics)


STAGE = Stage(name="policy_round", code_version="1", config=PolicyRoundConfig, run=run, gpu=True)
