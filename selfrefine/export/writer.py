"""`export`: the models an id names, written under a directory with their model cards.

Layout: a model artifact or a `train_judge`/`policy_round` stage run is written to DIR itself; a
run or iteration to DIR/policy and DIR/judge. A per-dimension judge is one directory per dimension
below its place (DIR/harmless, … or DIR/judge/harmless, …).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from selfrefine.errors import ConfigError
from selfrefine.export.card import base_license, hub_id, judge_reading_of, model_card, write_card
from selfrefine.export.convert import export_model
from selfrefine.export.targets import export_targets
from selfrefine.storage.artifacts import ArtifactStore
from selfrefine.storage.engine import Store


@dataclass(frozen=True)
class Exported:
    role: str
    kind: str  # causal_lm or sequence_classification
    directory: Path
    artifact_id: str


def export(text: str, dest: str | Path, *, store: Store, artifacts: ArtifactStore,
           overwrite: bool = False) -> list[Exported]:
    """Write the models `text` names under `dest` (see the module docstring); returns what was written."""
    dest = Path(dest).expanduser()
    with store.session() as s:
        targets = export_targets(s, text, artifacts)  # an unknown id fails before DIR is touched
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        if not overwrite:
            raise ConfigError(f"{dest} exists and is not empty; choose another directory or pass --overwrite")
        shutil.rmtree(dest) if dest.is_dir() else dest.unlink()
    dest.mkdir(parents=True, exist_ok=True)
    licenses: dict[str | None, str | None] = {}
    written = []
    for target in targets:
        place = dest / target.role if len(targets) > 1 else dest
        base = hub_id(target.base_model)
        if base not in licenses:
            licenses[base] = base_license(base)
        for directory, kind in export_model(target.path, place, target.role):
            dimension = directory.name if directory != place else None
            reading = judge_reading_of(target.path, dimension) if target.role == "judge" else None
            write_card(directory, model_card(target, kind, dimension, licenses[base], reading))
            written.append(Exported(target.role, kind, directory, target.artifact_id))
    return written

