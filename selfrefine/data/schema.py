"""The normalised data schema every stage reads and writes.

A conversation is a list of `Turn` dicts (`{"role": "user"|"assistant"|"system", "content": str}`),
the shape chat templates take directly. Items are frozen dataclasses whose `id` is a hash of their
content, so the same data always gets the same ids and artifact digests are deterministic.
`to_json()` / `from_json()` round-trip each item through plain JSON for JSONL artifacts.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal, Mapping, TypedDict

from selfrefine.data.fields import (
    RecordError,
    finite_number,
    get_optional_str,
    get_str,
    parse_turns,
    require_mapping,
)

Role = Literal["user", "assistant", "system"]
ROLES: tuple[str, ...] = ("user", "assistant", "system")


class Turn(TypedDict):
    """One message of a conversation."""

    role: Role
    content: str


def turn(role: Role, content: str) -> Turn:
    """Build a `Turn` (a plain dict, so it can go straight into `apply_chat_template`)."""
    return {"role": role, "content": content}


def content_id(kind: str, payload: Any) -> str:
    """A stable 16-hex-digit id: sha256 of the kind and the canonical JSON of the payload."""
    canonical = json.dumps([kind, payload], ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def _copy_turns(context: Iterable[Mapping[str, str]]) -> list[Turn]:
    # Copy into fresh dicts with exactly two keys, so ids never depend on extra keys or aliasing.
    return [turn(t["role"], t["content"]) for t in context]  # type: ignore[arg-type]


def _check_id(kind: str, given: Any, computed: str) -> None:
    if given is not None and given != computed:
        raise RecordError(
            f"id {given!r} does not match the content (expected {computed!r}); the record was edited "
            "after it was written: drop the 'id' field to have it recomputed", field="id")


@dataclass(frozen=True, slots=True)
class PreferencePair:
    """A conversation `context` and two final assistant responses, `chosen` preferred over `rejected`
    on `dimension` (e.g. "helpful"). `source` names where the pair came from (used for per-source
    metrics); it is not part of the id, so the same pair from two sources has one id. `gap`, when the
    source grades its preferences, says by how much `chosen` is preferred, on the source's scale (≥ 0;
    None for a plain either-or label); a reward recipe may turn it into a Bradley–Terry margin. Like
    `source`, it is not part of the id."""

    context: list[Turn]
    chosen: str
    rejected: str
    dimension: str
    source: str
    gap: float | None = field(default=None, kw_only=True)
    id: str = field(default="", init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "context", _copy_turns(self.context))
        object.__setattr__(self, "id", content_id("pair", self._payload()))

    def _payload(self) -> dict[str, Any]:
        return {"context": self.context, "chosen": self.chosen, "rejected": self.rejected,
                "dimension": self.dimension}

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (one JSONL line of a pairs artifact)."""
        row = {"id": self.id, "context": [dict(t) for t in self.context], "chosen": self.chosen,
               "rejected": self.rejected, "dimension": self.dimension, "source": self.source}
        if self.gap is not None:  # ungraded pairs keep the line they always had
            row["gap"] = self.gap
        return row

    @classmethod
    def from_json(cls, obj: Any) -> PreferencePair:
        """Inverse of `to_json`; raises `DataError` naming the field on a malformed record."""
        row = require_mapping(obj)
        gap = pair_gap(row)
        pair = cls(context=parse_turns(row.get("context"), "context"), chosen=get_str(row, "chosen"),
                   rejected=get_str(row, "rejected"), dimension=get_str(row, "dimension"),
                   source=get_str(row, "source"), gap=gap)
        _check_id("pair", row.get("id"), pair.id)
        return pair


def pair_gap(row: Mapping[str, Any]) -> float | None:
    """A pair record's optional `gap` field: a finite number ≥ 0, or None when absent or null."""
    if row.get("gap") is None:
        return None
    gap = finite_number(row["gap"], "gap")
    if gap < 0:
        raise RecordError(f"{row['gap']!r} is negative; a gap says how much chosen is preferred over rejected "
                          "(swap the two responses for a negative one)", field="gap")
    return gap


@dataclass(frozen=True, slots=True)
class PromptItem:
    """A conversation ending with a user turn, to generate responses for on `dimension`."""

    context: list[Turn]
    dimension: str
    source: str
    id: str = field(default="", init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "context", _copy_turns(self.context))
        object.__setattr__(self, "id", content_id("prompt", {"context": self.context,
                                                            "dimension": self.dimension}))

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (one JSONL line of a prompts artifact)."""
        return {"id": self.id, "context": [dict(t) for t in self.context],
                "dimension": self.dimension, "source": self.source}

    @classmethod
    def from_json(cls, obj: Any) -> PromptItem:
        """Inverse of `to_json`; raises `DataError` naming the field on a malformed record."""
        row = require_mapping(obj)
        item = cls(context=parse_turns(row.get("context"), "context"),
                   dimension=get_str(row, "dimension"), source=get_str(row, "source"))
        _check_id("prompt", row.get("id"), item.id)
        return item


@dataclass(frozen=True, slots=True)
class Candidate:
    """One sampled response of a best-of-n set and its preference against the item's reference:
    1.0 = the reference is better, 2.0 = this output is better (values in between are soft)."""

    output: str
    preference: float

    @property
    def win(self) -> float:
        """The win value against the reference, `preference - 1`, in [0, 1]."""
        return self.preference - 1.0

    def to_json(self) -> dict[str, Any]:
        return {"output": self.output, "preference": self.preference}


@dataclass(frozen=True, slots=True)
class BestOfNItem:
    """A prompt with n candidate responses, each with a preference against `reference`.

    A judge picks one candidate per item; its best-of-n win rate is the mean `win` of its picks.
    """

    context: list[Turn]
    candidates: list[Candidate]
    reference: str | None
    dimension: str = "helpful"
    source: str = "bestofn"
    id: str = field(default="", init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "context", _copy_turns(self.context))
        object.__setattr__(self, "candidates", [Candidate(c.output, float(c.preference))
                                                for c in self.candidates])
        object.__setattr__(self, "id", content_id("bestofn", self._payload()))

    def _payload(self) -> dict[str, Any]:
        return {"context": self.context, "candidates": [c.to_json() for c in self.candidates],
                "reference": self.reference, "dimension": self.dimension}

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (one JSONL line of a best-of-n artifact)."""
        return {"id": self.id, "context": [dict(t) for t in self.context],
                "candidates": [c.to_json() for c in self.candidates], "reference": self.reference,
                "dimension": self.dimension, "source": self.source}

    @classmethod
    def from_json(cls, obj: Any) -> BestOfNItem:
        """Inverse of `to_json`; raises `DataError` naming the field on a malformed record."""
        row = require_mapping(obj)
        item = cls(context=parse_turns(row.get("context"), "context"),
                   candidates=parse_candidates(row.get("candidates")),
                   reference=get_optional_str(row, "reference"),
                   dimension=get_str(row, "dimension"), source=get_str(row, "source"))
        _check_id("bestofn", row.get("id"), item.id)
        return item


def parse_candidates(value: Any) -> list[Candidate]:
    """`[{"output": str, "preference": number in [1, 2]}, ...]` → candidates (extra keys ignored)."""
    if not isinstance(value, list):
        raise RecordError(f"expected a list of candidates, got {type(value).__name__}",
                          field="candidates")
    out = []
    for i, raw in enumerate(value):
        where = f"candidates[{i}]"
        if not isinstance(raw, Mapping):
            raise RecordError(f"expected an object, got {type(raw).__name__}", field=where)
        output = get_str(raw, "output", where=f"{where}.output")
        pref = finite_number(raw.get("preference"), f"{where}.preference")
        if not 1.0 <= pref <= 2.0:
            raise RecordError(f"preference {pref} is outside [1, 2] (1 = reference better, "
                              "2 = this output better)", field=f"{where}.preference")
        out.append(Candidate(output, pref))
    return out


Item = PreferencePair | PromptItem | BestOfNItem


def write_jsonl(path: str | Path, items: Iterable[Item]) -> int:
    """Write items as JSONL (one `to_json()` per line, UTF-8); returns the number written.

    The bytes depend only on the items, so the file's digest is deterministic."""
    count = 0
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        for item in items:
            fh.write(json.dumps(item.to_json(), ensure_ascii=False, sort_keys=True) + "\n")
            count += 1
    return count


__all__ = ["Turn", "Role", "ROLES", "turn", "content_id", "PreferencePair", "PromptItem", "Candidate",
           "BestOfNItem", "parse_candidates", "write_jsonl", "Item"]
