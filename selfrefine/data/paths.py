"""Keep paths taken from configs and data files inside an allowed root.

`SELFREFINE_DATA_ROOT`, when set, is the operator's root for every data path and every local model
directory a config names: set it on workers that run configs typed into the Prefect UI, so that a
config can only read files under it. The data shipped inside the package stays readable.
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
# The demo data shipped in the package: public, read-only, readable whatever the data root.
SHIPPED_DATA = Path(__file__).resolve().parent / "demo"
# Model names that are not paths: the aliases of models/loading.py.
MODEL_ALIASES = ("packaged", "tiny")
_PATH_PREFIXES = ("/", "./", "../", "~", ".\\")


def data_path(path: str | os.PathLike[str], root: str | os.PathLike[str] | None = None) -> Path:
    """Where a configured data path points, confined to its roots (`PathEscapeError` otherwise).

    `root` is the data source's own root. `$SELFREFINE_DATA_ROOT`, when set, confines every data
    path and the source's own root with it (relative ones are taken from it); the shipped demo
    files stay readable. Without either, the path is used as given: a user's own configs may read
    their own files.
    """
    operator_root = os.environ.get(DATA_ROOT_ENV)
    if operator_root:
        if root is None and Path(path).is_absolute() and Path(path).resolve().is_relative_to(SHIPPED_DATA):
            return Path(path).resolve()
        root = operator_root if root is None else confine(root, operator_root)
    return confine(path, root) if root is not None else Path(path)


def confine_model_name(name: str | None, field: str) -> None:
    """Refuse a local model directory outside `$SELFREFINE_DATA_ROOT` (`PathEscapeError`, naming
    the config `field`). Aliases, hub ids and artifact ids are not paths and pass; a name is a path
    when it looks like one (absolute, `./`, `../`, `~`) or exists on disk, as the model loader
    decides, and is checked where the loader would read it (relative to the working directory)."""
    operator_root = os.environ.get(DATA_ROOT_ENV)
    if not operator_root or not name or name.strip() in MODEL_ALIASES:
        return
    name = name.strip()
    path = Path(name).expanduser()
    if not (name.startswith(_PATH_PREFIXES) or path.exists()):
        return
    try:
        confine(path.absolute(), operator_root)
    except PathEscapeError as exc:
        raise PathEscapeError(f"model directory {exc} (field '{field}')") from None
