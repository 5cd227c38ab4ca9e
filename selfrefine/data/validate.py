"""Validate data before any stage starts: every problem names the file, 1-based line and field.

`validate_pairs` / `validate_prompts` / `validate_bestofn` read a local file, convert each record to
the normalised schema, check it (non-empty responses, chosen ≠ rejected, known dimension, ...) and
return the items, or raise one `DataError` that reports the first problem and up to `max_errors`
in all. With `on_invalid="skip"`, records with content problems are dropped and counted instead
(for public sets with known defects); this includes well-formed JSON the decoder refuses (nesting
or integer length past its limits) and any error a value causes while normalising a record.
Syntax errors, unknown dimensions and an empty result always raise.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Literal, Mapping, TypeVar

from selfrefine.data.bestofn import bestofn_from_record
from selfrefine.data.fields import RecordError, is_blank
from selfrefine.data.paths import data_path
from selfrefine.data.readers import DEFAULT_MAX_LINE_BYTES, iter_records
from selfrefine.data.records import pair_from_record, prompt_from_record
from selfrefine.data.schema import BestOfNItem, Item, PreferencePair, PromptItem
from selfrefine.errors import DataError, UnknownDimensionError

log = logging.getLogger(__name__)
T = TypeVar("T", PreferencePair, PromptItem, BestOfNItem)
OnInvalid = Literal["error", "skip"]
DEFAULT_MAX_ERRORS = 20


class DataValidationError(DataError):
    """Several problems in one data set; `.errors` holds each as a `DataError`, the message lists them
    and `path` / `line` / `field` are those of the first."""

    def __init__(self, errors: list[DataError], *, truncated: bool):
        self.errors = errors
        first = errors[0]
        more = "".join(f"\n  line {e.line}: {_described(e)}" for e in errors[1:])
        note = f"\n  (stopped reading after {len(errors)} problems)" if truncated else ""
        super().__init__(f"{_described(first)}; {len(errors) - 1} more problem(s):{more}{note}",
                         path=first.path, line=first.line)
        self.field = first.field  # set after: the field is already in the first line of the message


def _described(err: DataError) -> str:
    reason = getattr(err, "reason", None)
    if reason is None:
        return str(err)
    return f"{reason} (field '{err.field}')" if err.field else reason


@dataclass
class LoadResult:
    """Valid items in file order, and the records dropped under `on_invalid="skip"`."""

    items: list[Any]
    skipped: list[DataError] = field(default_factory=list)


# --- checks on one item ---------------------------------------------------------------------------

def _check_context(context: list, name: str) -> None:
    if not any(t["role"] == "user" and not is_blank(t["content"]) for t in context):
        raise RecordError("empty prompt: no user turn with text", field=name)


def check_pair(pair: PreferencePair) -> None:
    """Responses non-empty (whitespace counts as empty) and different; the prompt has text."""
    _check_context(pair.context, "prompt")
    for name in ("chosen", "rejected"):
        if is_blank(getattr(pair, name)):
            raise RecordError("empty response (blank or whitespace only)", field=name)
    if pair.chosen.strip() == pair.rejected.strip():
        raise RecordError("chosen and rejected are the same text; a pair must differ", field="rejected")


def check_prompt(item: PromptItem) -> None:
    """The prompt ends with a user turn that has text."""
    if not item.context or item.context[-1]["role"] != "user":
        raise RecordError("the prompt must end with a user turn", field="prompt")
    if is_blank(item.context[-1]["content"]):
        raise RecordError("empty prompt (blank or whitespace only)", field="prompt")


def check_bestofn(item: BestOfNItem) -> None:
    """A prompt with text, at least two candidates, none of them empty."""
    _check_context(item.context, "instruction")
    if len(item.candidates) < 2:
        raise RecordError(f"{len(item.candidates)} candidate(s); best-of-n needs at least 2",
                          field="candidates")
    for i, cand in enumerate(item.candidates):
        if is_blank(cand.output):
            raise RecordError("empty response (blank or whitespace only)",
                              field=f"candidates[{i}].output")


_CHECKS: dict[type, Callable[[Any], None]] = {
    PreferencePair: check_pair, PromptItem: check_prompt, BestOfNItem: check_bestofn}


class DimensionCheck:
    """Canonicalises dimension names with `selfrefine.models.dimensions`, caching each answer."""

    def __init__(self, extra: Mapping[str, str] | None = None):
        from selfrefine.models.dimensions import get_dimension  # imported late: models may be absent

        self._get, self._extra, self._cache = get_dimension, extra, {}

    def canonical(self, name: str) -> str:
        """The canonical name, or `UnknownDimensionError` listing the known ones."""
        if name not in self._cache:
            self._cache[name] = self._get(name, self._extra).name
        return self._cache[name]

    def apply(self, item: T) -> T:
        """The item with its dimension canonicalised (a `RecordError` on 'dimension' if unknown)."""
        try:
            canonical = self.canonical(item.dimension)
        except UnknownDimensionError as exc:
            # A config problem: dropping the rows would hide it, so it is never skipped.
            raise RecordError(str(exc), field="dimension", skippable=False) from exc
        return item if canonical == item.dimension else dataclasses.replace(item, dimension=canonical)


# --- the collecting loop --------------------------------------------------------------------------

# What converting one record can raise besides `RecordError` when a value slips past the field
# checks (an encoding, arithmetic or type error deep in normalisation): still one problem of that
# record, named by file and line, and skippable like any other.
_UNFORESEEN = (ValueError, TypeError, ArithmeticError, RecursionError)


def _convert_checked(convert: Callable[[Any], T], dims: DimensionCheck, raw: Any) -> T:
    try:
        item = dims.apply(convert(raw))
        _CHECKS[type(item)](item)
    except _UNFORESEEN as exc:
        detail = (str(exc).splitlines() or [""])[0][:200]
        raise RecordError(f"cannot normalise the record ({type(exc).__name__}: {detail})") from exc
    return item


def collect(records: Iterable[tuple[int | None, Any]], convert: Callable[[Any], T], *,
            where: str, on_invalid: OnInvalid = "error", max_errors: int = DEFAULT_MAX_ERRORS,
            limit: int | None = None, extra_dimensions: Mapping[str, str] | None = None,
            skip: int = 0, allow_empty: bool = False) -> LoadResult:
    """Convert and check `(line, raw record)` pairs (a raw record may be a `DataError` from the
    reader). Returns the valid items, or raises the problems found (up to `max_errors`). The first
    `skip` valid items are checked but not returned (e.g. a held-out tail of a file). An empty
    result is an error unless `allow_empty`."""
    if on_invalid not in ("error", "skip"):
        raise ValueError(f"on_invalid must be 'error' or 'skip', got {on_invalid!r}")
    dims = DimensionCheck(extra_dimensions)
    items: list[T] = []
    skipped: list[DataError] = []
    errors: list[DataError] = []
    valid = 0
    for line, raw in records:
        if isinstance(raw, DataError):  # the reader's: skippable only when the JSON was well-formed
            skippable = on_invalid == "skip" and getattr(raw, "skippable", False)
            (skipped if skippable else errors).append(raw)
        else:
            try:
                item = _convert_checked(convert, dims, raw)
            except RecordError as exc:
                err = exc.at(where, line)
                if on_invalid == "skip" and exc.skippable:
                    skipped.append(err)
                else:
                    errors.append(err)
            else:
                valid += 1
                if valid > skip:
                    items.append(item)
        if len(errors) >= max_errors or (limit is not None and len(items) >= limit and not errors):
            break
    if errors:
        raise errors[0] if len(errors) == 1 else DataValidationError(
            errors, truncated=len(errors) >= max_errors)
    if not items and not allow_empty:
        why = f" ({len(skipped)} invalid record(s) skipped, first: {skipped[0]})" if skipped else ""
        raise DataError(f"no items: the data set is empty{why}; give a file with at least one "
                        "valid record", path=where)
    if skipped:
        log.warning("%s: skipped %d invalid record(s); first: %s", where, len(skipped), skipped[0])
    return LoadResult(items=items, skipped=skipped)


def validate_items(items: Iterable[Item], *, where: str = "<items>", **kwargs: Any) -> list[Any]:
    """Check already-built items (e.g. made by a stage); the 'line' is the 1-based position."""
    return collect(enumerate(items, 1), lambda item: item, where=where, **kwargs).items


# --- local files ---------------------------------------------------------------------------------

_CONVERTERS: dict[str, Callable[..., Any]] = {
    "pairs": pair_from_record, "prompts": prompt_from_record, "bestofn": bestofn_from_record}
_ARTIFACT_CLASSES: dict[str, Any] = {
    "pairs": PreferencePair, "prompts": PromptItem, "bestofn": BestOfNItem}


def _read(path: str | os.PathLike[str], convert: Callable[..., T], *, dimension: str | None,
          source: str | None, root: str | os.PathLike[str] | None, max_line_bytes: int,
          **kwargs: Any) -> LoadResult:
    resolved = data_path(path, root)
    label = source or file_stem(resolved)
    records = iter_records(resolved, max_line_bytes=max_line_bytes)
    return collect(records, lambda raw: convert(raw, dimension=dimension, source=label),
                   where=str(path), **kwargs)


def file_stem(path: Path) -> str:
    """The file name without its data suffixes: `hh-dev.v2.jsonl.gz` → `hh-dev.v2`."""
    name = path.name
    for suffix in (".gz", ".jsonl", ".ndjson", ".json", ".parquet"):
        name = name.removesuffix(suffix)
    return name or path.name


def read_local(kind: str, path: str | os.PathLike[str], *, dimension: str | None = None,
               source: str | None = None, root: str | os.PathLike[str] | None = None,
               on_invalid: OnInvalid = "error", max_errors: int = DEFAULT_MAX_ERRORS,
               limit: int | None = None, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
               extra_dimensions: Mapping[str, str] | None = None, skip: int = 0) -> LoadResult:
    """Read a local JSONL / JSONL.gz / Parquet file of "pairs", "prompts" or "bestofn" records.

    `dimension` / `source` fill records that lack them (source defaults to the file's stem);
    `root`, when given, confines `path` to it (as does $SELFREFINE_DATA_ROOT); `skip` leaves out
    the first valid items.
    """
    convert = _CONVERTERS[kind]
    return _read(path, convert, dimension=dimension, source=source, root=root,
                 max_line_bytes=max_line_bytes, on_invalid=on_invalid, max_errors=max_errors,
                 limit=limit, extra_dimensions=extra_dimensions, skip=skip)


def validate_pairs(path: str | os.PathLike[str], **kwargs: Any) -> list[PreferencePair]:
    """Preference pairs from a local file (see `read_local` for the options)."""
    return read_local("pairs", path, **kwargs).items


def validate_prompts(path: str | os.PathLike[str], **kwargs: Any) -> list[PromptItem]:
    """Prompts from a local file (see `read_local` for the options)."""
    return read_local("prompts", path, **kwargs).items


def validate_bestofn(path: str | os.PathLike[str], **kwargs: Any) -> list[BestOfNItem]:
    """Best-of-n items from a local file (see `read_local` for the options)."""
    return read_local("bestofn", path, **kwargs).items


def read_jsonl(path: str | os.PathLike[str], kind: Literal["pairs", "prompts", "bestofn"], *,
               max_line_bytes: int = DEFAULT_MAX_LINE_BYTES, **kwargs: Any) -> list[Any]:
    """Read a JSONL artifact written by `write_jsonl` strictly: every record must be in the
    normalised form and its stored `id` must match its content (an edited file is refused).

    An artifact may hold no items (e.g. the filter kept no pair this iteration): user data is
    refused when empty at ingest, a stage's own output is not."""
    from_json = _ARTIFACT_CLASSES[kind].from_json
    return collect(iter_records(path, max_line_bytes=max_line_bytes), from_json, where=str(path),
                   allow_empty=True, **kwargs).items
