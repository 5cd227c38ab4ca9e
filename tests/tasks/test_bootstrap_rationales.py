"""The `bootstrap_rationales` stage: STaR rationales and their statistics.

Tests that read the shared chain (`chain`, tests/tasks/conftest.py) take one iteration's outcomes; tests
that run a stage again do so in fresh iterations of its run.
"""

from __future__ import annotations

import json

import pytest

from selfrefine.data import read_jsonl
from selfrefine.runtime.inputs import DATA_FILE
from selfrefine.tasks.bootstrap_rationales import Shown, rationale_records
from tests.tasks.conftest import TINY, read_rows


def test_rationale_stats_agree_with_the_rationale_files(chain):
    out = chain.output("bootstrap_rationales", "rationales")
    stats = json.loads((out / "stats.json").read_text())
    sft, dpo = read_rows(out / "sft.jsonl"), read_rows(out / "dpo.jsonl")
    seed_ids = {p.id for p in read_jsonl(chain.output("ingest_data", "seed_pairs_0") / DATA_FILE, "pairs")}
    assert stats["pairs"] == min(TINY.bootstrap_rationales.max_pairs, len(seed_ids))
    assert (stats["sft_examples"], stats["dpo_pairs"]) == (len(sft), len(dpo))
    assert stats["kept_direct"] + stats["kept_rationalized"] <= stats["pairs"]
    assert stats["keep_rate"] == pytest.approx(stats["kept_direct"] / stats["pairs"])
    kept_pairs = {r["pair_id"] for r in sft}
    assert kept_pairs <= seed_ids and len(kept_pairs) == stats["kept_direct"] + stats["kept_rationalized"]
    assert all(r["completion"].strip() and r["label"] in ("A", "B") for r in sft)
    assert {r["pair_id"] for r in dpo} <= kept_pairs
    assert chain.artifact(chain.outcomes["bootstrap_rationales"].outputs["rationales"]).meta == stats
    metrics = chain.metrics(chain.outcomes["bootstrap_rationales"].stage_run_id)
    stage_metrics = {m.name: m.value for m in metrics if m.name != "stage_function_seconds"}
    assert stage_metrics == {k: float(v) for k, v in stats.items()}


def test_rationale_records_keep_right_verdicts_and_rationalised_misses():
    """The tiny judge keeps no rationale, so the counting is also checked on hand-made verdicts."""
    from types import SimpleNamespace as NS

    from selfrefine.data import PreferencePair

    pairs = [PreferencePair(context=[{"role": "user", "content": f"question {i}"}], chosen=f"good {i}",
                            rejected=f"bad {i}", dimension=("helpful", "harmless")[i % 2], source="t")
             for i in range(3)]
    shown = [Shown(pairs[0], "A"), Shown(pairs[1], "B"), Shown(pairs[2], "A")]
    sample = lambda text, verdict: NS(text=text, verdict=verdict)  # noqa: E731
    first = [NS(samples=[sample("right", "A"), sample("wrong", "B"), sample("right", "A")]),
             NS(samples=[sample("wrong", "A"), sample("unparsable", None)]),
             NS(samples=[sample("wrong", "B")])]
    second = {1: NS(samples=[sample("hinted", "B")])}  # pair 2 had no rationalisation pass
    sft, dpo, stats = rationale_records(shown, first, second, None)
    assert [(r["pair_id"], r["completion"], r["label"]) for r in sft] == [
        (pairs[0].id, " right", "A"), (pairs[1].id, " hinted", "B")]
    assert [(r["pair_id"], r["chosen"], r["rejected"]) for r in dpo] == [(pairs[0].id, " right", " wrong"),
                                                                        (pairs[1].id, " hinted", " wrong")]
    # Each row names its pair's dimension, so a judge per dimension trains on its own rationales.
    assert [r["dimension"] for r in sft] == [r["dimension"] for r in dpo] == ["helpful", "harmless"]
    assert stats == {"pairs": 3, "kept_direct": 1, "kept_rationalized": 1, "keep_rate": 1 / 3,
                     "keep_rate_with_rationalization": 2 / 3, "sft_examples": 2, "dpo_pairs": 2}
