"""`evaluate`: measure the judge on held-out data, against the previous iteration.

Pairwise accuracy (both orders), absolute accuracy, ECE with reliability bins, position
consistency — overall, per source and per dimension; the best-of-n win rate on sets whose
candidates carry reference preferences; and the change against the previous iteration's metrics.
The seed paper's judging tricks are switches here (generative judges): `demonstrations` (n-shot
in-context examples drawn from the `demo_pairs_*` inputs, the run's seed pairs), `chain_of_thought`
(pairwise verdicts by self-consistency over k sampled rationales) and `bestofn_scoring` (best-of-n
by absolute score or by a pairwise knockout tournament).

Inputs: `heldout_*` (pairs), optional `bestofn_*`, `judge` (or `judge_model` in the config for
standalone use), optional `previous_metrics`, `demo_pairs_*` when `demonstrations > 0`. Output:
`metrics` (JSON), also stored as metric rows.

When the previous iteration measured the same judge (by digest) on the same data with the same
settings, as after `train_judge.keep_best` kept it, its figures are taken over instead of scoring
every response again: on a CPU the best-of-n set alone takes a quarter of an hour. When only part of
a per-dimension judge changed, the unchanged sub-judges' recorded scores are taken over item by item
and the rest is scored (`score_replay`): bfloat16 scores on a CPU vary in the last bits between
processes, and a kept judge must not move the figures.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from selfrefine.errors import ConfigError
from selfrefine.models.dimensions import dimension_definitions_field
from selfrefine.runtime.inputs import inputs_with_prefix, read_items, sample
from selfrefine.runtime.keys import model_fingerprint
from selfrefine.runtime.keys import output_affecting
from selfrefine.runtime.stage import Output, Stage, StageContext, StageReturn
from selfrefine.scoring.judge_eval import ChainOfThoughtSettings, evaluate_judge
from selfrefine.scoring.judge_settings import JudgeSettings
from selfrefine.scoring.metric_rows import flatten_metrics, metric_deltas
from selfrefine.scoring.score_replay import record_scores, records

log = logging.getLogger(__name__)
# The headline figures compared against the previous iteration.
HEADLINE = ("pairwise.accuracy", "pairwise.calibration.ece", "pairwise.position_consistency",
            "absolute.accuracy", "bestofn.win_rate")


class EvaluateConfig(BaseModel):
    """What is evaluated and how."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    max_pairs: int | None = Field(None, ge=1, description="Evaluate at most this many held-out pairs (seeded sample).")
    max_bestofn: int | None = Field(None, ge=1, description="Evaluate at most this many best-of-n items.")
    n_bins: int = Field(10, ge=2, description="Reliability-diagram bins for ECE.")
    judge_model: str | None = Field(None, description=(
        "Judge to evaluate when no `judge` input artifact is given (standalone `selfrefine eval`)."))
    judge_model_fingerprint: str | None = Field(None, description=(
        "Filled in by `pin` when the stage runs: the content of judge_model, so changed weights are "
        "re-evaluated rather than reused."))
    judge: JudgeSettings = Field(default_factory=JudgeSettings, description="How the judge is loaded.")
    demonstrations: int = Field(0, ge=0, le=8, description=(
        "Solved in-context demonstrations (n-shot) put before every absolute and pairwise judge prompt, "
        "drawn from the run's seed pairs; 0 = zero-shot. Generative judges only."))
    chain_of_thought: ChainOfThoughtSettings | None = Field(None, description=(
        "Pairwise verdicts by chain of thought with self-consistency (k sampled rationales, majority "
        "vote) instead of the answer-token probabilities; None = off. Generative judges only."))
    pairwise_verdicts: Literal["prompt", "absolute"] = Field("prompt", description=(
        "How a held-out pair is judged: 'prompt' = the pairwise prompt in both orders (a reward head "
        "compares its two rewards either way); 'absolute' = each response asked the absolute Yes/No "
        "question on its own, P(chosen better) = sigmoid of the difference of their Yes log-odds, for a "
        "generative judge trained on absolute prompts. "
        "Left unset in a run config, it follows how train_judge.example_kinds trains the judge (the reading "
        "its judge.json records): 'absolute' for a judge trained without the pairwise prompt."))
    bestofn_scoring: Literal["absolute", "yes_log_odds", "pairwise"] = Field("absolute", description=(
        "How best-of-n picks a candidate: 'absolute' = the highest absolute score (the paper's ±1 + "
        "log-prob); 'yes_log_odds' = the highest log P(Yes) − log P(No), which also ranks candidates the "
        "judge calls bad by how bad (the same as 'absolute' for a reward head); 'pairwise' = a knockout "
        "tournament of pairwise comparisons, each match judged in both orders (n − 1 matches). Left unset "
        "in a run config: 'yes_log_odds' for a judge trained without the pairwise prompt, else 'absolute'."))
    dimension_definitions: dict[str, str] = dimension_definitions_field()

    @property
    def uses_generative_tricks(self) -> bool:
        return self.demonstrations > 0 or self.chain_of_thought is not None

    @model_validator(mode="after")
    def _one_way_to_judge_a_pair(self):
        if self.chain_of_thought is not None and self.pairwise_verdicts == "absolute":
            raise ValueError("chain_of_thought judges a pair side by side; pairwise_verdicts: absolute asks each "
                             "response on its own. Set one of them")
        return self


def pin(config: EvaluateConfig) -> EvaluateConfig:
    if config.judge_model is None:
        return config
    return config.model_copy(update={"judge_model_fingerprint": model_fingerprint(config.judge_model)})


def _get(nested: dict, dotted: str):
    node = nested
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def headline(nested: dict) -> dict[str, float]:
    return {k: v for k in HEADLINE if isinstance(v := _get(nested, k), (int, float))}


def with_demonstrations(judge, cfg: EvaluateConfig, demo_pairs, seed: int):
    """`judge` with `cfg.demonstrations` solved examples from `demo_pairs` before each prompt."""
    from selfrefine.models.judge_modes import demonstrations_from_pairs

    if cfg.uses_generative_tricks and judge.kind != "generative":
        raise ConfigError(f"evaluate: demonstrations and chain_of_thought need a generative judge; this one is a "
                          f"{judge.kind} judge. Set evaluate.demonstrations: 0 and evaluate.chain_of_thought: null")
    if cfg.demonstrations == 0:
        return judge
    if not demo_pairs:
        raise ConfigError(f"evaluate.demonstrations={cfg.demonstrations} needs labelled pairs to draw them from "
                          "(the run's seed pairs, inputs demo_pairs_*); none were given")
    judge.absolute_demonstrations, judge.pairwise_demonstrations = (
        tuple(d) for d in demonstrations_from_pairs(demo_pairs, cfg.demonstrations, seed, cfg.dimension_definitions))
    return judge


def measurement_key(ctx: StageContext, cfg: EvaluateConfig, seed: int) -> str:
    """What the figures depend on: the judge and data by digest, the settings, and the seed where it
    picks the items or samples rationales (otherwise it only orders the same items)."""
    import hashlib

    inputs = {role: a.sha256 for role, a in sorted(ctx.inputs.items()) if role != "previous_metrics"}
    seeded = cfg.max_pairs is not None or cfg.max_bestofn is not None or cfg.uses_generative_tricks
    payload = {"inputs": inputs, "config": cfg.model_dump(mode="json"), "seed": seed if seeded else None,
               "code": STAGE.code_version}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def scoring_settings(ctx: StageContext, cfg: EvaluateConfig, seed: int) -> dict:
    """What a judge's score of one item depends on besides the judge and the item: how it is loaded,
    the dimensions' definitions in its prompts, and the demonstrations put before them."""
    demos = cfg.demonstrations > 0
    return {"load": output_affecting(cfg.judge), "dimension_definitions": cfg.dimension_definitions,
            "demonstrations": cfg.demonstrations, "seed": seed if demos else None,
            "demo_pairs": sorted(a.sha256 for a in inputs_with_prefix(ctx.inputs, "demo_pairs")) if demos else []}


def run(ctx: StageContext) -> StageReturn:
    cfg: EvaluateConfig = ctx.config
    seed = ctx.seed or 0
    dims = cfg.dimension_definitions
    pairs = sample(read_items(inputs_with_prefix(ctx.inputs, "heldout"), "pairs", dims), cfg.max_pairs, seed)
    bestofn = sample(read_items(inputs_with_prefix(ctx.inputs, "bestofn"), "bestofn", dims), cfg.max_bestofn, seed)
    if not pairs and not bestofn:
        raise ConfigError("evaluate needs held-out pairs or best-of-n items; both are empty")
    judge_art = ctx.inputs.get("judge")
    judge_path = str(judge_art.path) if judge_art is not None else cfg.judge_model
    if judge_path is None:
        raise ConfigError("evaluate needs a `judge` input artifact or judge_model in its config")
    previous = None
    if "previous_metrics" in ctx.inputs:
        previous = json.loads(ctx.inputs["previous_metrics"].path.read_text())
    measured = measurement_key(ctx, cfg, seed)
    start = time.perf_counter()
    if previous is not None and previous.get("measured") == measured:
        log.info("evaluate: the previous iteration measured this judge on this data with these settings; "
                 "its figures are taken over")
        result = {k: v for k, v in previous.items() if k not in ("headline", "delta", "measured")}
    else:
        demo_pairs = read_items(inputs_with_prefix(ctx.inputs, "demo_pairs"), "pairs", dims)
        judge = with_demonstrations(cfg.judge.load(judge_path, cfg.dimension_definitions), cfg, demo_pairs, seed)
        # A (sub-)judge unchanged since the previous evaluation keeps its scores (score_replay).
        judge, recorders = record_scores(judge, judge_path, scoring_settings(ctx, cfg, seed),
                                         (previous or {}).get("item_scores"))
        result = evaluate_judge(judge, pairs, bestofn, cfg.n_bins, chain_of_thought=cfg.chain_of_thought,
                                seed=seed, pairwise_verdicts=cfg.pairwise_verdicts,
                                bestofn_scoring=cfg.bestofn_scoring)
        result["item_scores"] = records(recorders)
    # Wall time goes to the store's metrics, not into the artifact: the artifact holds only what the
    # judge, data and settings determine, so its timing never makes two equal evaluations differ.
    seconds = time.perf_counter() - start
    result["measured"] = measured
    result["headline"] = headline(result)
    result["delta"] = metric_deltas(result["headline"], previous.get("headline") if previous else None)
    out = ctx.out_dir / "metrics.json"
    out.write_text(json.dumps(result, indent=2, sort_keys=True))
    log.info("evaluate: %s", ", ".join(f"{k}={v:.3f}" for k, v in result["headline"].items()))
    return StageReturn({"metrics": Output(out, "metrics", {"headline": result["headline"]})},
                       flatten_metrics({k: v for k, v in result.items() if k != "item_scores"})
                       + [("seconds", seconds, {})])


STAGE = Stage(name="evaluate", code_version="7", config=EvaluateConfig, run=run, pin=pin)
# The evaluator measured as an instrument: this stage's best-of-n on the run's best-of-n sets.
EVALUATOR_STAGE = Stage(name="evaluate_evaluator", code_version="7", config=EvaluateConfig, run=run, pin=pin,
                        gpu=True)
