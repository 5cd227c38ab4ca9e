"""What a stage is and what it exchanges with the stage runner.

A stage module declares itself in one `Stage` object: its name, code version, config class, the
function the runner calls, and optionally `pin`, which fills in fingerprints of things the config
names but the store does not hold (a local base model directory) so they take part in the stage key.
The runner calls `run(ctx: StageContext) -> StageReturn`.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel


@dataclass(frozen=True)
class Output:
    """One output of a stage: a file or directory the stage wrote inside its `out_dir`."""

    path: Path
    kind: str
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class StageReturn:
    """What a stage function returns: its outputs by role, and metrics (name, value, labels)."""

    outputs: dict[str, Output]
    metrics: list[tuple[str, float, dict[str, Any]]] = field(default_factory=list)


@dataclass(frozen=True)
class InputArtifact:
    id: uuid.UUID
    kind: str
    sha256: str
    path: Path
    meta: dict[str, Any]


@dataclass(frozen=True)
class StageContext:
    """What a stage function receives."""

    stage: str
    config: BaseModel
    inputs: dict[str, InputArtifact]
    out_dir: Path
    seed: int | None
    stage_run_id: uuid.UUID


@dataclass(frozen=True)
class StageOutcome:
    stage_run_id: uuid.UUID
    stage_key: str
    status: Literal["ran", "reused"]
    outputs: dict[str, uuid.UUID]


StageFn = Callable[[StageContext], StageReturn]


@dataclass(frozen=True)
class Stage:
    """One stage, as its module declares it.

    `per_iteration`: the stage runs once per iteration of a run (False for the run-level stages,
    ingest_data and report). `gpu`: it runs models on accelerators, so a cluster sends it to a GPU
    work pool."""

    name: str
    code_version: str
    config: type[BaseModel]
    run: StageFn
    pin: Callable[[Any], Any] | None = None
    per_iteration: bool = True
    gpu: bool = False

    def pinned(self, config: BaseModel) -> BaseModel:
        """`config` with what `pin` fills in (the config itself for a stage without `pin`)."""
        return self.pin(config) if self.pin is not None else config
