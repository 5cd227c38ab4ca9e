"""Judge metrics for the `evaluate` stage: pure functions from scores to JSON-ready dicts.

Nothing here touches the store, Prefect or files; the stage feeds in judge outputs and turns the
nested result into store rows with `metric_rows.flatten_metrics`.

Calibration (ECE). The MORE paper (more-diversified-preferences.txt, §5.1) measures reward models
by the Expected Calibration Error of Naeini et al. (2015) / Guo et al. (2017):
    ECE = sum_b |B_b| / n * |accuracy(B_b) - confidence(B_b)|
over `n_bins` equal-width bins of [0, 1], bin b = (b/M, (b+1)/M] (the first also holds 0).
We bin the confidence of the predicted class, max(p, 1 - p), the standard top-label definition.
For a binary prediction the confidence is at least 0.5, so the bins below 0.5 are always empty;
they are still reported (count 0) so every reliability diagram has the same bins. A probability
of exactly 0.5 predicts neither class: it counts as half right, so it is calibrated whatever the
label (the same "ties count half" rule as the accuracies).

Pairwise ECE. The judge's P(response_a better) is scored against the human label, and response_a
is always the human-chosen one, so every label is 1. Like the MORE code, which scores sigmoid(r_i - r_j)
over both orders of each pair, each pair becomes two examples, (p_a, 1) and (1 - p_a, 0). Under
top-label binning both copies land in the same bin with the same correctness, so the ECE equals the
unsymmetrised one, and with an even number of bins it also equals binning P(label = 1) over both
orders, the MORE code's way (tested). Bin counts are in examples, i.e. twice the pairs.

Errors: empty or malformed data raises `DataError`; an invalid parameter (`n_bins`) raises
`ConfigError`; inputs of different lengths are a caller bug and raise `ValueError`.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from selfrefine.data.bestofn import oracle_win_rate, random_pick_win_rate, win_rate
from selfrefine.data.schema import BestOfNItem
from selfrefine.errors import ConfigError, DataError


# --- calibration --------------------------------------------------------------------------------

@dataclass(frozen=True)
class ReliabilityBin:
    """One bar of a reliability diagram; `mean_confidence`/`accuracy` are None for an empty bin."""

    lower: float
    upper: float
    count: int
    mean_confidence: float | None
    accuracy: float | None

    def to_json(self) -> dict[str, Any]:
        return {"lower": self.lower, "upper": self.upper, "count": self.count,
                "mean_confidence": self.mean_confidence, "accuracy": self.accuracy}


@dataclass(frozen=True)
class CalibrationReport:
    """ECE, the largest bin gap (MCE), the number of examples and every bin, empty ones included."""

    ece: float
    max_calibration_error: float
    n: int
    bins: tuple[ReliabilityBin, ...]

    def to_json(self) -> dict[str, Any]:
        return {"ece": self.ece, "max_calibration_error": self.max_calibration_error, "n": self.n,
                "bins": [b.to_json() for b in self.bins]}


def expected_calibration_error(probs: Sequence[float], labels: Sequence[int | bool],
                               n_bins: int = 10) -> CalibrationReport:
    """ECE of predicted probabilities `probs` = P(label == 1) against 0/1 `labels` (module docstring)."""
    if isinstance(n_bins, bool) or not isinstance(n_bins, numbers.Integral) or n_bins < 1:
        raise ConfigError(f"n_bins must be a positive integer, got {n_bins!r}")
    p = _probabilities(probs, "probs")
    y = _binary_labels(labels, "labels")
    if len(p) != len(y):
        raise ValueError(f"{len(p)} probabilities for {len(y)} labels; give one label per probability")
    if len(p) == 0:
        raise DataError("no predictions to calibrate: the evaluation set is empty; give at least one "
                        "labelled example")
    confidence = np.maximum(p, 1.0 - p)
    correct = np.where(p == 0.5, 0.5, ((p > 0.5) == (y == 1)).astype(float))
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # Number of inner edges strictly below the confidence → right-closed bins (lo, hi].
    index = np.searchsorted(edges[1:-1], confidence, side="left")
    bins, ece, mce = [], 0.0, 0.0
    for b in range(n_bins):
        members = index == b
        count = int(members.sum())
        if count == 0:
            bins.append(ReliabilityBin(float(edges[b]), float(edges[b + 1]), 0, None, None))
            continue
        conf, acc = float(confidence[members].mean()), float(correct[members].mean())
        bins.append(ReliabilityBin(float(edges[b]), float(edges[b + 1]), count, conf, acc))
        ece += count / len(p) * abs(acc - conf)
        mce = max(mce, abs(acc - conf))
    return CalibrationReport(ece=ece, max_calibration_error=mce, n=len(p), bins=tuple(bins))


# --- pairwise and absolute judge metrics --------------------------------------------------------

def standard_error(values: Sequence[float]) -> float | None:
    """Standard error of the mean of per-item values (sample standard deviation over √n), as
    AlpacaEval reports beside its win rates; None below two items. It says how far a figure could
    move on another draw of as many items of the same kind."""
    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return None
    return float(values.std(ddof=1) / np.sqrt(len(values)))


def pairwise_metrics(verdicts: Sequence[Any], *, n_bins: int = 10) -> dict[str, Any]:
    """Metrics of pairwise verdicts (`PairVerdict`s, or objects/mappings with `p_a`, `p_a_forward`,
    `p_a_swapped`, `consistent`) on pairs whose response_a is the human-chosen one.

    accuracy: p_a > 0.5 (0.5 counts half); accuracy_forward / accuracy_swapped: the same for each
    presentation order alone; position_consistency: share of `consistent` verdicts;
    first_position_rate: how often the judge picks whichever response is shown first, over both
    orders (0.5 = no position preference); calibration: symmetrised ECE of p_a (module docstring).
    """
    if not verdicts:
        raise DataError("no pairwise verdicts: the evaluation set is empty; give at least one pair")
    p_a = _column(verdicts, "p_a", "verdicts")
    forward = _column(verdicts, "p_a_forward", "verdicts")
    swapped = _column(verdicts, "p_a_swapped", "verdicts")
    consistent = [bool(_get(v, "consistent", i, "verdicts")) for i, v in enumerate(verdicts)]
    # With response_a second (swapped), "first shown wins" means response_b wins: p_a_swapped < 0.5.
    first_wins = np.concatenate([_tie_half(forward), _tie_half(1.0 - swapped)])
    correct = _tie_half(p_a)
    return {
        "n": len(verdicts),
        "accuracy": float(correct.mean()),
        "accuracy_se": standard_error(correct),
        "accuracy_forward": float(_tie_half(forward).mean()),
        "accuracy_swapped": float(_tie_half(swapped).mean()),
        "position_consistency": float(np.mean(consistent)),
        "first_position_rate": float(first_wins.mean()),
        "mean_p_chosen": float(p_a.mean()),
        "calibration": expected_calibration_error(
            np.concatenate([p_a, 1.0 - p_a]), [1] * len(p_a) + [0] * len(p_a), n_bins).to_json(),
    }


def absolute_metrics(chosen_scores: Sequence[Any], rejected_scores: Sequence[Any], *,
                     n_bins: int = 10) -> dict[str, Any]:
    """Metrics of absolute scores (`AbsoluteScore`s, or objects/mappings with `score`, `answer`,
    `p_yes`) of the chosen and the rejected response of the same pairs, index-aligned.

    accuracy: score(chosen) > score(rejected) (equal scores count half); mean_margin: mean of
    score(chosen) - score(rejected); yes_rate_*: share answered "Yes"; calibration: ECE of p_yes
    read as P(good), with chosen responses labelled 1 and rejected ones 0.
    """
    if len(chosen_scores) != len(rejected_scores):
        raise ValueError(f"{len(chosen_scores)} chosen scores for {len(rejected_scores)} rejected "
                         "scores; score both responses of every pair")
    if not chosen_scores:
        raise DataError("no absolute scores: the evaluation set is empty; give at least one pair")
    chosen = _column(chosen_scores, "score", "chosen_scores", probability=False)
    rejected = _column(rejected_scores, "score", "rejected_scores", probability=False)
    p_yes_c = _column(chosen_scores, "p_yes", "chosen_scores")
    p_yes_r = _column(rejected_scores, "p_yes", "rejected_scores")
    margin = chosen - rejected
    return {
        "n": len(chosen),
        "accuracy": float(np.where(margin == 0, 0.5, (margin > 0).astype(float)).mean()),
        "mean_margin": float(margin.mean()),
        "yes_rate_chosen": _yes_rate(chosen_scores, "chosen_scores"),
        "yes_rate_rejected": _yes_rate(rejected_scores, "rejected_scores"),
        "mean_p_yes_chosen": float(p_yes_c.mean()),
        "mean_p_yes_rejected": float(p_yes_r.mean()),
        "calibration": expected_calibration_error(
            np.concatenate([p_yes_c, p_yes_r]), [1] * len(chosen) + [0] * len(rejected),
            n_bins).to_json(),
    }


def grouped(keys: Sequence[Hashable], rows: Sequence[Any],
            fn: Callable[[list[Any]], Any]) -> dict[str, Any]:
    """`fn` applied to the rows of each group: `keys[i]` is the group of `rows[i]`.

    A key is a string (e.g. the source) or a tuple of strings (e.g. (source, dimension)), which
    nests the result one level per part: {"hh": {"harmless": metrics}}. Groups come in sorted
    order. For metrics over two aligned lists, group their zip:
    `grouped(keys, list(zip(chosen, rejected)), lambda g: absolute_metrics(*zip(*g)))`.
    Under the keys of `metric_rows.GROUP_LEVELS` the result flattens into labelled rows.
    """
    if len(keys) != len(rows):
        raise ValueError(f"{len(keys)} keys for {len(rows)} rows; give one group key per row")
    buckets: dict[tuple[str, ...], list[Any]] = {}
    depths = set()
    for i, (key, row) in enumerate(zip(keys, rows)):
        parts = key if isinstance(key, tuple) else (key,)
        if not parts or not all(isinstance(p, str) for p in parts):
            raise DataError(f"group key {key!r} must be a string or a tuple of strings", field=f"keys[{i}]")
        depths.add(len(parts))
        buckets.setdefault(parts, []).append(row)
    if len(depths) > 1:
        raise ValueError(f"group keys have different lengths {sorted(depths)}; use one key shape")
    out: dict[str, Any] = {}
    for parts in sorted(buckets):
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = fn(buckets[parts])
    return out


# --- best-of-n ----------------------------------------------------------------------------------

def judge_picks(scores_per_item: Sequence[Sequence[float]]) -> list[int]:
    """The index of the highest score of each item; equal scores go to the lower index."""
    picks = []
    for i, scores in enumerate(scores_per_item):
        values = finite_array(scores, f"scores_per_item[{i}]")
        if len(values) == 0:
            raise DataError("an item without scores: score every candidate", field=f"scores_per_item[{i}]")
        picks.append(int(np.argmax(values)))  # argmax returns the first maximum
    return picks


def longest_picks(items: Sequence[BestOfNItem]) -> list[int]:
    """The index of each item's longest candidate in characters (ties: the lower index): the
    "always pick the longest response" rule every best-of-n judge must beat."""
    return [max(range(len(item.candidates)), key=lambda j, it=item: (len(it.candidates[j].output), -j))
            for item in items]


def length_spearman(items: Sequence[BestOfNItem], scores_per_item: Sequence[Sequence[float]]) -> float | None:
    """The judge's length bias: the mean over items of the Spearman correlation between its scores
    and the candidates' lengths in characters. Items whose scores or lengths are all equal have no
    correlation and are left out; None when no item has one."""
    from scipy.stats import spearmanr

    values = []
    for item, scores in zip(items, scores_per_item):
        lengths = [len(c.output) for c in item.candidates]
        if len(set(lengths)) > 1 and len(set(scores)) > 1:
            values.append(float(spearmanr(scores, lengths).statistic))
    return float(np.mean(values)) if values else None


def best_of_n_metrics(items: Sequence[BestOfNItem], scores_per_item: Sequence[Sequence[float]]
                      ) -> dict[str, Any]:
    """The judge picks the highest-scored candidate of each item (`scores_per_item[i][j]` scores
    `items[i].candidates[j]`). Reports its win rate, the random, longest-candidate and oracle win
    rates of the same items, the judge's margin over the longest rule with its standard error paired
    by item, its length bias (`length_spearman`), the share of items where the pick is one of the best
    candidates (oracle_pick_rate) and the share where the top score was shared by several
    candidates (tied_pick_rate)."""
    if len(items) != len(scores_per_item):
        raise ValueError(f"{len(scores_per_item)} score lists for {len(items)} items; give one per item")
    if not items:
        raise DataError("no best-of-n items: the evaluation set is empty; give at least one item")
    for i, (item, scores) in enumerate(zip(items, scores_per_item)):
        if len(scores) != len(item.candidates):
            raise DataError(f"{len(scores)} scores for the {len(item.candidates)} candidates of item "
                            f"{item.id}; score every candidate", field=f"scores_per_item[{i}]")
    picks, longest = judge_picks(scores_per_item), longest_picks(items)
    best_pref = [max(c.preference for c in item.candidates) for item in items]
    oracle_hits = [item.candidates[p].preference == best for item, p, best in zip(items, picks, best_pref)]
    tied = [int(np.sum(np.asarray(s, dtype=float) == max(s))) > 1 for s in scores_per_item]
    margins = [item.candidates[p].win - item.candidates[q].win for item, p, q in zip(items, picks, longest)]
    return {
        "n_items": len(items),
        "win_rate": win_rate(items, picks),
        "win_rate_se": standard_error([item.candidates[p].win for item, p in zip(items, picks)]),
        "random_win_rate": random_pick_win_rate(items),
        "longest_win_rate": win_rate(items, longest),
        "oracle_win_rate": oracle_win_rate(items),
        "margin_over_longest": float(np.mean(margins)),
        "margin_over_longest_se": standard_error(margins),
        "length_spearman": length_spearman(items, scores_per_item),
        "oracle_pick_rate": float(np.mean(oracle_hits)),
        "tied_pick_rate": float(np.mean(tied)),
    }


# --- helpers ------------------------------------------------------------------------------------

def _get(obj: Any, name: str, index: int, what: str) -> Any:
    value = obj.get(name) if isinstance(obj, Mapping) else getattr(obj, name, None)
    if value is None:
        raise DataError(f"{what}[{index}] ({type(obj).__name__}) has no '{name}'", field=name)
    return value


def _column(objs: Sequence[Any], name: str, what: str, *, probability: bool = True) -> np.ndarray:
    values = [_get(o, name, i, what) for i, o in enumerate(objs)]
    return _probabilities(values, f"{what}.{name}") if probability else finite_array(values, f"{what}.{name}")


def finite_array(values: Sequence[Any], what: str) -> np.ndarray:
    """`values` as a float array; a value that is not a finite number raises `DataError` naming `what[i]`."""
    try:
        arr = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{what} must be numbers: {exc}", field=what) from None
    if arr.ndim != 1:
        raise DataError(f"{what} must be a flat list of numbers, got shape {arr.shape}", field=what)
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        raise DataError(f"{what}[{bad[0]}] is {arr[bad[0]]}; scores must be finite numbers", field=what)
    return arr


def _probabilities(values: Sequence[Any], what: str) -> np.ndarray:
    arr = finite_array(values, what)
    bad = np.flatnonzero((arr < 0.0) | (arr > 1.0))
    if bad.size:
        raise DataError(f"{what}[{bad[0]}] = {arr[bad[0]]} is not a probability in [0, 1]", field=what)
    return arr


def _binary_labels(values: Sequence[Any], what: str) -> np.ndarray:
    arr = finite_array(values, what)
    bad = np.flatnonzero((arr != 0.0) & (arr != 1.0))
    if bad.size:
        raise DataError(f"{what}[{bad[0]}] = {arr[bad[0]]}; labels must be 0 or 1", field=what)
    return arr


def _tie_half(p: np.ndarray) -> np.ndarray:
    """1 where p > 0.5, 0.5 where p == 0.5, else 0: a coin-flip verdict is half right."""
    return np.where(p == 0.5, 0.5, (p > 0.5).astype(float))


def _yes_rate(scores: Sequence[Any], what: str) -> float:
    answers = [_get(s, "answer", i, what) for i, s in enumerate(scores)]
    for i, a in enumerate(answers):
        if a not in ("Yes", "No"):
            raise DataError(f"{what}[{i}].answer is {a!r}; expected 'Yes' or 'No'", field="answer")
    return sum(a == "Yes" for a in answers) / len(answers)


__all__ = ["ReliabilityBin", "CalibrationReport", "expected_calibration_error", "pairwise_metrics",
           "absolute_metrics", "grouped", "judge_picks", "best_of_n_metrics"]
