"""Nested metric results as store rows: flattening with labels, and deltas between iterations.

A stage's metrics are a nested JSON-ready dict (`scoring.metrics`, `scoring.policy_metrics`);
`flatten_metrics` turns it into `(name, value, labels)` rows for the store, and `delta_rows` /
`metric_deltas` compare one iteration's figures with the previous one's.
"""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

MetricRow = tuple[str, float, dict[str, Any]]

# Keys of a nested result whose children are groups: the child keys become these labels.
GROUP_LEVELS: dict[str, tuple[str, ...]] = {
    "by_source": ("source",),
    "by_dimension": ("dimension",),
    "by_source_dimension": ("source", "dimension"),
}
# Lists in a nested result: the label that numbers their elements (default "index").
LIST_LABELS: dict[str, str] = {"bins": "bin", "counts": "bin", "edges": "edge",
                               "cluster_sizes": "cluster", "kept_per_cluster": "cluster"}


def metric_deltas(current: Mapping[str, float], previous: Mapping[str, float] | None) -> dict[str, float]:
    """current - previous for every key holding a finite number in both (none without a previous)."""
    if previous is None:
        return {}
    return {key: float(current[key]) - float(previous[key]) for key in sorted(current)
            if key in previous and _is_number(current[key]) and _is_number(previous[key])}


def flatten_metrics(nested: Mapping[str, Any], *, prefix: str = "",
                    labels: Mapping[str, Any] | None = None,
                    group_levels: Mapping[str, tuple[str, ...]] = GROUP_LEVELS,
                    list_labels: Mapping[str, str] = LIST_LABELS) -> list[MetricRow]:
    """Rows `(name, value, labels)` for the store from a nested result.

    Names join the keys with "_" ({"pairwise": {"accuracy": x}} → "pairwise_accuracy"). The
    children of a `group_levels` key become labels instead of name parts ({"by_source": {"hh":
    {...}}} → labels {"source": "hh"}); list elements get their index as a label (`list_labels`,
    e.g. reliability bins → {"bin": i}). Strings and None are skipped, booleans become 0/1,
    non-finite numbers are skipped with a warning.
    """
    rows: list[MetricRow] = []
    _walk(nested, [prefix] if prefix else [], dict(labels or {}), rows, group_levels, list_labels)
    return rows


def metric_key(name: str, labels: Mapping[str, Any]) -> str:
    """A flat key for one row: `name` or `name{k1=v1,k2=v2}` with the labels sorted."""
    if not labels:
        return name
    return name + "{" + ",".join(f"{k}={labels[k]}" for k in sorted(labels)) + "}"


def delta_rows(current: Iterable[MetricRow], previous: Iterable[MetricRow] | None,
               prefix: str = "delta_") -> list[MetricRow]:
    """Rows `(prefix + name, current - previous, labels)` for the metrics present in both lists."""
    if previous is None:
        return []
    current, where = list(current), {}
    for name, _, labels in current:
        where[metric_key(name, labels)] = (name, dict(labels))
    deltas = metric_deltas(_by_key(current), _by_key(previous))
    return [(prefix + where[k][0], value, where[k][1]) for k, value in deltas.items()]


def _by_key(rows: Iterable[MetricRow]) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, value, labels in rows:
        key = metric_key(name, labels)
        if key in out:
            raise ValueError(f"metric {key} appears twice; give each row distinct labels")
        out[key] = value
    return out


def _walk(node: Any, parts: list[str], labels: dict[str, Any], rows: list[MetricRow],
          group_levels: Mapping[str, tuple[str, ...]], list_labels: Mapping[str, str]) -> None:
    if node is None or isinstance(node, str):
        return
    if isinstance(node, (bool, np.bool_)) or isinstance(node, numbers.Real):
        name = "_".join(parts)
        if not name:
            raise ValueError("a bare number has no name; pass a dict or a prefix")
        if math.isfinite(float(node)):
            rows.append((name, float(node), dict(labels)))
        else:
            logger.warning("metric %s is %s; not stored", metric_key(name, labels), node)
        return
    if isinstance(node, Mapping):
        for key, value in node.items():
            if key in group_levels:
                _walk_groups(value, group_levels[key], parts, labels, rows, group_levels, list_labels)
            else:
                _walk(value, parts + [str(key)], labels, rows, group_levels, list_labels)
        return
    if isinstance(node, (list, tuple, np.ndarray)):
        label = list_labels.get(parts[-1] if parts else "", "index")
        if label in labels:
            raise ValueError(f"label {label!r} is used twice under {'_'.join(parts)}")
        for i, value in enumerate(node):
            _walk(value, parts, {**labels, label: i}, rows, group_levels, list_labels)
        return
    raise TypeError(f"cannot flatten {type(node).__name__} at {'_'.join(parts) or 'the top'}; "
                    "use dicts, lists, numbers, strings or None")


def _walk_groups(node: Any, levels: tuple[str, ...], parts: list[str], labels: dict[str, Any],
                 rows: list[MetricRow], group_levels: Mapping[str, tuple[str, ...]],
                 list_labels: Mapping[str, str]) -> None:
    if not levels:
        _walk(node, parts, labels, rows, group_levels, list_labels)
        return
    if not isinstance(node, Mapping):
        raise ValueError(f"expected groups by {levels[0]} under {'_'.join(parts) or 'the top'}, "
                         f"got {type(node).__name__}")
    if levels[0] in labels:
        raise ValueError(f"label {levels[0]!r} is used twice under {'_'.join(parts) or 'the top'}")
    for key, value in node.items():
        _walk_groups(value, levels[1:], parts, {**labels, levels[0]: key}, rows, group_levels, list_labels)


def _is_number(value: Any) -> bool:
    return (isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
            and math.isfinite(float(value)))
