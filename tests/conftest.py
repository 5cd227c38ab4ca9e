"""Shared test fixtures: every test gets its own SELFREFINE_HOME; converted models are cached once.

`SELFREFINE_TEST_MODEL_CACHE` (set by the Makefile to `.cache/models`) keeps the converted packaged
model and the tiny test model between runs; without it a per-session temporary directory is used.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def pytest_configure(config):
    """The tests never reach a model or data hub. huggingface_hub reads HF_HUB_OFFLINE once, when it is
    first imported, which collecting the test modules may do before any fixture runs: without this, a
    hub id in a test waits for network timeouts (about 45 s) instead of failing at once."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory) -> Path:
    configured = os.environ.get("SELFREFINE_TEST_MODEL_CACHE")
    path = Path(configured) if configured else tmp_path_factory.mktemp("models")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(autouse=True)
def selfrefine_home(tmp_path, monkeypatch, model_cache) -> Path:
    """Isolate the store and artifacts per test; share the model cache across the session."""
    home = tmp_path / "selfrefine-home"
    home.mkdir()
    monkeypatch.setenv("SELFREFINE_HOME", str(home))
    monkeypatch.setenv("SELFREFINE_MODEL_CACHE", str(model_cache))
    for var in ("SELFREFINE_DB_URL", "SELFREFINE_ARTIFACTS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    return home


SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (tests and benchmarks only; never copied into the repo)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA
