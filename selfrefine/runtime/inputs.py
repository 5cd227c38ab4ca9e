"""Reading and writing stage data: inputs by role, datasets as JSONL, seeded samples."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from selfrefine.data import PreferencePair, read_jsonl
from selfrefine.errors import ConfigError
from selfrefine.runtime.stage import InputArtifact

DATA_FILE = "data.jsonl"


def inputs_with_prefix(inputs: Mapping[str, InputArtifact], prefix: str) -> list[InputArtifact]:
    """Inputs whose role is `prefix` or starts with `prefix_` (e.g. seed_pairs_0, seed_pairs_1), by role."""
    return [a for role, a in sorted(inputs.items()) if role == prefix or role.startswith(prefix + "_")]


def read_items(artifacts: Sequence[InputArtifact], kind: Literal["pairs", "prompts", "bestofn"],
               dimension_definitions: Mapping[str, str] | None = None) -> list[Any]:
    """Every item of these dataset artifacts, in role order. The config's own dimensions must be
    passed: the items were validated against them at ingest and are checked again here."""
    items: list[Any] = []
    for art in artifacts:
        items.extend(read_jsonl(data_file(art), kind, extra_dimensions=dimension_definitions or None))
    return items


def read_pairs(artifacts: Sequence[InputArtifact],
               dimension_definitions: Mapping[str, str] | None = None) -> list[PreferencePair]:
    return read_items(artifacts, "pairs", dimension_definitions)


def data_file(art: InputArtifact) -> Path:
    """The JSONL inside a dataset artifact."""
    return art.path / DATA_FILE


def write_dataset(out_dir: Path, name: str, items) -> tuple[Path, int]:
    """Write items as a dataset artifact: a directory holding `data.jsonl` (stored objects have no
    file suffix, so the directory keeps the format readable)."""
    from selfrefine.data import write_jsonl

    path = out_dir / name
    path.mkdir()
    return path, write_jsonl(path / DATA_FILE, items)


def require(inputs: Mapping[str, InputArtifact], role: str, stage: str) -> InputArtifact:
    if role not in inputs:
        raise ConfigError(f"stage {stage} needs an input artifact with role {role!r}; "
                          f"got {sorted(inputs) or 'none'}")
    return inputs[role]


def sample(items: Sequence[Any], limit: int | None, seed: int) -> list[Any]:
    """A seeded, order-independent sample of at most `limit` items (all of them, shuffled, if None)."""
    chosen = list(items)
    random.Random(seed).shuffle(chosen)
    return chosen if limit is None else chosen[:limit]
