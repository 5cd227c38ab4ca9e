"""Measuring a judge: every metric of a judge on labelled pairs and best-of-n items.

`evaluate_judge` is what the `evaluate` stage reports and what `train_judge`'s keep-best gate
compares judges by (`scoring.judge_gate`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from selfrefine.models.generation.base import MAX_NEW_TOKENS
from selfrefine.scoring.metrics import absolute_metrics, best_of_n_metrics, grouped, pairwise_metrics


class ChainOfThoughtSettings(BaseModel):
    """Chain-of-thought judging with self-consistency: k rationales, majority vote."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    samples: int = Field(5, ge=2, description=(
        "Rationales sampled per pair (k), split over both presentation orders; the verdict is the majority."))
    max_new_tokens: int = Field(128, ge=8, le=MAX_NEW_TOKENS, description="Longest rationale, in tokens.")
    temperature: float = Field(0.7, gt=0, description="Sampling temperature (self-consistency needs diverse samples).")
    top_p: float = Field(0.95, gt=0, le=1, description="Nucleus sampling mass.")


def evaluate_judge(judge, pairs, bestofn, n_bins: int = 10, *,
                   chain_of_thought: ChainOfThoughtSettings | None = None, seed: int = 0,
                   pairwise_verdicts: Literal["prompt", "absolute"] = "prompt",
                   bestofn_scoring: Literal["absolute", "yes_log_odds", "pairwise"] = "absolute") -> dict:
    """All metrics of `judge` on labelled pairs and best-of-n items (either may be empty)."""
    from selfrefine.models.judge_modes import verdicts_from_scores, yes_log_odds
    from selfrefine.models.judge_types import AbsoluteItem, PairItem, truncation_metrics

    result: dict = {}
    truncated_before = getattr(judge, "truncated", 0)
    if pairs:
        items = [PairItem(p.context, p.chosen, p.rejected, p.dimension) for p in pairs]
        scored = judge.score_absolute([AbsoluteItem(p.context, r, p.dimension)
                                       for p in pairs for r in (p.chosen, p.rejected)])
        chosen, rejected = scored[0::2], scored[1::2]
        if chain_of_thought is not None:
            verdicts = _cot_verdicts(judge, items, chain_of_thought, seed)
        elif pairwise_verdicts == "absolute":
            verdicts = verdicts_from_scores(chosen, rejected)
        else:
            verdicts = judge.compare(items)
        result["pairwise"] = pairwise_metrics(verdicts, n_bins=n_bins)
        result["absolute"] = absolute_metrics(chosen, rejected, n_bins=n_bins)
        both = list(zip(verdicts, chosen, rejected))
        for level, key in (("by_source", lambda p: p.source), ("by_dimension", lambda p: p.dimension)):
            result[level] = grouped([key(p) for p in pairs], both, lambda g: {
                "pairwise": pairwise_metrics([v for v, _, _ in g], n_bins=n_bins),
                "absolute": absolute_metrics([c for _, c, _ in g], [r for _, _, r in g], n_bins=n_bins)})
    if bestofn:
        if bestofn_scoring == "pairwise":
            from selfrefine.models.judge_modes import tournament_picks

            # The tournament's winner gets the top score, so best_of_n_metrics picks it.
            per_item = [[float(i == pick) for i in range(len(item.candidates))]
                        for item, pick in zip(bestofn, tournament_picks(judge, bestofn))]
        else:
            rank = yes_log_odds if bestofn_scoring == "yes_log_odds" else (lambda s: s.score)
            per_item = candidate_scores(judge, bestofn, rank)
        result["bestofn"] = best_of_n_metrics(bestofn, per_item)
    # A judge reads an over-long response without its tail: how often that happened here.
    result.update((name, int(value)) for name, value, _ in truncation_metrics(judge, truncated_before))
    return result


def candidate_scores(judge, bestofn, rank=lambda score: score.score) -> list[list[float]]:
    """`rank` of the judge's absolute score of every candidate of every best-of-n item, per item in
    candidate order, from one batched `score_absolute` call."""
    from selfrefine.models.judge_types import AbsoluteItem

    scores = iter(rank(s) for s in judge.score_absolute(
        [AbsoluteItem(item.context, c.output, item.dimension) for item in bestofn for c in item.candidates]))
    return [[next(scores) for _ in item.candidates] for item in bestofn]


def _cot_verdicts(judge, items, settings: ChainOfThoughtSettings, seed: int):
    from selfrefine.models.generation.base import SamplingParams
    from selfrefine.models.judge_modes import cot_verdicts

    params = SamplingParams(temperature=settings.temperature, top_p=settings.top_p,
                            max_new_tokens=settings.max_new_tokens, seed=seed)
    return cot_verdicts(judge, items, settings.samples, params)
