"""`DataSource`: one typed config naming where preference pairs, prompts or best-of-n items come
from, and `load_pairs` / `load_prompts` / `load_bestofn` that read and validate it."""

from __future__ import annotations

import importlib.resources
from pathlib import Path
from typing import Any, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, model_validator

from selfrefine.data import hub_rows
from selfrefine.data.hub import HUB_DATASETS, iter_hub_rows
from selfrefine.data.readers import DEFAULT_MAX_LINE_BYTES
from selfrefine.data.schema import BestOfNItem, PreferencePair, PromptItem
from selfrefine.data.validate import DEFAULT_MAX_ERRORS, LoadResult, collect, read_local
from selfrefine.errors import ConfigError

SourceKind = Literal["local", "hh-rlhf", "oasst", "webgpt", "shp", "ultrafeedback", "demo"]
DEMO_FILES = {"pairs": "pairs.jsonl", "prompts": "prompts.jsonl", "bestofn": "bestofn.jsonl"}


class DataSource(BaseModel):
    """Where a data set comes from and how strictly to read it."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)

    kind: SourceKind = Field(description=(
        "'local' reads a JSONL / JSONL.gz / Parquet file; 'hh-rlhf', 'oasst', 'webgpt', 'shp', "
        "'ultrafeedback' read that public set from the Hugging Face hub; 'demo' reads the small "
        "data set shipped with selfrefine."))
    path: str | None = Field(default=None, description=(
        "For 'local': the data file (required). For hub kinds: optional replacement for the hub, "
        "either a file of the set's rows in its own format or a downloaded copy of its repository."))
    subset: str | None = Field(default=None, description=(
        "hh-rlhf: the data_dir, one of helpful-base, helpful-online, helpful-rejection-sampled, "
        "harmless-base (required). shp: a subreddit folder (e.g. askscience); none reads all."))
    split: str | None = Field(default=None, description=(
        "Hub split; default 'train' ('train_prefs' for ultrafeedback)."))
    dimension: str | None = Field(default=None, description=(
        "Preference dimension of the items. Local files: used for records without a 'dimension' "
        "field. Hub kinds: overrides the set's default (hh-rlhf helpful-*: helpful, harmless-base: "
        "harmless, oasst: quality, webgpt / shp: helpful, ultrafeedback: quality)."))
    source: str | None = Field(default=None, description=(
        "Source name recorded on each item for per-source metrics; default the file's stem, the "
        "hub kind (with its subset) or 'demo'. A record's own 'source' field wins for local files."))
    skip: int = Field(default=0, ge=0, description=(
        "Leave out the first N valid items (they are still validated): with `limit`, a slice of a "
        "file, e.g. seed pairs = the first 800, held-out pairs = skip 800."))
    limit: int | None = Field(default=None, ge=1, description=(
        "Keep only the first N valid items (reading stops there)."))
    revision: str | None = Field(default=None, description=(
        "Hub revision (branch, tag or commit) to pin; default the set's usual revision."))
    language: str | None = Field(default=None, description=(
        "oasst only: keep replies in this language code (e.g. 'en'); none keeps all."))
    root: str | None = Field(default=None, description=(
        "If set, `path` must resolve inside this directory (PathEscapeError otherwise)."))
    on_invalid: Literal["error", "skip"] | None = Field(default=None, description=(
        "'error' stops at invalid records (naming file, line and field); 'skip' drops them and "
        "logs how many. Default: 'error' for local and demo data, 'skip' for hub sets, whose "
        "public releases contain a few empty or broken rows."))
    max_errors: int = Field(default=DEFAULT_MAX_ERRORS, ge=1, description=(
        "Stop reading after this many problems and report them together."))
    max_line_bytes: int = Field(default=DEFAULT_MAX_LINE_BYTES, ge=1, description=(
        "Longest JSONL line accepted, in bytes; a longer line is an error rather than a memory "
        "blow-up."))

    @model_validator(mode="after")
    def _check_combination(self) -> DataSource:
        if self.kind == "local" and not self.path:
            raise ValueError("kind='local' needs path= (a .jsonl, .jsonl.gz or .parquet file)")
        if self.kind == "demo" and self.path:
            raise ValueError("kind='demo' reads the shipped demo files; remove path= or use "
                             "kind='local'")
        if self.kind == "hh-rlhf":
            if self.subset not in HUB_DATASETS["hh-rlhf"].subsets:
                raise ValueError(f"kind='hh-rlhf' needs subset= {HUB_DATASETS['hh-rlhf'].subset_help}"
                                 f"; got {self.subset!r}")
        elif self.subset is not None and self.kind != "shp":
            raise ValueError(f"subset= applies to kind 'hh-rlhf' and 'shp' only, not {self.kind!r}")
        if self.language is not None and self.kind != "oasst":
            raise ValueError("language= applies to kind='oasst' only")
        if self.kind in ("local", "demo") and (self.split or self.revision):
            raise ValueError(f"split= and revision= apply to hub kinds, not {self.kind!r}")
        return self

    @property
    def is_hub(self) -> bool:
        return self.kind in HUB_DATASETS

    def invalid_policy(self) -> Literal["error", "skip"]:
        return self.on_invalid or ("skip" if self.is_hub else "error")

    def hub_dimension(self) -> str:
        spec = HUB_DATASETS[self.kind]
        return self.dimension or spec.subsets.get(self.subset or "", spec.dimension)

    def hub_source(self) -> str:
        return self.source or (f"{self.kind}/{self.subset}" if self.subset else self.kind)


def _collect_options(src: DataSource, extra_dimensions: Mapping[str, str] | None) -> dict[str, Any]:
    return {"on_invalid": src.invalid_policy(), "max_errors": src.max_errors, "limit": src.limit,
            "skip": src.skip,
            "extra_dimensions": extra_dimensions}


def _read_file(kind: str, src: DataSource, extra: Mapping[str, str] | None) -> LoadResult:
    if src.kind == "demo":
        resource = importlib.resources.files("selfrefine.data") / "demo" / DEMO_FILES[kind]
        with importlib.resources.as_file(resource) as demo_path:
            return read_local(kind, demo_path, dimension=src.dimension, source=src.source or "demo",
                              max_line_bytes=src.max_line_bytes, **_collect_options(src, extra))
    return read_local(kind, src.path, dimension=src.dimension, source=src.source, root=src.root,
                      max_line_bytes=src.max_line_bytes, **_collect_options(src, extra))


def _check_default_dimension(name: str | None, extra: Mapping[str, str] | None) -> None:
    # A wrong configured dimension is a config error, reported before any file is read.
    if name is not None:
        from selfrefine.models.dimensions import get_dimension

        get_dimension(name, extra)


def read_hub_pairs(src: DataSource, extra_dimensions: Mapping[str, str] | None = None) -> LoadResult:
    """Pairs of a hub kind, converted row by row (oasst: by message tree) and validated."""
    spec = HUB_DATASETS[src.kind]
    where, rows = iter_hub_rows(src.kind, path=src.path, subset=src.subset, split=src.split,
                                revision=src.revision, root=src.root,
                                max_line_bytes=src.max_line_bytes)
    dimension, source = src.hub_dimension(), src.hub_source()
    options = _collect_options(src, extra_dimensions)
    if spec.convert is None:  # oasst: pairs come from whole message trees, not single rows
        pairs = hub_rows.oasst_pairs((row for _, row in rows if isinstance(row, dict)),
                                     dimension=dimension, source=source, language=src.language)
        return collect(enumerate(pairs, 1), lambda pair: pair, where=where, **options)
    convert = spec.convert
    return collect(rows, lambda row: convert(row, dimension=dimension, source=source),
                   where=where, **options)


def load_pairs(source: DataSource, extra_dimensions: Mapping[str, str] | None = None,
               ) -> list[PreferencePair]:
    """Read and validate the preference pairs of `source`.

    `extra_dimensions` are the config's own dimensions (name -> definition) besides the built-in
    ones. Raises `DataError` (file, line, field) on bad data, `UnknownDimensionError` for an unknown
    configured dimension, `HubUnavailableError` when a hub set cannot be loaded.
    """
    _check_default_dimension(source.dimension, extra_dimensions)
    if source.is_hub:
        return read_hub_pairs(source, extra_dimensions).items
    return _read_file("pairs", source, extra_dimensions).items


def load_prompts(source: DataSource, extra_dimensions: Mapping[str, str] | None = None,
                 ) -> list[PromptItem]:
    """Read and validate prompts for generation. For hub kinds, the distinct contexts of the
    set's pairs (in order of first appearance)."""
    _check_default_dimension(source.dimension, extra_dimensions)
    if not source.is_hub:
        return _read_file("prompts", source, extra_dimensions).items
    seen: dict[str, PromptItem] = {}
    for pair in read_hub_pairs(source.model_copy(update={"limit": None}), extra_dimensions).items:
        item = PromptItem(pair.context, pair.dimension, pair.source)
        seen.setdefault(item.id, item)
        if source.limit is not None and len(seen) >= source.limit:
            break
    return list(seen.values())


def load_bestofn(source: DataSource, extra_dimensions: Mapping[str, str] | None = None,
                 ) -> list[BestOfNItem]:
    """Read and validate a best-of-n set (local files and the demo set only)."""
    if source.is_hub:
        raise ConfigError(f"kind={source.kind!r} has no best-of-n data; use kind='local' with a "
                          "best-of-n JSONL file or kind='demo'")
    _check_default_dimension(source.dimension, extra_dimensions)
    return _read_file("bestofn", source, extra_dimensions).items


def demo_path(kind: Literal["pairs", "prompts", "bestofn"]) -> Path:
    """The shipped demo file of `kind` (for display; loaders use `DataSource(kind='demo')`)."""
    return Path(str(importlib.resources.files("selfrefine.data") / "demo" / DEMO_FILES[kind]))
