"""Make TRL's fused LM head score only the positions that carry a label, on every device.

TRL's SFT and DPO trainers compute token log-probabilities with a fused LM head
(`trl.trainer.utils.add_fused_lm_head`) that never builds the full logits. On CUDA/XPU with Triton it
scores only the positions whose label is not -100; on any other device it scores *every* position
and masks the result afterwards, to keep tile shapes fixed for graph compilers (e.g. Neuron). On a
CPU nothing is compiled, so that is pure waste, and a large one for the judge: an evaluation prompt
of ~300 tokens carries loss on two tokens (the answer and EOS), yet every position goes through the
49k-word head and its element-wise softmax, entropy and top-1 passes, forward and backward. The
losses are the same either way (`tests/models/test_training.py` checks it); only the work differs.

`labelled_positions_only()` switches TRL's choice to the compact path for the duration of a
training run. The compact path is TRL's own code (indexing by the label mask, then the same chunked
log-prob function, whose tiles fall back to torch without Triton). If a TRL release renames the
switch, training still works, only without the saving, and a warning says so.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

logger = logging.getLogger(__name__)

_SWITCH = "_use_triton"  # the name trl.trainer.utils consults to pick compact scoring


@contextlib.contextmanager
def labelled_positions_only() -> Iterator[bool]:
    """Within the block, TRL's fused LM head scores only labelled positions on every device.

    Yields whether the switch was found (False: TRL's default behaviour, with a logged warning).
    Not re-entrant across threads: it changes a module attribute for the whole process.
    """
    import trl.trainer.utils as trl_utils

    original = getattr(trl_utils, _SWITCH, None)
    if original is None:
        logger.warning("this TRL version has no trl.trainer.utils.%s: its fused LM head keeps its default "
                       "(every position scored on CPUs), so training is slower but unchanged", _SWITCH)
        yield False
        return
    # Only the compaction decision in trl.trainer.utils sees this; the kernels module keeps its own
    # `_use_triton`, so tiles still run in torch where Triton cannot.
    setattr(trl_utils, _SWITCH, lambda device: True)
    try:
        yield True
    finally:
        setattr(trl_utils, _SWITCH, original)
