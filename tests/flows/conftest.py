"""A throwaway Prefect server for the flow tests, shared by the module, and helpers to run the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory):
    """A real Prefect server (prefect_test_harness) for this test session; its API URL."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    with prefect_test_harness(server_startup_timeout=120):
        yield PREFECT_API_URL.value()


@pytest.fixture
def cli_env(prefect_api, selfrefine_home, model_cache):
    """Environment for `selfrefine` subprocesses: this test's store, the shared server."""
    env = {**os.environ, "PREFECT_API_URL": prefect_api, "SELFREFINE_HOME": str(selfrefine_home),
           "SELFREFINE_MODEL_CACHE": str(model_cache), "HF_HUB_OFFLINE": "1",
           "PREFECT_LOGGING_LEVEL": "WARNING"}
    env.pop("SELFREFINE_FAULT", None)
    return env


def selfrefine(env: dict, *args: str, timeout: float = 600, fault: str | None = None,
               check: bool = True) -> subprocess.CompletedProcess:
    """Run the `selfrefine` command in a subprocess (as a user would)."""
    run_env = dict(env)
    if fault:
        run_env["SELFREFINE_FAULT"] = fault
    proc = subprocess.run([sys.executable, "-m", "selfrefine", *args], cwd=REPO, env=run_env,
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"selfrefine {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-4000:]}")
    return proc


def run_ids(env: dict) -> list[str]:
    return [r["id"] for r in json.loads(selfrefine(env, "runs", "--json").stdout)]


def show(env: dict, run_id: str) -> dict:
    return json.loads(selfrefine(env, "show", run_id, "--json").stdout)
