"""Evaluation metrics: ECE against hand arithmetic, pairwise/absolute judge metrics, grouping,
best-of-n picks, deltas and the rows written to the store."""

from __future__ import annotations

import json

import numpy as np
import pytest

from selfrefine.data import DataSource, load_bestofn
from selfrefine.data.schema import BestOfNItem, Candidate, turn
from selfrefine.errors import ConfigError, DataError
from selfrefine.models.judge_types import AbsoluteScore, PairVerdict
from selfrefine.scoring.metric_rows import delta_rows, flatten_metrics, metric_deltas, metric_key
from selfrefine.scoring.metrics import (
    absolute_metrics,
    best_of_n_metrics,
    expected_calibration_error,
    grouped,
    judge_picks,
    pairwise_metrics,
)


def verdict(p_a, forward, swapped, consistent) -> PairVerdict:
    return PairVerdict("A" if p_a >= 0.5 else "B", p_a, forward, swapped, consistent)


def yes_no(score, p_yes) -> AbsoluteScore:
    return AbsoluteScore("Yes" if score > 0 else "No", score, score - (1 if score > 0 else -1), p_yes, -1.0)


# --- expected calibration error -----------------------------------------------------------------

def test_ece_matches_hand_computation_with_empty_bins():
    # 5 bins: [0,.2] (.2,.4] (.4,.6] (.6,.8] (.8,1]; confidence = max(p, 1-p).
    probs = [0.9, 0.15, 0.3, 0.65, 0.75, 0.5, 0.55]
    labels = [1, 1, 0, 0, 1, 0, 1]
    # conf/correct: .9/1  .85/0 (predicts 0, label 1)  .7/1  .65/0  .75/1  .5/0.5 (tie)  .55/1
    # bin 4 (.8,1]: conf (.9+.85)/2 = .875, acc 1/2        → gap .375, 2 examples
    # bin 3 (.6,.8]: conf (.7+.65+.75)/3 = .7, acc 2/3      → gap 1/30, 3 examples
    # bin 2 (.4,.6]: conf (.5+.55)/2 = .525, acc (.5+1)/2=.75 → gap .225, 2 examples
    # ECE = (2*.375 + 3/30 + 2*.225) / 7 = 1.3 / 7
    report = expected_calibration_error(probs, labels, n_bins=5)
    assert report.ece == pytest.approx(1.3 / 7)
    assert report.max_calibration_error == pytest.approx(0.375)
    assert report.n == 7
    assert [b.count for b in report.bins] == [0, 0, 2, 3, 2]
    assert [b.lower for b in report.bins] == pytest.approx([0, .2, .4, .6, .8])
    assert [b.upper for b in report.bins] == pytest.approx([.2, .4, .6, .8, 1])
    for empty in report.bins[:2]:
        assert empty.mean_confidence is None and empty.accuracy is None
    assert report.bins[2].mean_confidence == pytest.approx(0.525)
    assert report.bins[2].accuracy == pytest.approx(0.75)
    assert report.bins[3].accuracy == pytest.approx(2 / 3)
    assert report.bins[4].mean_confidence == pytest.approx(0.875)
    json.dumps(report.to_json())  # JSON-ready, None for empty bins


def test_perfect_calibration_gives_zero():
    # p=.8 right 4 times in 5; p=.25 (predicts 0 with confidence .75) right 3 times in 4;
    # certain predictions always right.
    probs = [0.8] * 5 + [0.25] * 4 + [1.0, 0.0]
    labels = [1, 1, 1, 1, 0] + [0, 0, 0, 1] + [1, 0]
    assert expected_calibration_error(probs, labels).ece == pytest.approx(0.0, abs=1e-12)


def test_overconfidence_is_measured():
    report = expected_calibration_error([1.0, 1.0, 0.0, 0.0], [1, 0, 0, 1], n_bins=10)
    assert report.ece == pytest.approx(0.5)
    assert report.bins[-1].count == 4 and report.bins[-1].accuracy == pytest.approx(0.5)


def test_probability_one_half_counts_half_right_whatever_the_label():
    for labels in ([0, 0], [1, 1], [0, 1]):
        report = expected_calibration_error([0.5, 0.5], labels, n_bins=10)
        assert report.ece == pytest.approx(0.0)
        assert report.bins[4].count == 2 and report.bins[4].accuracy == 0.5  # bin (.4, .5]


def test_ece_rejects_bad_input_with_clear_errors():
    with pytest.raises(DataError, match="empty"):
        expected_calibration_error([], [])
    with pytest.raises(DataError, match=r"probs\[1\] = 1.5"):
        expected_calibration_error([0.2, 1.5], [0, 1])
    with pytest.raises(DataError, match=r"labels\[0\] = 2.0.*0 or 1"):
        expected_calibration_error([0.2], [2])
    with pytest.raises(DataError, match="finite"):
        expected_calibration_error([float("nan")], [1])
    with pytest.raises(ValueError, match="2 probabilities for 1 labels"):
        expected_calibration_error([0.2, 0.3], [1])
    with pytest.raises(ConfigError, match="n_bins"):
        expected_calibration_error([0.2], [1], n_bins=0)


# --- pairwise -----------------------------------------------------------------------------------

VERDICTS = [
    verdict(0.8, 0.9, 0.7, True),    # right in both orders
    verdict(0.5, 0.7, 0.3, False),   # a tie overall; picks whichever is shown first both times
    verdict(0.3, 0.4, 0.2, True),    # wrong in both orders
    verdict(0.6, 0.5, 0.7, False),   # forward is a tie
]


def test_pairwise_metrics_on_hand_made_verdicts():
    m = pairwise_metrics(VERDICTS)
    assert m["n"] == 4
    assert m["accuracy"] == pytest.approx((1 + 0.5 + 0 + 1) / 4)
    # Per pair 1, .5, 0, 1: squared deviations from .625 sum to .6875; sample variance .6875 / 3.
    assert m["accuracy_se"] == pytest.approx((0.6875 / 3) ** 0.5 / 2)
    assert m["accuracy_forward"] == pytest.approx((1 + 1 + 0 + 0.5) / 4)
    assert m["accuracy_swapped"] == pytest.approx((1 + 0 + 0 + 1) / 4)
    assert m["position_consistency"] == pytest.approx(2 / 4)
    # First shown wins: forward p_a_forward > .5 → [1, 1, 0, .5]; swapped p_a_swapped < .5 → [0, 1, 1, 0].
    assert m["first_position_rate"] == pytest.approx((2.5 + 2) / 8)
    assert m["mean_p_chosen"] == pytest.approx(0.55)
    # Symmetrised: each pair twice, same bin and correctness. conf/correct: .8/1 .5/.5 .7/0 .6/1
    # → gaps .2, 0, .7, .4, each bin holding 2 of 8 examples → ECE = (.2 + 0 + .7 + .4) / 4.
    cal = m["calibration"]
    assert cal["n"] == 8
    assert cal["ece"] == pytest.approx(1.3 / 4)
    assert [b["count"] for b in cal["bins"]] == [0, 0, 0, 0, 2, 2, 2, 2, 0, 0]


def test_pairwise_metrics_expose_a_judge_that_always_answers_a():
    # Forward: response_a is OPTION A, the judge says A (right). Swapped: response_a is OPTION B,
    # the judge still says A (wrong). Every verdict is inconsistent and the first position always wins.
    always_a = [verdict(0.5, 0.9, 0.1, False), verdict(0.45, 0.8, 0.1, False)]
    m = pairwise_metrics(always_a)
    assert (m["accuracy_forward"], m["accuracy_swapped"]) == (1.0, 0.0)
    assert m["position_consistency"] == 0.0
    assert m["first_position_rate"] == 1.0
    assert m["accuracy"] == pytest.approx((0.5 + 0.0) / 2)


def test_pairwise_ece_equals_the_more_paper_binning_over_both_orders():
    # MORE's code bins P(label=1) over both orders of every pair: examples (p, 1) and (1-p, 0),
    # ECE = sum over bins |sum p - sum y| / N. With an even number of bins it equals ours.
    rng = np.random.default_rng(0)
    p = rng.uniform(0, 1, 200)
    y_prob, y_true = np.concatenate([p, 1 - p]), np.concatenate([np.ones(200), np.zeros(200)])
    for n_bins in (2, 10, 20):
        ids = np.searchsorted(np.linspace(0, 1, n_bins + 1)[1:-1], y_prob)
        gap = np.abs(np.bincount(ids, y_prob, n_bins) - np.bincount(ids, y_true, n_bins)).sum()
        verdicts = [verdict(x, x, x, True) for x in p]
        ece = pairwise_metrics(verdicts, n_bins=n_bins)["calibration"]["ece"]
        assert ece == pytest.approx(gap / len(y_prob))
        # ... and, under top-label binning, the symmetrisation leaves the ECE unchanged.
        assert ece == pytest.approx(expected_calibration_error(p, np.ones(200), n_bins).ece)


def test_pairwise_accepts_mappings_and_names_missing_fields():
    as_dicts = [{"p_a": v.p_a, "p_a_forward": v.p_a_forward, "p_a_swapped": v.p_a_swapped,
                 "consistent": v.consistent} for v in VERDICTS]
    assert pairwise_metrics(as_dicts) == pairwise_metrics(VERDICTS)
    with pytest.raises(DataError, match=r"verdicts\[1\].*'p_a_swapped'"):
        pairwise_metrics([as_dicts[0], {"p_a": 0.5, "p_a_forward": 0.5, "consistent": True}])
    with pytest.raises(DataError, match="empty"):
        pairwise_metrics([])


# --- absolute -----------------------------------------------------------------------------------

def test_absolute_metrics_count_ties_as_half():
    chosen = [yes_no(0.9, 0.8), yes_no(-1.2, 0.3), yes_no(0.5, 0.6)]
    rejected = [yes_no(-1.1, 0.35), yes_no(-1.2, 0.3), yes_no(0.7, 0.7)]
    m = absolute_metrics(chosen, rejected)
    assert m["n"] == 3
    assert m["accuracy"] == pytest.approx((1 + 0.5 + 0) / 3)       # win, tie, loss
    assert m["mean_margin"] == pytest.approx((2.0 + 0.0 - 0.2) / 3)
    assert m["yes_rate_chosen"] == pytest.approx(2 / 3)
    assert m["yes_rate_rejected"] == pytest.approx(1 / 3)
    assert m["mean_p_yes_chosen"] == pytest.approx((0.8 + 0.3 + 0.6) / 3)
    assert m["mean_p_yes_rejected"] == pytest.approx((0.35 + 0.3 + 0.7) / 3)
    # p_yes as P(good): chosen labelled 1, rejected 0.
    expected = expected_calibration_error([0.8, 0.3, 0.6, 0.35, 0.3, 0.7], [1, 1, 1, 0, 0, 0]).ece
    assert m["calibration"]["ece"] == pytest.approx(expected)
    assert m["calibration"]["n"] == 6


def test_absolute_metrics_reject_misaligned_or_malformed_scores():
    with pytest.raises(ValueError, match="2 chosen scores for 1 rejected"):
        absolute_metrics([yes_no(1, .7), yes_no(1, .7)], [yes_no(1, .7)])
    with pytest.raises(DataError, match="answer"):
        absolute_metrics([{"score": 1.0, "p_yes": 0.7, "answer": "Maybe"}],
                         [{"score": 1.0, "p_yes": 0.7, "answer": "No"}])


# --- grouping and store rows --------------------------------------------------------------------

def test_grouped_by_source_and_dimension_matches_metrics_of_each_subset():
    keys = [("hh", "harmless"), ("shp", "helpful"), ("hh", "harmless"), ("hh", "helpful")]
    by = grouped(keys, VERDICTS, pairwise_metrics)
    assert list(by) == ["hh", "shp"] and list(by["hh"]) == ["harmless", "helpful"]
    assert by["hh"]["harmless"] == pairwise_metrics([VERDICTS[0], VERDICTS[2]])
    assert by["hh"]["harmless"]["accuracy"] == pytest.approx(0.5)
    assert by["shp"]["helpful"]["accuracy"] == pytest.approx(0.5)   # the tie
    assert by["hh"]["helpful"]["accuracy"] == pytest.approx(1.0)

    by_source = grouped([k[0] for k in keys], VERDICTS, pairwise_metrics)
    assert by_source["hh"]["n"] == 3 and by_source["shp"]["n"] == 1

    chosen = [yes_no(0.9, .8), yes_no(-1.5, .2), yes_no(0.5, .6), yes_no(0.4, .6)]
    rejected = [yes_no(-1.1, .3), yes_no(0.8, .7), yes_no(0.5, .6), yes_no(-1.3, .2)]
    absolute = grouped([k[0] for k in keys], list(zip(chosen, rejected)),
                       lambda g: absolute_metrics(*zip(*g)))
    assert absolute["hh"]["accuracy"] == pytest.approx((1 + 0.5 + 1) / 3)
    assert absolute["shp"]["accuracy"] == 0.0


def test_grouped_rejects_mixed_or_non_string_keys():
    with pytest.raises(ValueError, match="different lengths"):
        grouped([("a", "b"), ("a",)], [1, 2], len)
    with pytest.raises(DataError, match=r"keys\[0\]"):
        grouped([3], [1], len)
    with pytest.raises(ValueError, match="one group key per row"):
        grouped(["a"], [1, 2], len)


def test_flatten_metrics_rows_with_group_and_bin_labels():
    keys = [("hh", "harmless"), ("hh", "harmless"), ("shp", "helpful"), ("shp", "helpful")]
    nested = {"pairwise": {**pairwise_metrics(VERDICTS, n_bins=4),
                           "by_source_dimension": grouped(keys, VERDICTS, pairwise_metrics)},
              "note": "strings are not metrics"}
    rows = flatten_metrics(nested)
    by_key = {metric_key(name, labels): value for name, value, labels in rows}
    assert len(by_key) == len(rows)  # every row is distinct
    assert all(isinstance(v, float) for v in by_key.values())
    assert by_key["pairwise_accuracy"] == pytest.approx(0.625)
    # hh/harmless holds verdicts 0 and 1 (right, tie), shp/helpful verdicts 2 and 3 (wrong, right).
    assert ("pairwise_accuracy", pytest.approx(0.75), {"source": "hh", "dimension": "harmless"}) in rows
    assert ("pairwise_accuracy", pytest.approx(0.5), {"source": "shp", "dimension": "helpful"}) in rows
    assert by_key["pairwise_calibration_ece"] == pytest.approx(nested["pairwise"]["calibration"]["ece"])
    # Reliability bins (4 bins, 8 symmetrised examples with confidences .8 .5 .7 .6, twice each):
    # one row per field and bin; the empty bin keeps its count but has no accuracy row.
    counts = [by_key[f"pairwise_calibration_bins_count{{bin={i}}}"] for i in range(4)]
    assert counts == [0.0, 2.0, 4.0, 2.0]
    assert "pairwise_calibration_bins_accuracy{bin=0}" not in by_key
    assert by_key["pairwise_calibration_bins_accuracy{bin=2}"] == pytest.approx(0.5)  # .7 wrong, .6 right
    assert by_key["pairwise_calibration_bins_upper{bin=3}"] == 1.0
    assert not any(name.startswith("note") for name, _, _ in rows)
    assert flatten_metrics({"accuracy": 0.5}, prefix="absolute", labels={"iteration": 2}) == \
        [("absolute_accuracy", 0.5, {"iteration": 2})]


def test_flatten_metrics_skips_non_finite_values_and_rejects_unknown_types():
    assert flatten_metrics({"a": float("nan"), "b": 1, "c": True}) == [("b", 1.0, {}), ("c", 1.0, {})]
    with pytest.raises(TypeError, match="object"):
        flatten_metrics({"a": object()})
    with pytest.raises(ValueError, match="groups by source"):
        flatten_metrics({"by_source": [1, 2]})


# --- best-of-n ----------------------------------------------------------------------------------

def bon(*prefs) -> BestOfNItem:
    return BestOfNItem([turn("user", f"q{prefs}")], [Candidate(f"c{i}", p) for i, p in enumerate(prefs)], "ref")


def test_best_of_n_picks_and_win_rate_match_hand_computation():
    items = [bon(1.0, 2.0, 1.5), bon(2.0, 1.0), bon(1.0, 1.2, 1.8)]
    scores = [[0.1, 0.9, 0.5], [0.3, 0.3], [0.9, -1.0, 0.2]]
    assert judge_picks(scores) == [1, 0, 0]  # the tie goes to the lower index
    m = best_of_n_metrics(items, scores)
    assert m["n_items"] == 3
    assert m["win_rate"] == pytest.approx((1.0 + 1.0 + 0.0) / 3)
    # Wins 1, 1, 0: sample variance 1/3, over √3 items → a standard error of 1/3.
    assert m["win_rate_se"] == pytest.approx(1 / 3)
    assert best_of_n_metrics(items[:1], scores[:1])["win_rate_se"] is None  # one item has no spread
    # random: mean win per item (0+1+.5)/3, (1+0)/2, (0+.2+.8)/3 = .5, .5, 1/3
    assert m["random_win_rate"] == pytest.approx((0.5 + 0.5 + 1 / 3) / 3)
    assert m["oracle_win_rate"] == pytest.approx((1.0 + 1.0 + 0.8) / 3)
    assert m["oracle_pick_rate"] == pytest.approx(2 / 3)
    assert m["tied_pick_rate"] == pytest.approx(1 / 3)


def test_best_of_n_reports_the_longest_rule_the_margin_over_it_and_the_length_bias():
    def item(*cands):  # (output, preference)
        return BestOfNItem([turn("user", f"q{cands}")], [Candidate(o, p) for o, p in cands], "ref")

    items = [item(("short", 2.0), ("a much longer answer", 1.0), ("mid answer", 1.5)),
             item(("aa", 1.0), ("bb", 2.0)),  # equal lengths: the longest rule takes the first
             item(("x", 1.0), ("xxxx", 2.0), ("xx", 1.2))]
    scores = [[0.9, 0.1, 0.5], [0.0, 1.0], [0.1, 0.3, 0.2]]
    m = best_of_n_metrics(items, scores)
    # Judge picks 0, 1, 1: wins 1, 1, 1. Longest picks 1, 0, 1: wins 0, 0, 1.
    assert m["win_rate"] == pytest.approx(1.0) and m["longest_win_rate"] == pytest.approx(1 / 3)
    # Paired margins 1, 1, 0: mean 2/3, sample SD √(1/3), standard error 1/3.
    assert m["margin_over_longest"] == pytest.approx(2 / 3) and m["margin_over_longest_se"] == pytest.approx(1 / 3)
    # Spearman of scores with lengths: item 1 ranks (3,1,2) against (1,3,2) → -1; item 2 has equal
    # lengths (left out); item 3 ranks (1,3,2) against (1,3,2) → 1. Mean 0.
    assert m["length_spearman"] == pytest.approx(0.0)
    assert best_of_n_metrics(items[1:2], scores[1:2])["length_spearman"] is None


def test_best_of_n_names_the_item_with_missing_scores():
    items = [bon(1.0, 2.0), bon(1.0, 2.0, 1.5)]
    with pytest.raises(DataError, match=rf"2 scores for the 3 candidates of item {items[1].id}"):
        best_of_n_metrics(items, [[0.1, 0.2], [0.1, 0.2]])
    with pytest.raises(DataError, match=r"scores_per_item\[0\]"):
        best_of_n_metrics(items[:1], [[0.1, float("nan")]])
    with pytest.raises(DataError, match="empty"):
        best_of_n_metrics([], [])


def test_best_of_n_on_the_shared_alpacaeval_set(shared_data):
    items = load_bestofn(DataSource(kind="local", path=str(shared_data / "alpacaeval-bon-dev.jsonl.gz"),
                                    dimension="helpful"))
    # A judge that scores by the reference preference is the oracle; its negation the worst picker.
    oracle = best_of_n_metrics(items, [[c.preference for c in it.candidates] for it in items])
    assert oracle["win_rate"] == pytest.approx(oracle["oracle_win_rate"])
    assert oracle["oracle_pick_rate"] == 1.0
    worst = best_of_n_metrics(items, [[-c.preference for c in it.candidates] for it in items])
    assert worst["win_rate"] < worst["random_win_rate"] < worst["oracle_win_rate"]
    lengths = best_of_n_metrics(items, [[len(c.output) for c in it.candidates] for it in items])
    assert worst["win_rate"] <= lengths["win_rate"] <= oracle["win_rate"]
    # Scoring by length is the longest rule: no margin over it, a perfect length correlation.
    assert lengths["win_rate"] == pytest.approx(lengths["longest_win_rate"])
    assert lengths["margin_over_longest"] == pytest.approx(0.0) and lengths["length_spearman"] == pytest.approx(1.0)
    # On these 403 prompts the longest rule beats random picking.
    assert oracle["random_win_rate"] < oracle["longest_win_rate"] < oracle["oracle_win_rate"]


# --- deltas -------------------------------------------------------------------------------------

def test_metric_deltas_only_for_keys_in_both():
    current = {"accuracy": 0.7, "ece": 0.05, "new": 1.0, "label": "x"}
    previous = {"accuracy": 0.6, "ece": 0.08, "gone": 2.0, "label": "y"}
    assert metric_deltas(current, previous) == pytest.approx({"accuracy": 0.1, "ece": -0.03})
    assert metric_deltas(current, None) == {}


def test_delta_rows_pair_rows_by_name_and_labels():
    current = [("pairwise_accuracy", 0.7, {"source": "hh"}), ("pairwise_accuracy", 0.5, {"source": "shp"}),
               ("ece", 0.1, {})]
    previous = [("pairwise_accuracy", 0.6, {"source": "hh"}), ("ece", 0.2, {})]
    rows = delta_rows(current, previous)
    assert sorted(rows, key=lambda r: r[0]) == [
        ("delta_ece", pytest.approx(-0.1), {}),
        ("delta_pairwise_accuracy", pytest.approx(0.1), {"source": "hh"})]
    assert delta_rows(current, None) == []
    with pytest.raises(ValueError, match="twice"):
        delta_rows(current + current[:1], previous)
