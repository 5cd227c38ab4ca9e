"""Helpers for the reliability tests: a dead process id, byte-exact dumps of a store, CLI runs."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

from sqlalchemy import MetaData, select
from sqlalchemy.engine import Engine


REPO = Path(__file__).resolve().parents[2]


def dead_pid() -> int:
    """The id of a process that has exited (and been reaped) on this host."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def dump_tables(engine: Engine) -> dict[str, list[str]]:
    """Every row of every table (alembic_version included), as sorted canonical JSON lines."""
    meta = MetaData()
    meta.reflect(engine)
    out = {}
    with engine.connect() as conn:
        for name, table in sorted(meta.tables.items()):
            rows = conn.execute(select(table)).mappings().all()
            out[name] = sorted(json.dumps(dict(r), sort_keys=True, default=repr) for r in rows)
    return out


def dump_files(root: Path) -> dict[str, str]:
    """Every file under an artifact root (objects and staging), by relative path: its sha256."""
    files = {}
    for path in sorted(Path(root).rglob("*")):
        if path.is_file():
            files[path.relative_to(root).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
        elif path.is_dir() and not any(path.iterdir()):
            files[path.relative_to(root).as_posix() + "/"] = "empty dir"
    return files


def store_state(engine: Engine, artifact_root: Path) -> dict:
    """All rows and all artifact files with their digests: equal states are byte-for-byte equal."""
    return {"tables": dump_tables(engine), "files": dump_files(artifact_root)}
