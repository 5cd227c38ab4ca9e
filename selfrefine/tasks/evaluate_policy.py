"""`evaluate_policy`: how good the loop's policy is, by an evaluator the loop never trains.

Inputs: `responses` (the iteration's policy on the held-out policy prompts, from
`policy_responses`), `base_responses` (the run's base policy on the same prompts), optional
`previous_responses` (the previous iteration's policy; in iteration 1 the base's), and the
evaluator: an `evaluator` model artifact, or `evaluator` in the config (a judge directory, an alias,
or a hub id of a sequence-classification reward model), pinned by content so that the stage key and
the lineage name exactly the evaluator that scored.

The evaluator gives every response one scalar: a reward model's reward, or a generative judge's
log P(Yes) − log P(No) on the absolute prompt. From those (`policy_metrics`): the win rate against
the base and against the previous policy (ties count half) with standard errors, the
length-controlled win rate (AlpacaEval 2's GLM on the length difference, length term set to
zero), the mean response length, and controllability (the share of prompts where the evaluator
prefers the policy's "A more {dim} response" answer to its "A less {dim} response" answer) —
overall and per dimension. Output: `metrics` (JSON, with every response's reward), also stored
as metric rows.
"""

from __future__ import annotations

import json
import logging
import time

from pydantic import BaseModel, ConfigDict, Field

from selfrefine.errors import ConfigError, DataError
from selfrefine.models.dimensions import dimension_definitions_field
from selfrefine.models.judge_types import truncation_metrics
from selfrefine.runtime.inputs import require
from selfrefine.runtime.keys import model_fingerprint
from selfrefine.runtime.stage import Output, Stage, StageContext, StageReturn
from selfrefine.scoring.judge_settings import JudgeSettings
from selfrefine.scoring.metric_rows import flatten_metrics
from selfrefine.tasks.evaluate import EvaluateConfig
from selfrefine.tasks.policy_responses import RespondConfig, ResponseSettings

log = logging.getLogger(__name__)


class EvaluatePolicyConfig(BaseModel):
    """How the policy is evaluated (runs only when the run has `data.policy_prompts`)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    evaluator: str | None = Field(None, description=(
        "The evaluator, never trained by the loop: a model artifact id (or unique prefix), a judge "
        "directory, an alias ('packaged', 'tiny'), or a hub id of a sequence-classification reward "
        "model. Required when data.policy_prompts is set."))
    evaluator_fingerprint: str | None = Field(None, description=(
        "Filled in by `pin`: the content of a named evaluator directory or alias, so the stage key and "
        "the stage run's config record exactly which evaluator scored (hub ids: pin a revision in the id)."))
    base_policy: str | None = Field(None, description=(
        "The policy every iteration is compared with; None = train_judge.base_model (the model before "
        "the run trained anything)."))
    responses: ResponseSettings = Field(default_factory=ResponseSettings, description=(
        "How every policy answers the policy prompts (greedy by default, so the comparisons are paired)."))
    judge: JudgeSettings = Field(default_factory=JudgeSettings, description="How the evaluator is loaded.")
    check_evaluator: bool = Field(True, description=(
        "Measure the evaluator as an instrument first: its best-of-n win rate on the run's best-of-n sets "
        "next to random picking and always picking the longest answer (stage evaluate_evaluator; its key "
        "does not depend on the iteration, so it runs once per evaluator and data)."))
    check_max_items: int | None = Field(None, ge=1, description=(
        "evaluate_evaluator: at most this many best-of-n items (a seeded sample)."))
    n_bootstrap: int = Field(200, ge=0, le=100_000, description=(
        "Bootstrap resamples of the prompts for the standard error of the length-controlled win rate."))
    dimension_definitions: dict[str, str] = dimension_definitions_field()


    def respond_config(self, model: str | None = None) -> RespondConfig:
        """The config of the response stages: these response settings, and `model` for a policy named
        rather than given as an input artifact (the base policy)."""
        return RespondConfig(**self.responses.model_dump(), model=model,
                             dimension_definitions=self.dimension_definitions)

    def evaluator_check_config(self, by_artifact: bool) -> EvaluateConfig:
        """The evaluate stage's config that measures the evaluator's best-of-n on best-of-n sets, read as
        this stage reads it (the highest reward or Yes log-odds). `by_artifact`: the evaluator is given
        as the stage's `judge` input rather than by name."""
        return EvaluateConfig(max_bestofn=self.check_max_items, bestofn_scoring="yes_log_odds", judge=self.judge,
                              judge_model=None if by_artifact else self.evaluator,
                              dimension_definitions=self.dimension_definitions)


def pin(config: EvaluatePolicyConfig) -> EvaluatePolicyConfig:
    if config.evaluator is None:
        return config
    return config.model_copy(update={"evaluator_fingerprint": model_fingerprint(config.evaluator)})


def read_responses(path, what: str) -> dict[tuple[str, str], dict]:
    """Rows of a responses file by (prompt id, direction)."""
    rows = {}
    with open(path, encoding="utf-8") as f:
        for row in map(json.loads, filter(str.strip, f)):
            rows[(row["prompt_id"], row["direction"])] = row
    if not rows:
        raise DataError(f"{what}: no responses")
    return rows


def paired_prompts(current: dict, other: dict, what: str) -> None:
    """Every prompt the policy answered must be answered by the policy it is compared with."""
    missing = {pid for pid, d in current if d == "more"} - {pid for pid, d in other if d == "more"}
    if missing:
        raise DataError(f"{what} miss {len(missing)} of the policy's prompts; the responses were generated "
                        "with different prompts or settings (evaluate_policy.responses)")


def score_responses(evaluator, rows: list[dict]) -> list[float]:
    """One reward per row; identical (context, response, dimension) items are scored once."""
    from selfrefine.models.judge_modes import yes_log_odds
    from selfrefine.models.judge_types import AbsoluteItem

    keys = [json.dumps([r["context"], r["text"], r["dimension"]], sort_keys=True) for r in rows]
    first = dict(zip(reversed(keys), reversed(rows)))  # each key's first row
    scores = evaluator.score_absolute([AbsoluteItem(r["context"], r["text"], r["dimension"]) for r in first.values()])
    by_key = dict(zip(first, map(yes_log_odds, scores)))
    return [by_key[k] for k in keys]


def run(ctx: StageContext) -> StageReturn:
    from selfrefine.scoring.policy_metrics import PolicyScores, policy_eval_metrics

    cfg: EvaluatePolicyConfig = ctx.config
    current = read_responses(require(ctx.inputs, "responses", ctx.stage).path, "responses")
    base = read_responses(require(ctx.inputs, "base_responses", ctx.stage).path, "base_responses")
    previous = (read_responses(ctx.inputs["previous_responses"].path, "previous_responses")
                if "previous_responses" in ctx.inputs else None)
    paired_prompts(current, base, "the base policy's responses")
    if previous is not None:
        paired_prompts(current, previous, "the previous policy's responses")
    evaluator_art = ctx.inputs.get("evaluator")
    evaluator_path = str(evaluator_art.path) if evaluator_art is not None else cfg.evaluator
    if evaluator_path is None:
        raise ConfigError("evaluate_policy needs an evaluator: set evaluate_policy.evaluator (a judge directory, "
                          "model artifact, alias or hub id of a reward model)")
    prompt_ids = [pid for pid, d in current if d == "more"]
    rows = ([current[(p, "more")] for p in prompt_ids] + [current[(p, "less")] for p in prompt_ids]
            + [base[(p, "more")] for p in prompt_ids]
            + ([previous[(p, "more")] for p in prompt_ids] if previous is not None else []))
    start = time.perf_counter()
    evaluator = cfg.judge.load(evaluator_path, cfg.dimension_definitions)
    rewards = score_responses(evaluator, rows)
    seconds = time.perf_counter() - start
    n = len(prompt_ids)

    def scores(offset: int, with_less: bool = False) -> PolicyScores:
        more_rows = rows[offset:offset + n]
        return PolicyScores(more_reward=rewards[offset:offset + n],
                            less_reward=rewards[n:2 * n] if with_less else None,
                            more_length=[len(r["text"]) for r in more_rows])

    result = policy_eval_metrics([current[(p, "more")]["dimension"] for p in prompt_ids],
                                 scores(0, with_less=True), scores(2 * n),
                                 scores(3 * n) if previous is not None else None,
                                 seed=ctx.seed or 0, n_bootstrap=cfg.n_bootstrap)
    result["mean_tokens"] = sum(current[(p, "more")]["tokens"] for p in prompt_ids) / n
    result["evaluator"] = {"name": cfg.evaluator if evaluator_art is None else f"artifact {evaluator_art.id}",
                           "fingerprint": (f"sha256:{evaluator_art.sha256}" if evaluator_art is not None
                                           else cfg.evaluator_fingerprint),
                           "kind": getattr(evaluator, "kind", None)}
    result["rewards"] = [{"prompt_id": r["prompt_id"], "direction": r["direction"], "role": role, "reward": x}
                         for r, x, role in zip(rows, rewards, ["policy"] * 2 * n + ["base"] * n + ["previous"] * n)]
    out = ctx.out_dir / "metrics.json"
    out.write_text(json.dumps(result, indent=2, sort_keys=True))
    vs_base = result["vs_base"]
    log.info("evaluate_policy: win rate vs base %.3f ± %.3f (length-controlled %.3f), controllability %.3f, "
             "mean length %.0f chars", vs_base["win_rate"], vs_base["win_rate_se"] or 0.0, vs_base["lc_win_rate"],
             result["controllability"]["controllability"], result["mean_length"])
    rows_out = flatten_metrics({k: v for k, v in result.items() if k not in ("rewards", "evaluator")})
    return StageReturn({"metrics": Output(out, "metrics", {"evaluator": result["evaluator"]})},
                       rows_out + [("evaluator_seconds", seconds, {})] + truncation_metrics(evaluator))


STAGE = Stage(name="evaluate_policy", code_version="3", config=EvaluatePolicyConfig, run=run, pin=pin, gpu=True)
