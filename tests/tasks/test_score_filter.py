"""The `score_filter` stage: scoring candidates, ranking and filtering them into training pairs.

Tests that read the shared chain (`chain`, tests/tasks/conftest.py) take one iteration's outcomes; tests
that run a stage again do so in fresh iterations of its run.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict

import pytest

from selfrefine.data import read_jsonl
from selfrefine.runtime.inputs import DATA_FILE
from tests.tasks.conftest import TINY, fraction, metric_value, read_rows


def test_score_filter_report_adds_up_and_kept_pairs_respect_the_limits(chain):
    cfg = TINY.score_filter
    candidates = read_rows(chain.output("generate", "candidates"))
    scored = read_rows(chain.output("score_filter", "scores"))
    report = json.loads(chain.output("score_filter", "report").read_text())
    pairs = read_jsonl(chain.output("score_filter", "pairs") / DATA_FILE, "pairs")

    # Every candidate is scored once, in order; the answer follows the sign of the score.
    assert [(r["prompt_id"], r["text"]) for r in scored] == [(r["prompt_id"], r["text"]) for r in candidates]
    for r in scored:
        assert -2.0 <= r["score"] <= 1.0 and fraction(r["p_yes"])
        assert (r["answer"] == "Yes") == (r["score"] > 0)

    steps = report["filter"]["steps"]
    assert [s["rule"] for s in steps] == ["pairing", "pairwise_check", "top_k", "diversity"]
    assert steps[0]["before"] == len({r["prompt_id"] for r in candidates})
    for prev, nxt in zip(steps, steps[1:]):
        assert nxt["before"] == prev["after"]
    for s in steps:
        assert s["removed"] == s["before"] - s["after"] >= 0
    assert report["filter"]["kept"] == steps[-1]["after"] == len(pairs)
    assert report["filter"]["removed_total"] == steps[0]["before"] - len(pairs)
    top_k_step = steps[2]
    assert top_k_step["after"] == min(top_k_step["before"], cfg.top_k)
    assert len(pairs) <= cfg.top_k
    if pairs:
        diversity = report["diversity"]
        assert sum(diversity["kept_per_cluster"]) == len(pairs)
        assert all(n <= min(cfg.per_cluster, size)
                   for n, size in zip(diversity["kept_per_cluster"], diversity["cluster_sizes"]))
        assert len(diversity["kept_per_cluster"]) <= cfg.n_clusters

    # A kept pair is its prompt's best- against its worst-scored candidate, by more than min_margin.
    by_prompt = defaultdict(list)
    for r in scored:
        by_prompt[r["prompt_id"]].append(r)
    by_text = {(r["prompt_id"], r["text"]): r for r in scored}
    for pair in pairs:
        prompt_id = next(r["prompt_id"] for r in scored
                         if r["text"] == pair.chosen and r["context"] == pair.context)
        group = by_prompt[prompt_id]
        best, worst = max(r["score"] for r in group), min(r["score"] for r in group)
        assert by_text[prompt_id, pair.chosen]["score"] == best
        assert by_text[prompt_id, pair.rejected]["score"] == worst
        assert best - worst > cfg.min_margin
        assert pair.source.startswith("self-refine/")

    metrics = chain.metrics(chain.outcomes["score_filter"].stage_run_id)
    for i, s in enumerate(steps):
        for what in ("before", "after", "removed"):
            assert metric_value(metrics, f"filter_{what}", rule=s["rule"], step=i) == s[what]
    assert metric_value(metrics, "kept_pairs") == len(pairs)
    assert metric_value(metrics, "candidates") == len(scored)


def test_score_filter_ranks_by_yes_log_odds_and_checks_pairs_by_the_absolute_scores(chain, monkeypatch):
    """ranking: yes_log_odds pairs each prompt's highest- against its lowest-log-odds candidate;
    pairwise_verdicts: absolute confirms a pair by those same two scores, so no paired candidate is
    rejected by the check and the judge's pairwise prompt is never asked."""
    from selfrefine.models.judge import Judge

    def no_pairwise_prompt(self, items):
        raise AssertionError("pairwise_verdicts: absolute must not ask the pairwise prompt")

    monkeypatch.setattr(Judge, "compare", no_pairwise_prompt)
    config = TINY.score_filter.model_copy(update={"ranking": "yes_log_odds", "pairwise_verdicts": "absolute"})
    outcome = chain.run("score_filter", config, chain.inputs["score_filter"], chain.new_iteration())
    scored = read_rows(chain.path(outcome.outputs["scores"]))
    report = json.loads(chain.path(outcome.outputs["report"]).read_text())
    pairs = read_jsonl(chain.path(outcome.outputs["pairs"]) / DATA_FILE, "pairs")
    for r in scored:
        assert r["yes_log_odds"] == pytest.approx(math.log(r["p_yes"] / (1 - r["p_yes"])), abs=1e-6)
    pairing, check = report["filter"]["steps"][:2]
    assert check["rule"] == "pairwise_check" and check["removed"] == 0 and check["before"] == pairing["after"]
    by_prompt = defaultdict(list)
    for r in scored:
        by_prompt[r["prompt_id"]].append(r)
    assert 0 < pairing["after"] <= sum(len({r["text"] for r in g}) > 1 for g in by_prompt.values())
    for pair in pairs:
        group = next(g for g in by_prompt.values() if any(r["text"] == pair.chosen and r["context"] == pair.context
                                                          for r in g))
        assert pair.chosen == max(group, key=lambda r: r["yes_log_odds"])["text"]
        assert pair.rejected == min(group, key=lambda r: r["yes_log_odds"])["text"]


def test_score_filter_scores_every_candidate_and_counts_those_read_without_their_tail(chain):
    """With a judge budget a little above the bare prompt, long candidates lose their tails: every
    candidate is still scored, and the stage says how many prompts were cut."""
    from selfrefine.models import prompts as P
    from selfrefine.models.loading import load_tokenizer

    first = chain.metrics(chain.outcomes["score_filter"].stage_run_id)
    assert metric_value(first, "responses_truncated") == 0  # the preset's budget fits every candidate
    candidates = read_rows(chain.output("generate", "candidates"))
    tokenizer = load_tokenizer(str(chain.output("train_judge", "judge")))
    bare = max(P.count_tokens(tokenizer, P.absolute_prompt([{"role": "user", "content": ""}], "", r["dimension"]))
               for r in candidates)
    longer = [r for r in candidates if len(tokenizer(r["text"], add_special_tokens=False)["input_ids"]) > 8]
    assert longer, "the tiny model's candidates are all short: nothing to cut"
    # Room for the bare absolute prompt and a few tokens of each response; the pairs are confirmed by
    # those absolute scores (the longer pairwise prompt would not fit: a ConfigError).
    judge = TINY.score_filter.judge.model_copy(update={"max_length": bare + 4})
    config = TINY.score_filter.model_copy(update={"judge": judge, "pairwise_verdicts": "absolute"})
    outcome = chain.run("score_filter", config, chain.inputs["score_filter"], chain.new_iteration())
    scored = read_rows(chain.path(outcome.outputs["scores"]))
    assert len(scored) == len(candidates)
    assert metric_value(chain.metrics(outcome.stage_run_id), "responses_truncated") >= len(longer)
