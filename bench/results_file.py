"""bench/RESULTS.md: each benchmark owns sections between its own marker lines and rewrites only those."""

from __future__ import annotations

from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}: begin -->", f"<!-- {name}: end -->"


def read_section(name: str, path: Path = RESULTS) -> str | None:
    """The text of section `name`, or None when the file has none."""
    begin, end = markers(name)
    text = path.read_text() if path.exists() else ""
    if begin not in text or end not in text:
        return None
    return text.split(begin, 1)[1].split(end, 1)[0]


def write_section(name: str, lines: list[str], path: Path = RESULTS) -> None:
    """Replace section `name` with `lines` (appended when new); the rest of the file stays as it is."""
    begin, end = markers(name)
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    block = "\n".join([begin, *lines, end])
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)
