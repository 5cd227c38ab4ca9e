"""Length-sorted, left-padded batches of token sequences, for scoring forward passes.

Sorting by length keeps the padding in each batch small; left padding puts every sequence's last
token in the last column, where scoring reads it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any


def left_padded_batches(sequences: Sequence[Sequence[int]], batch_size: int, pad_id: int | None
                        ) -> Iterator[tuple[list[int], Any, Any]]:
    """Yield `(indices, input_ids, attention_mask)` per batch, shortest sequences first; `indices`
    are the batch rows' positions in `sequences`. `pad_id` None pads with 0 (masked out anyway)."""
    import torch

    pad = 0 if pad_id is None else pad_id
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        width = max(len(sequences[i]) for i in idx)
        input_ids = torch.full((len(idx), width), pad, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for row, i in enumerate(idx):
            seq = sequences[i]
            input_ids[row, width - len(seq):] = torch.tensor(seq, dtype=torch.long)
            mask[row, width - len(seq):] = 1
        yield idx, input_ids, mask
