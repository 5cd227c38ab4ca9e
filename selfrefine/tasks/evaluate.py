"""`evaluate`: measure the judge on held-out data, against the previous iteration.

Pairwise accuracy (both orders), absolute accuracy, ECE with reliability bins, position
consistency — overall, per source and per dimension; the best-of-n win rate on sets whose
candidates carry reference preferences; and the change against the previous iteration's metrics.
Inputs: `heldout_*` (pairs), optional `bestofn_*`, `judge` (or `judge_model` in the config for
standalone use), optional `previous_metrics`. Output: `metrics` (JSON), also stored as metric rows.
"""

from __future__ import annotations

import json
import logging
import time

from pydantic import BaseModel, ConfigDict, Field

from selfrefine.errors import ConfigError
from selfrefine.tasks.common import (
    JudgeSettings, dimension_definitions_field, inputs_with_prefix, model_fingerprint, read_items, sample,
)
from selfrefine.tasks.metrics import (
    absolute_metrics,
    best_of_n_metrics,
    flatten_metrics,
    grouped,
    metric_deltas,
    pairwise_metrics,
)
from selfrefine.tasks.runner import Output, StageContext, StageReturn

STAGE = "evaluate"
CODE_VERSION = "1"
log = logging.getLogger(__name__)
# The headline figures compared against the previous iteration.
HEADLINE = ("pairwise.accuracy", "pairwise.calibration.ece", "pairwise.position_consistency",
            "absolute.accuracy", "bestofn.win_rate")


class EvaluateConfig(BaseModel):
    """What is evaluated and how."""

    model_config = ConfigDict(extra="forbid")

    max_pairs: int | None = Field(None, ge=1, description="Evaluate at most this many held-out pairs (seeded sample).")
    max_bestofn: int | None = Field(None, ge=1, description="Evaluate at most this many best-of-n items.")
    n_bins: int = Field(10, ge=2, description="Reliability-diagram bins for ECE.")
    judge_model: str | None = Field(None, description=(
        "Judge to evaluate when no `judge` input artifact is given (standalone `selfrefine eval`)."))
    judge_model_fingerprint: str | None = Field(None, description=(
        "Filled in by `pin` when the stage runs: the content of judge_model, so changed weights are "
        "re-evaluated rather than reused."))
    judge: JudgeSettings = Field(default_factory=JudgeSettings, description="How the judge is loaded.")
    dimension_definitions: dict[str, str] = dimension_definitions_field()


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


def evaluate_judge(judge, pairs, bestofn, n_bins: int = 10) -> dict:
    """All metrics of `judge` on labelled pairs and best-of-n items (either may be empty)."""
    from selfrefine.models.judge import AbsoluteItem, PairItem

    result: dict = {}
    if pairs:
        verdicts = judge.compare([PairItem(p.context, p.chosen, p.rejected, p.dimension) for p in pairs])
        scored = judge.score_absolute([AbsoluteItem(p.context, r, p.dimension)
                                       for p in pairs for r in (p.chosen, p.rejected)])
        chosen, rejected = scored[0::2], scored[1::2]
        result["pairwise"] = pairwise_metrics(verdicts, n_bins=n_bins)
        result["absolute"] = absolute_metrics(chosen, rejected, n_bins=n_bins)
        both = list(zip(verdicts, chosen, rejected))
        for level, key in (("by_source", lambda p: p.source), ("by_dimension", lambda p: p.dimension)):
            result[level] = grouped([key(p) for p in pairs], both, lambda g: {
                "pairwise": pairwise_metrics([v for v, _, _ in g], n_bins=n_bins),
                "absolute": absolute_metrics([c for _, c, _ in g], [r for _, _, r in g], n_bins=n_bins)})
    if bestofn:
        flat = [AbsoluteItem(item.context, c.output, item.dimension) for item in bestofn for c in item.candidates]
        scores = iter(s.score for s in judge.score_absolute(flat))
        per_item = [[next(scores) for _ in item.candidates] for item in bestofn]
        result["bestofn"] = best_of_n_metrics(bestofn, per_item)
    return result


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
    judge = cfg.judge.load(judge_path, cfg.dimension_definitions)
    start = time.perf_counter()
    result = evaluate_judge(judge, pairs, bestofn, cfg.n_bins)
    # Wall time goes to the store's metrics, not into the artifact: the same evaluation must
    # give the same bytes (and digest) on every rerun.
    seconds = time.perf_counter() - start
    previous = None
    if "previous_metrics" in ctx.inputs:
        previous = json.loads(ctx.inputs["previous_metrics"].path.read_text())
    result["headline"] = headline(result)
    result["delta"] = metric_deltas(result["headline"], previous.get("headline") if previous else None)
    out = ctx.out_dir / "metrics.json"
    out.write_text(json.dumps(result, indent=2, sort_keys=True))
    log.info("evaluate: %s", ", ".join(f"{k}={v:.3f}" for k, v in result["headline"].items()))
    return StageReturn({"metrics": Output(out, "metrics", {"headline": result["headline"]})},
                       flatten_metrics(result) + [("seconds", seconds, {})])
