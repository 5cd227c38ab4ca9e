"""Fixture files for the data tests, written into each test's tmp_path."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any, Callable

import pytest

Line = str | bytes | dict | list


def _encode(line: Line) -> bytes:
    if isinstance(line, bytes):
        return line
    if isinstance(line, str):
        return line.encode("utf-8")
    return json.dumps(line, ensure_ascii=False).encode("utf-8")


@pytest.fixture
def write_lines(tmp_path: Path) -> Callable[..., Path]:
    """`write_lines(name, lines, final_newline=True)`: dicts/lists become JSON, str/bytes are written
    as given; a name ending in .gz is gzip-compressed."""

    def write(name: str, lines: list[Line], *, final_newline: bool = True) -> Path:
        data = b"\n".join(_encode(line) for line in lines) + (b"\n" if final_newline else b"")
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
        return path

    return write


@pytest.fixture
def write_parquet(tmp_path: Path) -> Callable[[str, list[dict[str, Any]]], Path]:
    def write(name: str, rows: list[dict[str, Any]]) -> Path:
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = tmp_path / name
        pq.write_table(pa.Table.from_pylist(rows), path)
        return path

    return write

