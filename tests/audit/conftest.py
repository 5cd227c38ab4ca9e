"""Two finished tiny runs, made once per test session (once across pytest-xdist workers) against a
throwaway Prefect server:

- `base`: 2 iterations of the tiny preset;
- `variant`: 1 iteration of the tiny preset with the knob policy_method=rejection_sampling, so
  everything up to its policy is reused from `base` and its policy and plots are recomputed.

The Prefect artifacts of both are read while the server is up, for the tests to check.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class FinishedRuns:
    home: Path
    base: str
    variant: str
    # Prefect artifacts by key: (flow run id, markdown/table data as text).
    prefect_artifacts: dict[str, tuple[str | None, str]]


def _prefect_artifacts(prefix: str) -> dict[str, tuple[str | None, str]]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(like_=prefix)))
    return {a.key: (str(a.flow_run_id) if a.flow_run_id else None, str(a.data)) for a in found}


@pytest.fixture(scope="session")
def finished_runs(tmp_path_factory, model_cache, worker_id) -> FinishedRuns:
    """The runs, made once per test session: under pytest-xdist the first worker that needs them makes
    them, holding a file lock, and records them; the others wait for the record and read the same
    store (the audit tests only read it)."""
    from filelock import FileLock

    shared = tmp_path_factory.getbasetemp()
    if worker_id != "master":
        shared = shared.parent  # the directory every worker's base directory is made in
    record = shared / "audit-runs.json"
    with FileLock(str(record) + ".lock"):
        if record.is_file():
            kept = json.loads(record.read_text())
            return FinishedRuns(home=Path(kept["home"]), base=kept["base"], variant=kept["variant"],
                                prefect_artifacts={k: tuple(v) for k, v in kept["prefect_artifacts"].items()})
        runs = _make_runs(shared / "audit-home", model_cache)
        record.write_text(json.dumps({"home": str(runs.home), "base": runs.base, "variant": runs.variant,
                                      "prefect_artifacts": runs.prefect_artifacts}))
        return runs


def _make_runs(home: Path, model_cache: Path) -> FinishedRuns:
    from prefect.testing.utilities import prefect_test_harness

    from selfrefine.flows.knobs import RunKnobs
    from selfrefine.flows.self_refine import self_refine

    home.mkdir(parents=True)
    env = {"SELFREFINE_HOME": str(home), "SELFREFINE_MODEL_CACHE": str(model_cache),
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    saved = {k: os.environ.get(k) for k in [*env, "SELFREFINE_DB_URL", "SELFREFINE_ARTIFACTS"]}
    os.environ.update(env)
    for var in ("SELFREFINE_DB_URL", "SELFREFINE_ARTIFACTS"):
        os.environ.pop(var, None)
    try:
        with prefect_test_harness(server_startup_timeout=120):
            base = self_refine(preset="tiny", n_iterations=2)
            variant = self_refine(preset="tiny", n_iterations=1, knobs=RunKnobs(policy_method="rejection_sampling"))
            artifacts = {**_prefect_artifacts(f"run-{base[:8]}"), **_prefect_artifacts(f"run-{variant[:8]}")}
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return FinishedRuns(home=home, base=base, variant=variant, prefect_artifacts=artifacts)


@pytest.fixture
def runs(finished_runs, selfrefine_home, monkeypatch) -> FinishedRuns:
    """The finished runs, with this test's SELFREFINE_HOME pointing at their store."""
    monkeypatch.setenv("SELFREFINE_HOME", str(finished_runs.home))
    return finished_runs
