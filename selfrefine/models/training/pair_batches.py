"""Lay out training examples so that each pair's examples share a batch, in batches of similar length.

A judge trained on the absolute prompt sees the chosen response labelled " Yes" and the rejected one
" No"; on the pairwise prompt, both orders of the same pair. When both examples of a pair land in
the same batch, the gradient towards always answering Yes (or A) cancels within every step, and
each step contrasts the two responses the way a Bradley–Terry loss does (bench/judges.py measures
the layout).

The layout is meant for sequential training (`shuffle: false`): every pass over the groups is
shuffled with a seeded RNG, cut into windows of `window_batches` batches, sorted by length within
a window (as transformers' LengthGroupedSampler does for single examples, so less compute goes
into padding), batched, and the batches are shuffled. Groups are never split, so every batch but
the last holds whole groups.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")


def pair_batched(groups: Sequence[Sequence[T]], batch_size: int, length: Callable[[Sequence[T]], int], *,
                 seed: int = 0, window_batches: int = 16) -> list[T]:
    """The examples of `groups` in training order: batches of `batch_size` examples, each made of
    whole groups of similar `length`.

    Groups of different sizes are laid out apart (all pairs give the same number of examples; the
    singletons are e.g. rationales), so that every full batch holds whole groups; each size's
    incomplete last batch goes to the end.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    by_size: dict[int, list[Sequence[T]]] = {}
    for group in groups:
        if group and batch_size % len(group):
            raise ValueError(f"groups of {len(group)} examples do not fill batches of {batch_size} evenly; "
                             f"use a batch size that is a multiple of {len(group)}")
        if group:
            by_size.setdefault(len(group), []).append(group)
    rng = random.Random(seed)
    full: list[list[Sequence[T]]] = []
    partial: list[list[Sequence[T]]] = []
    for size, same in sorted(by_size.items()):
        per_batch = batch_size // size
        rng.shuffle(same)
        window = per_batch * window_batches
        for start in range(0, len(same), window):
            chunk = sorted(same[start:start + window], key=length, reverse=True)
            for i in range(0, len(chunk), per_batch):
                batch = chunk[i:i + per_batch]
                (full if len(batch) * size == batch_size else partial).append(batch)
    rng.shuffle(full)
    return [example for batch in full + partial for group in batch for example in group]
