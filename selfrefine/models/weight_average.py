"""Weight averaging of two checkpoints of one model, as WARM (Ramé et al. 2024) averages reward models.

Two fine-tunings that share their starting weights (here: a judge and the judge continued from it)
stay linearly connected, so the average of their weights is itself a good model, and WARM found it
a more reliable reward model than either: averaging keeps what both learnt and damps what only one
of them fitted to its own data's noise. It costs one file write, and the result is scored as one
model.

The average is taken file by file over the `*.safetensors` files of a `save_pretrained` directory
(the backbone's `model.safetensors`, or its shards, and the reward head's own file), in float32,
and stored in the dtype of the newer checkpoint. Every other file (config, tokenizer, judge.json)
is the newer checkpoint's.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from selfrefine.errors import ModelLoadError


def average_checkpoints(older: Path | str, newer: Path | str, out_dir: Path | str, newer_weight: float = 0.5) -> Path:
    """Write `newer`'s checkpoint directory to `out_dir` with every tensor replaced by
    (1 − newer_weight) · older + newer_weight · newer. Both must hold the same safetensors files
    with the same tensor names and shapes; otherwise a `ModelLoadError` names the first difference
    and `out_dir` is not written."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    older, newer, out_dir = Path(older), Path(newer), Path(out_dir)
    if not 0.0 <= newer_weight <= 1.0:
        raise ValueError(f"newer_weight must be within [0, 1], got {newer_weight}")
    files = sorted(p.name for p in newer.glob("*.safetensors"))
    older_files = sorted(p.name for p in older.glob("*.safetensors"))
    if not files or files != older_files:
        raise ModelLoadError(f"cannot average {older} and {newer}: they hold different weight files "
                             f"({older_files} and {files})")
    metadata: dict[str, dict[str, str] | None] = {}
    for name in files:  # check everything before writing anything
        with safe_open(older / name, framework="pt") as a, safe_open(newer / name, framework="pt") as b:
            metadata[name] = b.metadata()
            if set(a.keys()) != set(b.keys()):
                only_one = sorted(set(a.keys()) ^ set(b.keys()))[0]
                raise ModelLoadError(f"cannot average {older} and {newer}: {name} has tensor {only_one!r} in only one")
            for key in b.keys():
                if (shape := a.get_slice(key).get_shape()) != (new_shape := b.get_slice(key).get_shape()):
                    raise ModelLoadError(f"cannot average {older} and {newer}: {name} tensor {key!r} has shape "
                                         f"{tuple(shape)} in one and {tuple(new_shape)} in the other")
    shutil.copytree(newer, out_dir)
    for name in files:  # one file in memory at a time
        a, b = load_file(older / name), load_file(newer / name)
        save_file({key: torch.lerp(a[key].float(), t.float(), newer_weight).to(t.dtype) if t.is_floating_point() else t
                   for key, t in b.items()}, out_dir / name, metadata=metadata[name])
    return out_dir
