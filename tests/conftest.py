"""Shared test fixtures: every test gets its own SELFREFINE_HOME; converted models are cached once.

`SELFREFINE_TEST_MODEL_CACHE` (set by the Makefile to `.cache/models`) keeps the converted packaged
model and the tiny test model between runs; without it a per-session temporary directory is used.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest


def pytest_configure(config):
    """The tests never reach a model or data hub. huggingface_hub reads HF_HUB_OFFLINE once, when it is
    first imported, which collecting the test modules may do before any fixture runs: without this, a
    hub id in a test waits for network timeouts (about 45 s) instead of failing at once."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    share_cores_between_workers()


def share_cores_between_workers() -> None:
    """`make test` runs TEST_WORKERS pytest-xdist workers (2 by default). torch's default of one
    thread per core in every worker, and in every `selfrefine` process a test starts (they inherit
    the environment), puts several threads on each core, and the tiny models' many small ops then wait
    on each other's threads. Each worker gets its share of the cores instead (an explicit
    OMP_NUM_THREADS wins)."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if workers < 2:
        return
    threads = max(1, (os.cpu_count() or 1) // workers)
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    if "torch" in sys.modules:  # imported before this hook: it read OMP_NUM_THREADS already
        sys.modules["torch"].set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


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
