"""Typed field access for raw records, raising `RecordError` that names the field.

A `RecordError` knows the field but not the file or line; the reader that saw the record turns it
into a full `DataError` with `.at(path, line)`.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

from selfrefine.errors import DataError

_ROLES = ("user", "assistant", "system")


def data_error(reason: str, *, path: str | None, line: int | None = None,
               field: str | None = None, skippable: bool = False) -> DataError:
    """A `DataError` that also keeps its bare `reason` (for summaries of several errors) and whether
    `on_invalid="skip"` may drop its record (`skippable`)."""
    err = DataError(reason, path=path, line=line, field=field)
    err.reason = reason  # type: ignore[attr-defined]
    err.skippable = skippable  # type: ignore[attr-defined]
    return err


class RecordError(DataError):
    """A problem inside one record; `.at(path, line)` adds where the record came from.

    `skippable` is False for problems that dropping the record would hide (an unknown dimension).
    """

    skippable = True

    def __init__(self, reason: str, *, field: str | None = None, skippable: bool = True):
        self.reason = reason
        self.skippable = skippable
        super().__init__(reason, field=field)

    def at(self, path: str | None, line: int | None) -> DataError:
        """The same problem as a `DataError` naming the file and 1-based line (or row)."""
        return data_error(self.reason, path=path, line=line, field=self.field,
                          skippable=self.skippable)


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def require_mapping(obj: Any) -> Mapping[str, Any]:
    """The record itself must be a JSON object."""
    if not isinstance(obj, Mapping):
        raise RecordError(f"expected a JSON object (JSONL has one object per line), got "
                          f"{_type_name(obj)}")
    return obj


def utf8_text(value: str, field: str) -> str:
    """`value` if it can be written as UTF-8. JSON escapes such as "\\ud800" decode to lone
    surrogates, which no UTF-8 file, hash or database column can hold."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise RecordError(f"text cannot be encoded as UTF-8: a lone surrogate "
                          f"{value[exc.start]!r} at character {exc.start + 1}; fix the \\u escape "
                          "(a surrogate pair needs both halves)", field=field) from None
    return value


def finite_number(value: Any, field: str) -> float:
    """A number field as a float: booleans, NaN, infinities and integers too large for a float
    (JSON `NaN`, `Infinity` and `1e999` all read as non-finite) are refused."""
    if value is None:
        raise RecordError("missing", field=field)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RecordError(f"expected a number, got {_type_name(value)}", field=field)
    try:
        number = float(value)
    except OverflowError:
        raise RecordError("number too large for a float; expected a finite number",
                          field=field) from None
    if not math.isfinite(number):
        raise RecordError(f"expected a finite number, got {value!r}", field=field)
    return number


def get_str(row: Mapping[str, Any], name: str, *, where: str | None = None) -> str:
    """A required string field."""
    if name not in row or row[name] is None:
        raise RecordError("missing", field=where or name)
    value = row[name]
    if not isinstance(value, str):
        raise RecordError(f"expected a string, got {_type_name(value)}", field=where or name)
    return utf8_text(value, where or name)


def get_optional_str(row: Mapping[str, Any], name: str) -> str | None:
    """An optional string field (absent or null gives None)."""
    value = row.get(name)
    if value is not None and not isinstance(value, str):
        raise RecordError(f"expected a string, got {_type_name(value)}", field=name)
    return value if value is None else utf8_text(value, name)


def parse_turns(value: Any, name: str) -> list[dict[str, str]]:
    """A list of `{"role", "content"}` objects; roles are user, assistant or system."""
    if value is None:
        raise RecordError("missing", field=name)
    if not isinstance(value, list):
        raise RecordError(f"expected a list of {{role, content}} turns, got {_type_name(value)}",
                          field=name)
    turns = []
    for i, raw in enumerate(value):
        where = f"{name}[{i}]"
        if not isinstance(raw, Mapping):
            raise RecordError(f"expected a {{role, content}} object, got {_type_name(raw)}",
                              field=where)
        role = get_str(raw, "role", where=f"{where}.role")
        if role not in _ROLES:
            raise RecordError(f"unknown role {role!r}; use one of {', '.join(_ROLES)}",
                              field=f"{where}.role")
        turns.append({"role": role, "content": get_str(raw, "content", where=f"{where}.content")})
    return turns


def is_blank(text: str) -> bool:
    """Empty or whitespace only: counts as an empty response."""
    return not text.strip()
