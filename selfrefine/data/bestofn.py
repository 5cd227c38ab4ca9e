"""Best-of-n sets: a prompt, a reference answer and n candidates, each with a preference against
the reference (1 = reference better, 2 = candidate better), as in the AlpacaEval best-of-n data
(`{"instruction", "reference", "candidates": [{"sample", "output", "preference"}, ...]}`).

A judge's best-of-n win rate is the mean `preference - 1` of the candidates it picks.
"""

from __future__ import annotations

from typing import Any, Sequence

from selfrefine.data.fields import get_optional_str, require_mapping
from selfrefine.data.records import prompt_from_record, record_labels
from selfrefine.data.schema import BestOfNItem, parse_candidates


def bestofn_from_record(raw: Any, *, dimension: str | None, source: str) -> BestOfNItem:
    """One best-of-n record → a `BestOfNItem`. The prompt is read like a prompt record
    (`instruction`, `prompt` or `context`); `reference` is optional."""
    row = require_mapping(raw)
    dim, src = record_labels(row, dimension, source)
    prompt = prompt_from_record(row, dimension=dim, source=src)
    return BestOfNItem(context=prompt.context, candidates=parse_candidates(row.get("candidates")),
                       reference=get_optional_str(row, "reference"), dimension=dim, source=src)


def win_rate(items: Sequence[BestOfNItem], picks: Sequence[int]) -> float:
    """Mean win value of the picked candidate (`picks[i]` indexes `items[i].candidates`)."""
    if len(items) != len(picks):
        raise ValueError(f"{len(picks)} picks for {len(items)} items; give one pick per item")
    if not items:
        raise ValueError("no items: the win rate of an empty set is undefined")
    return sum(item.candidates[p].win for item, p in zip(items, picks)) / len(items)


def random_pick_win_rate(items: Sequence[BestOfNItem]) -> float:
    """Expected win rate of picking a candidate uniformly at random (the chance baseline)."""
    if not items:
        raise ValueError("no items: the win rate of an empty set is undefined")
    return sum(sum(c.win for c in it.candidates) / len(it.candidates) for it in items) / len(items)


def oracle_win_rate(items: Sequence[BestOfNItem]) -> float:
    """Win rate of always picking the best candidate (the ceiling)."""
    return win_rate(items, [max(range(len(it.candidates)), key=lambda i: it.candidates[i].preference)
                            for it in items])
