"""A judge made of one sub-judge per preference dimension, routed by each item's dimension.

Llama 2 trains separate helpfulness and safety reward models because one model trained on both
trades one judgement against the other; bench/dimension_mix.py measures the same trade here (what
the helpful pairs cost a one-head judge in held-out harmless accuracy). `train_judge` with
`judge_per_dimension: true` writes a directory of sub-judges, one per dimension, each of its own
kind (`train_judge.dimension_judge_kinds`); `judge_info` describes its `judge.json`.

`PerDimensionJudge` scores through the same interface as the single judges (`score_absolute`,
`compare`, `compare_cot`): it groups the items by dimension, asks each dimension's sub-judge for
its group in one batched call, and returns the results in input order. An item whose dimension has
no sub-judge is an error, not a silent fallback: the audit must be able to say which judge judged it.
The sub-judges are loaded by the factory (`judge_kind.load_judge`), which passes itself in as `load`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from selfrefine.errors import ConfigError
from selfrefine.models.dimensions import get_dimension
from selfrefine.models.judge_info import sub_judge_dirs
from selfrefine.models.judge_types import AbsoluteItem, JudgeProtocol, PairItem, coerce_item


def _shared_attribute(name: str) -> property:
    """An attribute read from the first sub-judge and written to all of them."""

    def get(self: PerDimensionJudge) -> Any:
        return getattr(next(iter(self.judges.values())), name, ())

    def set_(self: PerDimensionJudge, value: Any) -> None:
        for judge in self.judges.values():
            setattr(judge, name, value)

    return property(get, set_)


class PerDimensionJudge:
    """Routes every item to the sub-judge of its dimension (see the module docstring)."""

    def __init__(self, judges: Mapping[str, JudgeProtocol], dimension_extra: Mapping[str, str] | None = None):
        if not judges:
            raise ValueError("a per-dimension judge needs at least one sub-judge")
        self.judges = dict(judges)
        # What the judging tricks check: the sub-judges' kind, or "mixed" when they differ.
        kinds = {judge.kind for judge in self.judges.values()}
        self.kind = kinds.pop() if len(kinds) == 1 else "mixed"
        self.dimension_extra = dict(dimension_extra or {})

    @classmethod
    def from_directory(cls, directory: str | Path, info: Mapping[str, Any],
                       load: Callable[[str], JudgeProtocol], dimension_extra: Mapping[str, str] | None = None,
                       ) -> PerDimensionJudge:
        """Load each sub-judge with `load(path)` (the same settings as a single judge)."""
        return cls({dim: load(str(path)) for dim, path in sub_judge_dirs(directory, info).items()}, dimension_extra)

    # -- the single judges' interface --

    def score_absolute(self, items: Sequence[AbsoluteItem | Mapping]) -> list:
        return self._routed("score_absolute", [coerce_item(i, AbsoluteItem) for i in items])

    def compare(self, items: Sequence[PairItem | Mapping]) -> list:
        return self._routed("compare", [coerce_item(i, PairItem) for i in items])

    def compare_cot(self, items: Sequence[PairItem | Mapping], *args: Any,
                    hints: Sequence[str | None] | None = None, **kwargs: Any) -> list:
        items = [coerce_item(i, PairItem) for i in items]
        return self._routed("compare_cot", items, *args, per_item={"hints": hints}, **kwargs)

    @property
    def truncated(self) -> int:
        """Inputs read cut short, over every sub-judge."""
        return sum(getattr(judge, "truncated", 0) for judge in self.judges.values())

    # Demonstrations set on the router (evaluate's n-shot trick) go to every sub-judge.
    absolute_demonstrations = _shared_attribute("absolute_demonstrations")
    pairwise_demonstrations = _shared_attribute("pairwise_demonstrations")

    # -- internals --

    def dimension_of(self, item: Any) -> str:
        name = get_dimension(item.dimension, self.dimension_extra).name
        if name not in self.judges:
            raise ConfigError(f"this per-dimension judge has sub-judges for {', '.join(sorted(self.judges))}, "
                              f"not for dimension '{name}'; train it with pairs of that dimension too, or set "
                              "train_judge.judge_per_dimension: false")
        return name

    def _routed(self, method: str, items: list, *args: Any, per_item: Mapping[str, Sequence | None] | None = None,
                **kwargs: Any) -> list:
        """Call `method` of each dimension's sub-judge on its items (and their slice of every
        per-item argument) and put the results back in input order."""
        groups: dict[str, list[int]] = {}
        for i, item in enumerate(items):
            groups.setdefault(self.dimension_of(item), []).append(i)
        results: list[Any] = [None] * len(items)
        for dim, idx in groups.items():
            sliced = {k: [v[i] for i in idx] for k, v in (per_item or {}).items() if v is not None}
            answers = getattr(self.judges[dim], method)([items[i] for i in idx], *args, **kwargs, **sliced)
            for i, answer in zip(idx, answers):
                results[i] = answer
        return results
