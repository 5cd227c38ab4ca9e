"""Policy metrics for the `evaluate_policy` stage: pure functions from evaluator rewards to JSON-ready dicts.

Nothing here touches the store, Prefect, files or torch; the stage scores the responses with its
evaluator (a reward model) and feeds the rewards in, paired by prompt.

Win rate. On each prompt the policy wins (1) when the evaluator rewards its response above the
baseline's, loses (0) below, and ties (0.5) when the two rewards are equal up to a relative
tolerance: |r_policy - r_baseline| <= 1e-9 * max(1, |r_policy|, |r_baseline|) (identical responses
get identical rewards; the tolerance only absorbs float noise). The win rate is the mean over
prompts, its standard error that of the mean (`metrics.standard_error`), as AlpacaEval reports.

Length-controlled win rate (AlpacaEval 2; Dubois et al. 2024, "Length-Controlled AlpacaEval").
A logistic GLM predicts the per-prompt preference from the length difference:
    P(policy wins) = sigmoid(theta + phi * tanh(delta_len / std(delta_len)))
with delta_len = policy length - baseline length (the caller chooses the unit; the stage passes
characters, like AlpacaEval) and std the sample standard deviation over the prompts. theta is the
policy's strength; with a single policy/baseline pair there is no instruction-difficulty term. The
LC win rate answers "what if both answers had the same length": the prediction with the length
term at zero, sigmoid(theta). Fractional preferences (ties) are fitted by giving each prompt a
(y=1, weight=p) and a (y=0, weight=1-p) row. Fitting: scikit-learn `LogisticRegression` with its
default weak L2 penalty, C=1.0, on phi only (sklearn leaves the intercept unpenalised), solved by
"newton-cholesky" (exact Newton steps: a few iterations for two parameters, where lbfgs is ~10x
slower on near-separable data, which matters for the bootstrap's hundreds of fits). AlpacaEval
itself fits an L1 `LogisticRegressionCV` (liblinear, cross-validated C) regularised towards the
baseline across many models; with one pair that machinery has nothing to pool, so a plain,
lightly-regularised fit is used. Degenerate cases:
- every delta_len equal (std 0) or a single prompt: the length feature is all zero, phi = 0 and
  the fit reduces to the intercept, sigmoid(theta) = the raw win rate;
- all wins or all losses: one class only, which sklearn cannot fit; the LC win rate is the raw
  win rate (1.0 or 0.0) and `length_coefficient` is None.
Its standard error is a seeded bootstrap over prompts (`n_bootstrap` resamples drawn with
`numpy.random.default_rng(seed)`, the whole fit repeated on each, sample std of the LC win rates);
None below two prompts or with `n_bootstrap` < 2.

Controllability: the share of prompts where the evaluator rewards the policy's "A more {dim}
response" sample above its "A less {dim} response" sample (ties half, same tolerance).

Errors: empty or malformed data (non-finite rewards, negative lengths) raises `DataError` naming
the index; inputs of different lengths are a caller bug and raise `ValueError`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from selfrefine.errors import DataError
from selfrefine.scoring.metrics import finite_array, grouped, standard_error

TIE_RTOL = 1e-9
LC_C = 1.0


@dataclass(frozen=True, kw_only=True)
class PolicyScores:
    """One policy's evaluator rewards and response lengths on the evaluation prompts, by prompt.

    `more_reward`/`more_length`: its "A more {dim} response" answer (the one compared in win
    rates); `less_reward`: its "A less {dim} response" answer (for controllability; None for
    policies only compared against)."""

    more_reward: Sequence[float]
    more_length: Sequence[float]
    less_reward: Sequence[float] | None = None


def pairwise_wins(policy_rewards: Sequence[float], baseline_rewards: Sequence[float]) -> list[float]:
    """Per prompt 1.0 if the policy's reward is higher, 0.0 if lower, 0.5 on a tie (module docstring)."""
    _same_length(policy_rewards, baseline_rewards, "policy rewards", "baseline rewards")
    a = finite_array(policy_rewards, "policy_rewards")
    b = finite_array(baseline_rewards, "baseline_rewards")
    tie = np.abs(a - b) <= TIE_RTOL * np.maximum(1.0, np.maximum(np.abs(a), np.abs(b)))
    return np.where(tie, 0.5, (a > b).astype(float)).tolist()


def length_controlled_win_rate(wins: Sequence[float], delta_len: Sequence[float]
                               ) -> tuple[float, float | None]:
    """(LC win rate, length coefficient phi) of per-prompt preferences `wins` in [0, 1] given the
    length differences policy - baseline; phi is None when all preferences are 1 or all 0."""
    p, d = np.asarray(wins, dtype=float), np.asarray(delta_len, dtype=float)
    if len(p) == 0:
        raise DataError("no preferences to fit: the evaluation set is empty")
    if np.all(p == 1.0) or np.all(p == 0.0):
        return float(p.mean()), None
    from sklearn.linear_model import LogisticRegression

    sd = float(d.std(ddof=1)) if len(d) > 1 else 0.0
    x = np.tanh(d / sd) if sd > 0 else np.zeros_like(d)
    features = np.concatenate([x, x])[:, None]
    labels = np.concatenate([np.ones(len(p)), np.zeros(len(p))])
    weights = np.concatenate([p, 1.0 - p])
    keep = weights > 0  # zero-weight rows add nothing and would only hide a missing class
    model = LogisticRegression(C=LC_C, solver="newton-cholesky", tol=1e-8)
    model.fit(features[keep], labels[keep], sample_weight=weights[keep])
    theta = float(model.intercept_[0])
    return float(1.0 / (1.0 + np.exp(-theta))), float(model.coef_[0, 0])


def bootstrap_lc_se(wins: Sequence[float], delta_len: Sequence[float], *, seed: int = 0,
                    n_bootstrap: int = 200) -> float | None:
    """Bootstrap standard error of the LC win rate: resample prompts with replacement and refit."""
    p, d = np.asarray(wins, dtype=float), np.asarray(delta_len, dtype=float)
    if len(p) < 2 or n_bootstrap < 2:
        return None
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(p), size=(n_bootstrap, len(p)))
    values = [length_controlled_win_rate(p[idx], d[idx])[0] for idx in draws]
    return float(np.std(values, ddof=1))


def win_rate(policy_rewards: Sequence[float], baseline_rewards: Sequence[float],
             policy_lengths: Sequence[float], baseline_lengths: Sequence[float], *,
             seed: int = 0, n_bootstrap: int = 200) -> dict[str, Any]:
    """Win rate of the policy against a baseline on paired prompts, raw and length-controlled.

    Keys: n, win_rate, win_rate_se, ties (count), lc_win_rate, lc_win_rate_se,
    length_coefficient (phi, None when not fitted), mean_length, baseline_mean_length."""
    _same_length(policy_rewards, baseline_rewards, "policy rewards", "baseline rewards")
    _same_length(policy_rewards, policy_lengths, "policy rewards", "policy lengths")
    _same_length(policy_rewards, baseline_lengths, "policy rewards", "baseline lengths")
    if len(policy_rewards) == 0:
        raise DataError("no paired responses: the evaluation set is empty; give at least one prompt")
    wins = np.asarray(pairwise_wins(policy_rewards, baseline_rewards))
    own, base = _lengths(policy_lengths, "policy_lengths"), _lengths(baseline_lengths, "baseline_lengths")
    lc, phi = length_controlled_win_rate(wins, own - base)
    return {
        "n": len(wins),
        "win_rate": float(wins.mean()),
        "win_rate_se": standard_error(wins),
        "ties": int(np.sum(wins == 0.5)),
        "lc_win_rate": lc,
        "lc_win_rate_se": bootstrap_lc_se(wins, own - base, seed=seed, n_bootstrap=n_bootstrap),
        "length_coefficient": phi,
        "mean_length": float(own.mean()),
        "baseline_mean_length": float(base.mean()),
    }


def controllability(more_rewards: Sequence[float], less_rewards: Sequence[float]) -> dict[str, Any]:
    """Share of prompts where the "more {dim}" sample outscores the "less {dim}" one (ties half)."""
    _same_length(more_rewards, less_rewards, "more rewards", "less rewards")
    if len(more_rewards) == 0:
        raise DataError("no controllable-generation pairs: the evaluation set is empty")
    wins = pairwise_wins(more_rewards, less_rewards)
    return {"controllability": float(np.mean(wins)), "controllability_se": standard_error(wins),
            "n": len(wins)}


def policy_eval_metrics(dimensions: Sequence[str], policy: PolicyScores | Mapping[str, Any],
                        baseline: PolicyScores | Mapping[str, Any],
                        previous: PolicyScores | Mapping[str, Any] | None = None, *,
                        seed: int = 0, n_bootstrap: int = 200) -> dict[str, Any]:
    """Metrics of one evaluation, overall and per dimension (`dimensions[i]` labels prompt i).

    Keys: n_prompts, mean_length (the policy's "more" answers), vs_base (`win_rate` of the policy
    against the baseline), vs_previous (against the previous policy; absent without one),
    controllability (absent when `policy.less_reward` is None), by_dimension: {dim: the same
    keys}. `flatten_metrics` turns by_dimension into rows labelled {"dimension": dim}."""
    policy, baseline = _scores(policy, "policy"), _scores(baseline, "baseline")
    previous = _scores(previous, "previous") if previous is not None else None
    n = len(dimensions)
    for what, scores in (("policy", policy), ("baseline", baseline), ("previous", previous)):
        if scores is None:
            continue
        for field in ("more_reward", "more_length", "less_reward"):
            values = getattr(scores, field)
            if values is not None:
                _same_length(dimensions, values, "dimension labels", f"{what}.{field}")
    if n == 0:
        raise DataError("no policy prompts: the evaluation set is empty; give at least one prompt")

    def summary(idx: list[int]) -> dict[str, Any]:
        pick = lambda values: [values[i] for i in idx]  # noqa: E731
        lengths = _lengths(pick(policy.more_length), "policy.more_length")
        out: dict[str, Any] = {"n_prompts": len(idx), "mean_length": float(lengths.mean())}
        for key, other in (("vs_base", baseline), ("vs_previous", previous)):
            if other is not None:
                out[key] = win_rate(pick(policy.more_reward), pick(other.more_reward),
                                    pick(policy.more_length), pick(other.more_length),
                                    seed=seed, n_bootstrap=n_bootstrap)
        if policy.less_reward is not None:
            out["controllability"] = controllability(pick(policy.more_reward), pick(policy.less_reward))
        return out

    result = summary(list(range(n)))
    result["by_dimension"] = grouped(list(dimensions), list(range(n)), summary)
    return result


def _scores(value: PolicyScores | Mapping[str, Any], what: str) -> PolicyScores:
    if isinstance(value, PolicyScores):
        return value
    if isinstance(value, Mapping):
        return PolicyScores(**value)
    raise TypeError(f"{what} must be PolicyScores or a mapping, got {type(value).__name__}")


def _lengths(values: Sequence[float], what: str) -> np.ndarray:
    arr = finite_array(values, what)
    bad = np.flatnonzero(arr < 0)
    if bad.size:
        raise DataError(f"{what}[{bad[0]}] = {arr[bad[0]]}; lengths must be non-negative", field=what)
    return arr


def _same_length(a: Sequence[Any], b: Sequence[Any], what_a: str, what_b: str) -> None:
    if len(a) != len(b):
        raise ValueError(f"{len(a)} {what_a} for {len(b)} {what_b}; give one per prompt")


__all__ = ["PolicyScores", "pairwise_wins", "length_controlled_win_rate", "bootstrap_lc_se",
           "win_rate", "controllability", "policy_eval_metrics"]
