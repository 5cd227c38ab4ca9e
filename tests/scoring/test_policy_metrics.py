"""Policy metrics: win rates with ties against hand arithmetic, the length-controlled win rate
(direction, degenerate cases, seeded bootstrap), controllability and the per-dimension result."""

from __future__ import annotations

import json
import math

import pytest

from selfrefine.errors import DataError
from selfrefine.scoring.metric_rows import flatten_metrics
from selfrefine.scoring.policy_metrics import (
    PolicyScores,
    bootstrap_lc_se,
    controllability,
    length_controlled_win_rate,
    pairwise_wins,
    policy_eval_metrics,
    win_rate,
)

WIN_RATE_KEYS = {"n", "win_rate", "win_rate_se", "ties", "lc_win_rate", "lc_win_rate_se",
                 "length_coefficient", "mean_length", "baseline_mean_length"}


# --- pairwise wins and the raw win rate ---------------------------------------------------------

def test_pairwise_wins_count_ties_half():
    assert pairwise_wins([3.0, 1.0, 2.0, 5.0], [1.0, 2.0, 2.0, 4.0]) == [1.0, 0.0, 0.5, 1.0]


def test_tie_tolerance_is_relative_and_tiny():
    # float noise is a tie, at unit scale and at 1e6 scale (relative 1e-10)
    assert pairwise_wins([1.0, 1e6 + 1e-4], [1.0 + 1e-12, 1e6]) == [0.5, 0.5]
    # a real difference is not, however small the rewards
    assert pairwise_wins([1e-6, 1.0], [0.0, 1.0 + 1e-6]) == [1.0, 0.0]


def test_win_rate_and_standard_error_by_hand():
    # wins [1, 0, .5, 1]: mean .625; deviations .375 -.625 -.125 .375, squares sum .6875
    # sample variance .6875 / 3, SE = sqrt(.6875 / 3) / sqrt(4)
    out = win_rate([3.0, 1.0, 2.0, 5.0], [1.0, 2.0, 2.0, 4.0], [10, 20, 30, 40], [10, 20, 30, 40],
                   n_bootstrap=20)
    assert set(out) == WIN_RATE_KEYS
    assert out["n"] == 4 and out["ties"] == 1
    assert out["win_rate"] == pytest.approx(0.625)
    assert out["win_rate_se"] == pytest.approx(math.sqrt(0.6875 / 3) / 2)
    assert out["mean_length"] == pytest.approx(25.0)
    assert out["baseline_mean_length"] == pytest.approx(25.0)
    json.dumps(out)


# --- length-controlled win rate -----------------------------------------------------------------

def test_lc_equals_raw_win_rate_when_lengths_are_equal():
    out = win_rate([2, 2, 2, 0, 1], [1, 1, 1, 1, 1], [50] * 5, [50] * 5, n_bootstrap=20)
    assert out["win_rate"] == pytest.approx(0.7)  # wins [1, 1, 1, 0, .5]
    assert out["lc_win_rate"] == pytest.approx(0.7, abs=1e-4)
    assert out["length_coefficient"] == 0.0


def test_zero_std_of_length_differences_reduces_to_the_raw_win_rate():
    # the policy is always exactly 10 characters longer: std(delta) = 0, the feature is all zero
    lc, phi = length_controlled_win_rate([1, 1, 0, 0.5], [10, 10, 10, 10])
    assert lc == pytest.approx(0.625, abs=1e-4)
    assert phi == 0.0


def length_explained():
    """30 wins where the policy is ~300 chars longer, 20 losses at about the same length."""
    wins = [1.0] * 30 + [0.0] * 20
    delta = [300.0 + 5 * i for i in range(30)] + [-20.0 + 2 * i for i in range(20)]
    return wins, delta


def test_lc_win_rate_is_lower_when_length_explains_the_wins():
    wins, delta = length_explained()
    policy_len = [500.0 + d for d in delta]
    out = win_rate(wins, [0.5] * 50, policy_len, [500.0] * 50, n_bootstrap=50)
    assert out["win_rate"] == pytest.approx(0.6)
    assert out["length_coefficient"] > 1.0          # longer → more likely to win
    assert out["lc_win_rate"] < out["win_rate"] - 0.2  # most of the 60% is length
    assert 0.0 < out["lc_win_rate"] < 0.4
    assert out["lc_win_rate_se"] > 0.0


def test_lc_win_rate_is_higher_when_length_explains_the_losses():
    # the mirror image: the policy wins at about equal length and loses where it is much shorter
    wins = [1.0] * 30 + [0.0] * 20
    delta = [-20.0 + i for i in range(30)] + [-300.0 - 5 * i for i in range(20)]
    lc, phi = length_controlled_win_rate(wins, delta)
    assert phi > 1.0
    assert lc > 0.6 + 0.2


def test_one_class_preferences_give_the_raw_win_rate():
    out = win_rate([2, 2, 2], [1, 1, 1], [300, 10, 50], [10, 10, 10], n_bootstrap=20)
    assert out["lc_win_rate"] == 1.0 and out["length_coefficient"] is None
    assert out["lc_win_rate_se"] == 0.0  # every resample is all wins
    lc, phi = length_controlled_win_rate([0, 0], [5, -5])
    assert lc == 0.0 and phi is None


def test_single_prompt_has_no_standard_errors():
    out = win_rate([1.0], [1.0], [30], [10])
    assert out["win_rate"] == 0.5 and out["ties"] == 1
    assert out["lc_win_rate"] == pytest.approx(0.5, abs=1e-4)
    assert out["win_rate_se"] is None and out["lc_win_rate_se"] is None


def test_bootstrap_se_is_reproducible_with_the_same_seed():
    wins, delta = length_explained()
    wins[3], wins[40] = 0.0, 0.5
    first = bootstrap_lc_se(wins, delta, seed=7, n_bootstrap=40)
    assert bootstrap_lc_se(wins, delta, seed=7, n_bootstrap=40) == first
    assert bootstrap_lc_se(wins, delta, seed=8, n_bootstrap=40) != first
    assert bootstrap_lc_se(wins, delta, seed=7, n_bootstrap=0) is None


# --- controllability ----------------------------------------------------------------------------

def test_controllability_with_a_tie():
    out = controllability([2.0, 1.0, 3.0], [1.0, 1.0, 4.0])  # [1, .5, 0]
    assert out["controllability"] == pytest.approx(0.5)
    assert out["controllability_se"] == pytest.approx(0.5 / math.sqrt(3))  # sd .5
    assert out["n"] == 3


# --- errors -------------------------------------------------------------------------------------

def test_mismatched_lengths_raise_value_error():
    with pytest.raises(ValueError, match="one per prompt"):
        pairwise_wins([1.0, 2.0], [1.0])
    with pytest.raises(ValueError):
        win_rate([1.0, 2.0], [1.0, 2.0], [10, 20], [10])
    with pytest.raises(ValueError):
        controllability([1.0], [1.0, 2.0])
    with pytest.raises(ValueError):
        policy_eval_metrics(["a", "b"], PolicyScores(more_reward=[1.0], more_length=[1]),
                            PolicyScores(more_reward=[1.0], more_length=[1]))


def test_non_finite_rewards_raise_data_error_naming_the_index():
    with pytest.raises(DataError, match=r"\[2\]"):
        pairwise_wins([1.0, 2.0, float("nan")], [1.0, 2.0, 3.0])
    with pytest.raises(DataError, match=r"baseline_rewards\[0\]"):
        win_rate([1.0], [float("inf")], [1], [1])
    with pytest.raises(DataError, match=r"\[1\]"):
        controllability([1.0, float("nan")], [0.0, 0.0])


def test_bad_lengths_and_empty_input_raise_data_error():
    with pytest.raises(DataError, match="non-negative"):
        win_rate([1.0, 2.0], [0.0, 0.0], [10, -1], [10, 10])
    with pytest.raises(DataError, match="empty"):
        win_rate([], [], [], [])
    with pytest.raises(DataError, match="empty"):
        controllability([], [])
    with pytest.raises(DataError, match="empty"):
        policy_eval_metrics([], PolicyScores(more_reward=[], more_length=[]),
                            PolicyScores(more_reward=[], more_length=[]))


# --- a whole evaluation -------------------------------------------------------------------------

def evaluation():
    dims = ["harmless", "helpful", "harmless", "helpful"]
    policy = PolicyScores(more_reward=[3.0, 1.0, 2.0, 5.0], less_reward=[1.0, 1.0, 4.0, 0.0],
                          more_length=[100, 200, 300, 400])
    base = {"more_reward": [1.0, 2.0, 2.0, 4.0], "more_length": [100, 200, 300, 400]}
    return dims, policy, base


def test_policy_eval_metrics_overall_and_by_dimension():
    dims, policy, base = evaluation()
    out = policy_eval_metrics(dims, policy, base, n_bootstrap=20)
    assert set(out) == {"n_prompts", "mean_length", "vs_base", "controllability", "by_dimension"}
    assert out["n_prompts"] == 4 and out["mean_length"] == pytest.approx(250.0)
    assert out["vs_base"]["win_rate"] == pytest.approx(0.625)  # wins [1, 0, .5, 1]
    assert out["controllability"]["controllability"] == pytest.approx(0.625)  # [1, .5, 0, 1]
    harmless, helpful = out["by_dimension"]["harmless"], out["by_dimension"]["helpful"]
    assert list(out["by_dimension"]) == ["harmless", "helpful"]
    assert harmless["n_prompts"] == 2 and harmless["mean_length"] == pytest.approx(200.0)
    assert harmless["vs_base"]["win_rate"] == pytest.approx(0.75)  # prompts 0, 2: [1, .5]
    assert helpful["vs_base"]["win_rate"] == pytest.approx(0.5)  # prompts 1, 3: [0, 1]
    assert harmless["controllability"]["controllability"] == pytest.approx(0.5)  # [1, 0]
    assert helpful["controllability"]["controllability"] == pytest.approx(0.75)  # [.5, 1]
    assert "by_dimension" not in harmless and "vs_previous" not in harmless
    json.dumps(out)


def test_policy_eval_metrics_against_the_previous_policy():
    dims, policy, base = evaluation()
    previous = PolicyScores(more_reward=[4.0, 0.0, 2.0, 5.0], more_length=[50, 50, 50, 50])
    out = policy_eval_metrics(dims, policy, base, previous, n_bootstrap=20)
    assert out["vs_previous"]["win_rate"] == pytest.approx(0.5)  # [0, 1, .5, .5]
    assert out["vs_previous"]["ties"] == 2
    assert out["vs_previous"]["baseline_mean_length"] == pytest.approx(50.0)
    assert out["by_dimension"]["helpful"]["vs_previous"]["win_rate"] == pytest.approx(0.75)  # [1, .5]


def test_by_dimension_flattens_to_rows_labelled_by_dimension():
    dims, policy, base = evaluation()
    rows = flatten_metrics(policy_eval_metrics(dims, policy, base, n_bootstrap=20))
    by_key = {(name, tuple(sorted(labels.items()))): value for name, value, labels in rows}
    assert by_key[("vs_base_win_rate", ())] == pytest.approx(0.625)
    assert by_key[("vs_base_win_rate", (("dimension", "harmless"),))] == pytest.approx(0.75)
    assert by_key[("vs_base_win_rate", (("dimension", "helpful"),))] == pytest.approx(0.5)
    assert by_key[("controllability_controllability", (("dimension", "helpful"),))] == pytest.approx(0.75)
    assert by_key[("n_prompts", (("dimension", "harmless"),))] == 2
    assert all(set(labels) <= {"dimension"} for _, _, labels in rows)
    assert len(by_key) == len(rows)  # no row appears twice
