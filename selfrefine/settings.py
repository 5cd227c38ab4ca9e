"""Where selfrefine keeps its state, resolved from the environment at call time (never at import)."""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    """`$SELFREFINE_HOME`, default `~/.selfrefine`: the SQLite store, artifacts and model cache live here."""
    return Path(os.environ.get("SELFREFINE_HOME", Path.home() / ".selfrefine")).expanduser()


def db_url() -> str:
    """`$SELFREFINE_DB_URL`, default a SQLite file under `home()`."""
    return os.environ.get("SELFREFINE_DB_URL") or f"sqlite:///{home() / 'selfrefine.db'}"


def artifact_root() -> str:
    """`$SELFREFINE_ARTIFACTS` (a directory or an fsspec URL), default `home()/artifacts`."""
    return os.environ.get("SELFREFINE_ARTIFACTS") or str(home() / "artifacts")


def model_cache_dir() -> Path:
    """`$SELFREFINE_MODEL_CACHE`, default `home()/models`: converted packaged and tiny test models."""
    return Path(os.environ.get("SELFREFINE_MODEL_CACHE") or home() / "models").expanduser()
