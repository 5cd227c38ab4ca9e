"""Stream raw records from JSONL, JSONL.gz and Parquet files, one at a time, with 1-based line
(or row) numbers.

Problems with a single line (malformed JSON, JSON the decoder refuses for its recursion or
integer-length limits, invalid UTF-8, a line over the size guard) are yielded as `DataError`s in
place of the record so a validator can report several at once; problems with the file as a whole
(missing, unsupported type, corrupt gzip or Parquet) raise.
"""

from __future__ import annotations

import gzip
import json
import sys
import zlib
from pathlib import Path
from typing import Any, BinaryIO, Iterator

from selfrefine.data.fields import data_error
from selfrefine.errors import DataError

DEFAULT_MAX_LINE_BYTES = 8 * 1024 * 1024
_GZIP_MAGIC = b"\x1f\x8b"
_PARQUET_MAGIC = b"PAR1"
_SUFFIXES = ".jsonl, .jsonl.gz, .json, .json.gz or .parquet"

RawRecord = tuple[int, Any]  # (line, parsed JSON value) or (line, DataError)


def file_format(path: Path) -> str:
    """"jsonl", "jsonl.gz" or "parquet", from the file's first bytes (falling back to the name)."""
    if not path.is_file():
        hint = " (it is a directory)" if path.is_dir() else ""
        raise DataError(f"data file not found{hint}; check the path", path=str(path))
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic.startswith(_GZIP_MAGIC):
        return "jsonl.gz"
    if magic == _PARQUET_MAGIC:
        return "parquet"
    name = path.name.lower()
    if name.endswith((".jsonl", ".json", ".ndjson")):
        return "jsonl"
    if name.endswith((".gz", ".parquet")):  # named so but without the magic bytes
        raise DataError(f"the file is not valid {name.rsplit('.', 1)[1]} (wrong leading bytes "
                        f"{magic!r}); it is corrupt or misnamed", path=str(path))
    raise DataError(f"unsupported data file type; use {_SUFFIXES}", path=str(path))


def iter_records(path: str | Path, *, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
                 ) -> Iterator[RawRecord]:
    """Yield `(line, value)` for each non-blank line (JSONL) or row (Parquet) of `path`."""
    path = Path(path)
    fmt = file_format(path)
    if fmt == "parquet":
        yield from _iter_parquet(path)
        return
    opener = gzip.open if fmt == "jsonl.gz" else open
    with opener(path, "rb") as fh:
        yield from _iter_jsonl(fh, str(path), max_line_bytes)


def _iter_jsonl(fh: BinaryIO, path: str, max_line_bytes: int) -> Iterator[RawRecord]:
    line_no = 0
    while True:
        # readline with a limit never holds more than max_line_bytes + 1 bytes of one line.
        try:
            raw = fh.readline(max_line_bytes + 1)
        except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
            raise DataError(f"corrupt or truncated gzip stream ({exc}); re-create or re-download "
                            "the file", path=path, line=line_no + 1) from exc
        if not raw:
            return
        line_no += 1
        ended = raw.endswith(b"\n")
        if not ended and len(raw) > max_line_bytes:
            while raw and not raw.endswith(b"\n"):  # skip the rest of the oversized line
                raw = fh.readline(1 << 20)
            yield line_no, data_error(
                f"line is longer than max_line_bytes={max_line_bytes}; split the record or raise "
                "the limit (DataSource.max_line_bytes)", path=path, line=line_no)
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield line_no, data_error(f"invalid UTF-8 at byte {exc.start} of the line; re-encode the "
                                     "file as UTF-8", path=path, line=line_no)
            continue
        if line_no == 1:
            text = text.removeprefix("\ufeff")  # tolerate a byte-order mark
        if not text.strip():
            continue
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            if not ended:  # only the last line of a file can lack its newline
                message = (f"truncated last line: malformed JSON at end of file ({exc.msg}); the "
                           "file was probably cut off while being written")
            else:
                message = f"malformed JSON: {exc.msg} at column {exc.colno}"
            yield line_no, data_error(message, path=path, line=line_no)
        except (RecursionError, ValueError) as exc:
            # Well-formed JSON past the decoder's limits: one unusable record, not a corrupt file.
            yield line_no, data_error(_decoder_limit(exc), path=path, line=line_no, skippable=True)
        else:
            yield line_no, value


def _decoder_limit(exc: BaseException) -> str:
    """The reason for valid-looking JSON the decoder refuses: nesting deeper than its recursion
    limit, or an integer literal longer than Python's int-string conversion limit."""
    if isinstance(exc, RecursionError):
        return ("JSON nested too deeply for the decoder (its recursion limit); a record is a flat "
                "object of strings and lists of turns")
    if "integer string conversion" in str(exc):
        return (f"an integer literal has more than {sys.get_int_max_str_digits()} digits; write "
                "it as a string or a float")
    return f"the JSON decoder refused the line ({exc})"


def _iter_parquet(path: Path) -> Iterator[RawRecord]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table_file = pq.ParquetFile(path)
        row = 0
        for batch in table_file.iter_batches(batch_size=1024):
            for record in batch.to_pylist():
                row += 1
                yield row, record
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"cannot read Parquet file ({exc}); re-create it", path=str(path)) from exc
