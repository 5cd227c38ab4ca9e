"""Keep paths taken from configs and data files inside an allowed root.

`SELFREFINE_DATA_ROOT`, when set, is the operator's root for every data path: set it on workers
that run configs typed into the Prefect UI, so that a config can only read data under it.
"""

from __future__ import annotations

import os
from pathlib import Path

from selfrefine.errors import PathEscapeError


def confine(path: str | os.PathLike[str], root: str | os.PathLike[str]) -> Path:
    """Resolve `path` against `root` and return it, or raise `PathEscapeError` if it leaves the root.

    Relative paths are taken from `root`; absolute paths must already lie inside it. Symlinks are
    resolved first, so a link pointing out of the root is refused like `..` is. A `..` that stays
    inside the root is fine.
    """
    root_path = Path(root).expanduser().resolve()
    candidate = Path(path).expanduser()
    if not candidate.is_absolute():
        candidate = root_path / candidate
    resolved = candidate.resolve()
    if not resolved.is_relative_to(root_path):
        raise PathEscapeError(
            f"path {str(path)!r} resolves to {resolved}, outside the allowed root {root_path}; "
            "use a path inside the root (no '..', absolute path or symlink that leads out of it)")
    return resolved


DATA_ROOT_ENV = "SELFREFINE_DATA_ROOT"


def data_path(path: str | os.PathLike[str], root: str | os.PathLike[str] | None = None) -> Path:
    """Where a configured data path points, confined to its roots (`PathEscapeError` otherwise).

    `root` is the data source's own root. `$SELFREFINE_DATA_ROOT`, when set, confines every data
    path and the source's own root with it (relative ones are taken from it). Without either,
    the path is used as given: a user's own configs may read their own files.
    """
    operator_root = os.environ.get(DATA_ROOT_ENV)
    if operator_root:
        root = operator_root if root is None else confine(root, operator_root)
    return confine(path, root) if root is not None else Path(path)
