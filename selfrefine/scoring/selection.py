"""Selection for the `score_filter` stage: top-k by judge score, then k-means for diversity.

The decoder-reward-model paper filters self-generated data by keeping the top-k scored samples
and then clustering their sentence embeddings with k-means, keeping a few per cluster, so the
kept set is both good and varied. These functions take plain arrays and return indices plus the
bookkeeping the stage records (rule counts, the score distribution). Nothing touches the store.

Errors: an invalid parameter raises `ConfigError`, non-finite data `DataError`, and arrays of
different lengths (a caller bug) `ValueError`.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from selfrefine.errors import ConfigError, DataError

# Fixed histogram edges for judge scores, so histograms compare across iterations. They cover
# both score bands of the absolute judge: No in [-1 - ln 2, -1], Yes in [1 - ln 2, 1]
# (vocabulary-space scores can go lower and land in the first, open bin).
DEFAULT_SCORE_EDGES: tuple[float, ...] = tuple(float(x) for x in np.linspace(-2.0, 1.0, 13))
QUANTILES: tuple[float, ...] = (0.1, 0.25, 0.5, 0.75, 0.9)


def top_k(scores: Sequence[float] | np.ndarray, k: int) -> np.ndarray:
    """Indices of the `k` highest scores, highest first; equal scores keep the lower index first.
    `k` larger than the number of scores returns them all."""
    _check_count(k, "k", minimum=0)
    values = _scores(scores)
    # A stable sort of the negated scores keeps equal scores in index order.
    return np.argsort(-values, kind="stable")[:k].astype(np.int64)


@dataclass(frozen=True)
class DiverseSelection:
    """The result of `diverse_subset`.

    indices: the kept points, highest score first. cluster_of: the cluster of every input point.
    cluster_sizes / kept_per_cluster: per cluster id. n_clusters: the clusters actually used,
    fewer than requested when there were fewer distinct points (`clamped`, explained in `notes`).
    """

    indices: np.ndarray
    cluster_of: np.ndarray
    cluster_sizes: list[int]
    kept_per_cluster: list[int]
    n_clusters_requested: int
    n_clusters: int
    clamped: bool
    notes: list[str] = field(default_factory=list)

    def info(self) -> dict[str, Any]:
        """JSON-ready summary (no per-point arrays) for stage metadata and metrics."""
        return {"n_points": int(len(self.cluster_of)), "kept": int(len(self.indices)),
                "n_clusters_requested": self.n_clusters_requested, "n_clusters": self.n_clusters,
                "clamped": self.clamped, "cluster_sizes": list(self.cluster_sizes),
                "kept_per_cluster": list(self.kept_per_cluster), "notes": list(self.notes)}


def diverse_subset(embeddings: np.ndarray, scores: Sequence[float] | np.ndarray, n_clusters: int,
                   per_cluster: int, seed: int, *, n_init: int = 10) -> DiverseSelection:
    """k-means (scikit-learn, `random_state=seed`, `n_init` restarts) on the embeddings, then the
    `per_cluster` highest-scoring members of each cluster (ties: lower index first).

    With L2-normalised embeddings Euclidean k-means groups by cosine similarity. When there are
    fewer distinct points than `n_clusters`, the number of clusters is clamped to the number of
    distinct points and the result says so. Deterministic for a seed.
    """
    _check_count(n_clusters, "n_clusters", minimum=1)
    _check_count(per_cluster, "per_cluster", minimum=1)
    _check_count(n_init, "n_init", minimum=1)
    _check_count(seed, "seed", minimum=0)
    values = _scores(scores)
    points = np.asarray(embeddings, dtype=np.float64)
    if points.ndim != 2:
        raise ValueError(f"embeddings must be a 2-d array (points x dimensions), got shape {points.shape}")
    if len(points) != len(values):
        raise ValueError(f"{len(points)} embeddings for {len(values)} scores; give one score per point")
    if not np.isfinite(points).all():
        row = int(np.flatnonzero(~np.isfinite(points).all(axis=1))[0])
        raise DataError(f"embedding {row} has a non-finite value; re-embed the text", field="embeddings")
    if len(points) == 0:
        return DiverseSelection(np.zeros(0, np.int64), np.zeros(0, np.int64), [], [], n_clusters, 0,
                                True, ["no points to cluster: nothing kept"])

    distinct = len(np.unique(points, axis=0))
    used = min(n_clusters, distinct)
    notes = []
    if used < n_clusters:
        notes.append(f"{len(points)} points ({distinct} distinct) for {n_clusters} clusters: "
                     f"clamped to {used} clusters")
    cluster_of = _kmeans_labels(points, used, seed, n_init)

    kept: list[int] = []
    sizes, kept_counts = [], []
    for c in range(used):
        members = np.flatnonzero(cluster_of == c)
        best = members[top_k(values[members], per_cluster)]
        kept.extend(int(i) for i in best)
        sizes.append(int(len(members)))
        kept_counts.append(int(len(best)))
    kept_arr = np.asarray(kept, dtype=np.int64)
    order = top_k(values[kept_arr], len(kept_arr))
    return DiverseSelection(indices=kept_arr[order], cluster_of=cluster_of, cluster_sizes=sizes,
                            kept_per_cluster=kept_counts, n_clusters_requested=n_clusters,
                            n_clusters=used, clamped=used < n_clusters, notes=notes)


def _kmeans_labels(points: np.ndarray, n_clusters: int, seed: int, n_init: int) -> np.ndarray:
    if n_clusters == 1:
        return np.zeros(len(points), dtype=np.int64)
    from sklearn.cluster import KMeans  # imported on use: sklearn is slow to import

    model = KMeans(n_clusters=n_clusters, random_state=seed, n_init=n_init)
    return model.fit_predict(points).astype(np.int64)


class FilterReport:
    """How many items each filtering rule removed, in the order the rules ran.

    >>> report = FilterReport()
    >>> report.record("top_k", before=100, after=40)
    >>> report.record("kmeans_diversity", before=40, after=24)
    >>> report.to_json()["removed_total"]
    76
    """

    def __init__(self) -> None:
        self.steps: list[dict[str, Any]] = []

    def record(self, rule: str, before: int, after: int) -> None:
        """Note that `rule` took the item count from `before` to `after`."""
        if not isinstance(rule, str) or not rule:
            raise ValueError(f"rule must be a non-empty name, got {rule!r}")
        if any(step["rule"] == rule for step in self.steps):
            raise ValueError(f"rule {rule!r} was already recorded; give each step its own name")
        _check_count(before, f"{rule}: before", minimum=0)
        _check_count(after, f"{rule}: after", minimum=0)
        if after > before:
            raise ValueError(f"rule {rule!r} went from {before} to {after} items; a filter only removes")
        self.steps.append({"rule": rule, "before": int(before), "after": int(after),
                           "removed": int(before - after)})

    def to_json(self) -> dict[str, Any]:
        """{"steps": [...], "input", "kept", "removed_total"} (input/kept are None before any step)."""
        return {"steps": [dict(s) for s in self.steps],
                "input": self.steps[0]["before"] if self.steps else None,
                "kept": self.steps[-1]["after"] if self.steps else None,
                "removed_total": sum(s["removed"] for s in self.steps)}

    def metric_rows(self, prefix: str = "filter_") -> list[tuple[str, float, dict[str, Any]]]:
        """Store rows: `{prefix}before|after|removed` labelled {"rule", "step"} per step."""
        return [(f"{prefix}{what}", float(s[what]), {"rule": s["rule"], "step": i})
                for i, s in enumerate(self.steps) for what in ("before", "after", "removed")]


def score_summary(scores: Sequence[float] | np.ndarray,
                  edges: Sequence[float] = DEFAULT_SCORE_EDGES) -> dict[str, Any]:
    """The distribution of scores: count, mean, std (population), min, quantiles, max, and a
    histogram on fixed `edges`. `counts[0]` is scores <= edges[0], `counts[i]` is
    edges[i-1] < s <= edges[i], `counts[-1]` is scores > edges[-1] (len(edges) + 1 counts).
    With no scores, the statistics are None and the counts zero."""
    values = _scores(scores)
    edge_arr = np.asarray(edges, dtype=float)
    if edge_arr.ndim != 1 or len(edge_arr) == 0 or not np.isfinite(edge_arr).all() \
            or np.any(np.diff(edge_arr) <= 0):
        raise ConfigError(f"histogram edges must be finite and strictly increasing, got {list(edges)}")
    counts = np.bincount(np.searchsorted(edge_arr, values, side="left"), minlength=len(edge_arr) + 1)
    summary: dict[str, Any] = {"count": int(len(values))}
    empty = len(values) == 0
    summary["mean"] = None if empty else float(values.mean())
    summary["std"] = None if empty else float(values.std())
    summary["min"] = None if empty else float(values.min())
    for q in QUANTILES:
        summary[f"q{round(q * 100):02d}"] = None if empty else float(np.quantile(values, q))
    summary["max"] = None if empty else float(values.max())
    summary["histogram"] = {"edges": [float(e) for e in edge_arr], "counts": [int(c) for c in counts]}
    return summary


def _scores(scores: Sequence[float] | np.ndarray) -> np.ndarray:
    try:
        values = np.asarray(scores, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"scores must be numbers: {exc}", field="scores") from None
    if values.ndim != 1:
        raise ValueError(f"scores must be a flat list, got shape {values.shape}")
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        raise DataError(f"score {bad[0]} is {values[bad[0]]}; scores must be finite", field="scores")
    return values


def _check_count(value: Any, name: str, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")


__all__ = ["DEFAULT_SCORE_EDGES", "QUANTILES", "top_k", "DiverseSelection", "diverse_subset",
           "FilterReport", "score_summary"]
