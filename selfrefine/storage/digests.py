"""Digests of stored objects: the sha256 of a file, or of a directory tree from its entries.

A directory's digest covers each member's relative path and (for files) content digest, in
sorted order, so the same tree gives the same digest on every machine and filesystem.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from selfrefine.errors import StoreError

_CHUNK = 1 << 20


def _file_digest(path: Path) -> tuple[str, int]:
    h, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


@dataclass(frozen=True)
class Entry:
    """One member of a stored object: a file (with its digest and size) or a directory."""

    path: str  # relative POSIX path inside a directory object; "" for a file object
    sha256: str | None = None  # None for a directory
    size: int = 0


def path_entries(path: Path) -> tuple[bool, list[Entry]]:
    """(is_dir, entries) of a file or directory tree, in the order its digest covers them.

    Symlinks are refused: an artifact is its bytes, not a pointer to bytes elsewhere.
    """
    path = Path(path)
    if path.is_symlink():
        raise StoreError(f"{path}: artifacts cannot be symlinks")
    if path.is_file():
        return False, [Entry("", *_file_digest(path))]
    if not path.is_dir():
        raise StoreError(f"{path}: no such file or directory to store")
    entries = []
    for item in sorted(p for p in path.rglob("*")):
        rel = item.relative_to(path).as_posix()
        if item.is_symlink():
            raise StoreError(f"{item}: artifacts cannot contain symlinks")
        entries.append(Entry(rel) if item.is_dir() else Entry(rel, *_file_digest(item)))
    return True, entries


def digest_entries(is_dir: bool, entries: list[Entry]) -> tuple[str, int]:
    """sha256 and size of an object from its entries (a directory: relative paths + file digests)."""
    if not is_dir:
        (entry,) = entries
        return entry.sha256, entry.size
    tree, total = hashlib.sha256(b"selfrefine-dir-v1\n"), 0
    for e in entries:
        if e.sha256 is None:
            tree.update(f"d {e.path}\n".encode())
        else:
            total += e.size
            tree.update(f"f {e.path} {e.sha256}\n".encode())
    return tree.hexdigest(), total


def digest_path(path: Path) -> tuple[str, int]:
    """sha256 and size of a file, or of a directory tree (relative paths + file digests, sorted)."""
    return digest_entries(*path_entries(path))
