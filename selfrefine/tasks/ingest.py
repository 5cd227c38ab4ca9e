"""`ingest_data`: read the run's data sources, validate them, store each as a normalised JSONL artifact.

Every other stage reads data only through these artifacts, so a model's lineage always reaches
the exact bytes of the data it was trained on. `prepare` runs before any stage starts (the flow's
preflight): it loads and validates every source and pins each source file's digest into the
config, so editing a local file changes the stage key and is re-ingested.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from selfrefine.data import DataSource, demo_path, load_bestofn, load_pairs, load_prompts
from selfrefine.data.paths import data_path
from selfrefine.models.dimensions import dimension_definitions_field
from selfrefine.runtime.inputs import write_dataset
from selfrefine.runtime.stage import Output, Stage, StageContext, StageReturn


DataKind = Literal["pairs", "prompts", "bestofn"]
_LOADERS = {"pairs": load_pairs, "prompts": load_prompts, "bestofn": load_bestofn}


class SourceSpec(BaseModel):
    """One data source to validate and store."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    data_kind: DataKind = Field(description="What the source holds: preference pairs, prompts or best-of-n sets.")
    source: DataSource = Field(description="Where the data comes from.")
    content_digest: str | None = Field(
        None, description="sha256 of the source file, filled in by `prepare` so that a changed file "
                          "gets a new stage key; None for hub sources (pin `revision` instead).")


class IngestConfig(BaseModel):
    """The data sources of a run, by role (e.g. seed_pairs_0, prompts_0, heldout_pairs_0)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    sources: dict[str, SourceSpec] = Field(min_length=1, description="Sources by output role.")
    dimension_definitions: dict[str, str] = dimension_definitions_field()


def load_items(spec: SourceSpec, dimension_definitions: dict[str, str] | None = None) -> list:
    """Load and validate one source; raises `DataError` naming file, line and field."""
    return _LOADERS[spec.data_kind](spec.source, dimension_definitions or None)


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def prepare(sources: dict[str, tuple[DataKind, DataSource]],
            dimension_definitions: dict[str, str] | None = None) -> tuple[IngestConfig, dict[str, int]]:
    """Validate every source before anything is written; return the pinned config and item counts."""
    specs, counts = {}, {}
    for role, (data_kind, source) in sources.items():
        spec = SourceSpec(data_kind=data_kind, source=source)
        counts[role] = len(load_items(spec, dimension_definitions))
        if source.kind == "local":
            # The same resolution (and confinement) the loader uses.
            digest = _file_digest(data_path(source.path, source.root))
        elif source.kind == "demo":
            digest = _file_digest(Path(demo_path(data_kind)))
        else:
            digest = None
        specs[role] = spec.model_copy(update={"content_digest": digest})
    return IngestConfig(sources=specs, dimension_definitions=dimension_definitions or {}), counts


def run(ctx: StageContext) -> StageReturn:
    config: IngestConfig = ctx.config
    outputs, metrics = {}, []
    for role, spec in sorted(config.sources.items()):
        items = load_items(spec, config.dimension_definitions)
        out, n = write_dataset(ctx.out_dir, role, items)
        meta = {"data_kind": spec.data_kind, "items": n, "source_kind": spec.source.kind,
                "source": spec.source.source or spec.source.path or spec.source.kind}
        outputs[role] = Output(out, "dataset", meta)
        metrics.append(("items", float(n), {"role": role, "data_kind": spec.data_kind}))
    return StageReturn(outputs, metrics)


STAGE = Stage(name="ingest_data", code_version="1", config=IngestConfig, run=run, per_iteration=False)
