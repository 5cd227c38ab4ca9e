"""Concurrency on one store, SQLite and PostgreSQL: two runs at once both complete, their stages
ran at the same time (their recorded intervals overlap) and their lineage does not mix; two
resumes of one run started at once: exactly one proceeds."""

from __future__ import annotations

import re
import subprocess
import sys
import uuid

import pytest
from sqlalchemy import select

from selfrefine.runtime.registry import stage_names
from selfrefine.storage import repository as repo
from selfrefine.storage.engine import Store
from selfrefine.storage.schema import Artifact, Iteration, Run, RunStatus, StageRun, StageStatus
from tests.flows.conftest import REPO, cli_env, prefect_api, run_ids, selfrefine  # noqa: F401 - fixtures
from tests.storage.conftest import pg_skip_reason, pg_url  # noqa: F401 - fixtures

LEASE_MESSAGE = "is being driven by"


# The PostgreSQL variant is `slow` to keep `make test` within its budget; the store's own
# concurrency tests and the redaction run cover PostgreSQL in the default suite.
@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=[pytest.mark.postgres, pytest.mark.slow])])
def shared(request, cli_env, selfrefine_home) -> tuple[dict, Store]:
    """CLI environment and a handle on one store that several processes share."""
    if request.param == "sqlite":
        url = f"sqlite:///{selfrefine_home / 'shared.db'}"
    else:
        url = request.getfixturevalue("pg_url")
    store = Store(url, migrate=True)
    yield {**cli_env, "SELFREFINE_DB_URL": url}, store
    store.dispose()


def start(env: dict, *args: str, fault: str | None = None) -> subprocess.Popen:
    run_env = {**env, **({"SELFREFINE_FAULT": fault} if fault else {})}
    return subprocess.Popen([sys.executable, "-m", "selfrefine", *args], cwd=REPO, env=run_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, timeout: float = 1800) -> tuple[int, str]:
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err


def rows_of_run(s, run_id: uuid.UUID) -> list[StageRun]:
    return list(s.scalars(select(StageRun).join(Iteration, StageRun.iteration_id == Iteration.id)
                          .where(Iteration.run_id == run_id)))


def overlapping(rows_a: list[StageRun], rows_b: list[StageRun]) -> list[tuple[str, str]]:
    """(stage of a, stage of b) for every two computed stage runs, one of each list, that were
    running at the same moment by their recorded start and end times."""
    def computed(rows):
        return [r for r in rows if r.status == StageStatus.completed and r.started_at and r.ended_at]

    return [(a.stage, b.stage) for a in computed(rows_a) for b in computed(rows_b)
            if a.started_at < b.ended_at and b.started_at < a.ended_at]


def ancestry(s, rows: list[StageRun]) -> set[uuid.UUID]:
    """Every stage run that made an input of `rows`, or an input of those, and so on."""
    seen, todo = set(), list(rows)
    while todo:
        row = repo.producing_stage_run(s, todo.pop())
        for art in repo.stage_inputs(s, row).values():
            maker = s.get_one(StageRun, art.stage_run_id)
            if maker.id not in seen:
                seen.add(maker.id)
                todo.append(maker)
    return seen


def test_two_runs_at_once_both_complete_and_their_lineage_does_not_mix(shared):
    env, store = shared
    first = start(env, "run", "--preset", "tiny", "-n", "1", "--set", "seed=1")
    second = start(env, "run", "--preset", "tiny", "-n", "1", "--set", "seed=2")
    for proc in (first, second):
        code, err = finish(proc)
        assert code == 0, err[-3000:]
        # Without -v and off a terminal, the stage in flight and the long steps' progress are lines.
        assert "selfrefine.progress: stage train_judge: started" in err
        assert re.search(r"selfrefine\.progress: generation: (\d+)/\1 prompts \(100%\), [\d.]+ prompts/s, done", err)
    with store.session() as s:
        runs = repo.list_runs(s)
        assert len(runs) == 2 and {r.status for r in runs} == {RunStatus.completed}
        rows = {r.id: rows_of_run(s, r.id) for r in runs}
        for run_id, own in rows.items():
            # Every stage but the report, which runs outside the iterations.
            assert sorted(r.stage for r in own) == sorted(n for n in stage_names() if n != "report")
            assert all(r.status in (StageStatus.completed, StageStatus.reused) for r in own)
        (a, rows_a), (b, rows_b) = rows.items()
        # They ran at once, not one after the other: a stage of each was in flight at the same time.
        both = overlapping(rows_a, rows_b)
        assert both, "the two runs' stages never overlapped in time: " + repr(
            {run_id: [(r.stage, r.started_at, r.ended_at) for r in own] for run_id, own in rows.items()})
        keys_a, keys_b = ({r.stage: r.stage_key for r in rs} for rs in (rows_a, rows_b))
        # Same data, different seeds: only the stages whose result does not depend on the run's seed
        # share a key: the data ingest (no seed), the base policy's greedy answers and the evaluator's
        # check (one fixed seed in every run).
        shared_keys = {"ingest_data", "base_responses", "evaluate_evaluator"}
        assert {st for st in keys_a if keys_a[st] == keys_b[st]} == shared_keys
        for own, other in ((rows_a, rows_b), (rows_b, rows_a)):
            mine, theirs = {r.id for r in own}, {r.id for r in other}
            borrowed = ancestry(s, own) - mine
            # The only things a run takes from the other are those seed-independent results.
            assert all(m in theirs and s.get_one(StageRun, m).stage in shared_keys for m in borrowed)
            # It trained its own judge and policy.
            models = s.scalars(select(Artifact).where(Artifact.kind == "model",
                                                      Artifact.stage_run_id.in_(mine))).all()
            assert sorted(m.name for m in models) == ["judge", "policy"]
        # The data was ingested once: one run computed it, the other reused that stage run.
        ingests = [next(r for r in rs if r.stage == "ingest_data") for rs in (rows_a, rows_b)]
        assert sorted(r.status for r in ingests) == [StageStatus.completed, StageStatus.reused]
        (reused,) = [r for r in ingests if r.status == StageStatus.reused]
        assert reused.reused_from_id == next(r.id for r in ingests if r.status == StageStatus.completed)


def test_two_resumes_of_one_run_at_once_exactly_one_proceeds(shared):
    env, store = shared
    failed = selfrefine(env, "run", "--preset", "tiny", "-n", "1", fault="ingest_data@1:start", check=False)
    assert failed.returncode == 2 and "injected fault" in failed.stderr
    with store.session() as s:
        (run,) = repo.list_runs(s)
    # Both resumes pause 8 s at the start of the first stage they run, while holding the lease.
    pause = "ingest_data@1:start:sleep=8"
    resumes = [start(env, "resume", str(run.id), fault=pause) for _ in range(2)]
    results = [finish(proc) for proc in resumes]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], [err[-2000:] for _, err in results]
    (refused,) = [err for code, err in results if code == 2]
    assert refused.count("\n") == 1 and refused.startswith("selfrefine: ") and LEASE_MESSAGE in refused
    with store.session() as s:
        row = s.get_one(Run, run.id)
        assert row.status == RunStatus.completed and row.lease_owner is None
        ingest = next(r for r in rows_of_run(s, run.id) if r.stage == "ingest_data")
        # The failed attempt and the one resume that proceeded; the refused one ran nothing.
        assert (ingest.status, ingest.attempt) == (StageStatus.completed, 2)
