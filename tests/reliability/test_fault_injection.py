"""SIGKILL of the flow process at every fault point of every stage of a 2-iteration tiny run: at
its start, before it stores its outputs, between storing them and registering them, and after.

One chain: `selfrefine run` dies at the first planned point, each `selfrefine resume` dies at the
next one, and a last resume completes the run. Then `doctor` finds exactly what the kills left
(a staging directory per mid-stage kill, and the report stage's killed rows, which run outside
any iteration and so are never taken over) and `--fix` clears it; no stage key has two
completed rows; every digest verifies; the attempts show that nothing but the killed work was
redone; and the lineage (stage keys, input and output digests per iteration, stage and role,
and the report's) equals that of an uninterrupted run in another store.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import uuid
from collections import Counter

import pytest
from sqlalchemy import func, select

from selfrefine.runtime.registry import stage_names
from selfrefine.storage import repository as repo
from selfrefine.storage.artifacts import ArtifactStore
from selfrefine.storage.doctor import check_unknown_objects
from selfrefine.storage.engine import Store
from selfrefine.storage.schema import Artifact, Iteration, Run, RunStatus, StageRun, StageStatus
from selfrefine.tasks.report import STAGE as REPORT_STAGE
from tests.flows.conftest import REPO, cli_env, prefect_api, run_ids, selfrefine  # noqa: F401 - fixtures

REPORT = REPORT_STAGE.name
# Every stage of the tiny preset's run (it evaluates the policy), in runtime/registry.py's order.
STAGES = tuple(name for name in stage_names() if name != REPORT)
# Stages whose work the second iteration reuses without a row of its own: the ingested data, the
# base policy's answers and the evaluator's own measurement. They are killed in iteration 1.
ONCE_PER_RUN = ("ingest_data", "base_responses", "evaluate_evaluator")
POINTS = ("start", "before_store", "before_register", "after_register")
# Points inside the stage's work: the stage reruns (one more attempt) when the run resumes. A kill
# before registering leaves stored objects no row refers to; the rerun registers the same bytes.
IN_FLIGHT = ("start", "before_store", "before_register")
# The report stage runs once, after the last iteration, outside any iteration (index None).
AFTER_ITERATIONS = 3


def kill_plan() -> list[tuple[int, str, str]]:
    """(iteration, stage, point) for every stage and point, in the order a run reaches them.

    Each stage is killed at every point; which iteration takes which point alternates with
    the stage's position, so both iterations see every point. Iteration 2 reuses iteration 1's
    work of the ONCE_PER_RUN stages without running them, so those are killed in iteration 1 only;
    the report stage comes after both iterations.
    """
    plan = []
    for k, stage in enumerate(STAGES):
        for j, point in enumerate(POINTS):
            iteration = 1 if stage in ONCE_PER_RUN else 1 + (k + j) % 2
            plan.append((iteration, k, j))
    plan += [(AFTER_ITERATIONS, len(STAGES), j) for j in range(len(POINTS))]
    return [(i, (STAGES + (REPORT,))[k], POINTS[j]) for i, k, j in sorted(plan)]


def fault_of(iteration: int, stage: str, point: str) -> str:
    target = stage if stage == REPORT else f"{stage}@{iteration}"
    return f"{target}:{point}:kill"


def test_the_plan_kills_every_stage_at_every_point_in_both_iterations():
    plan = kill_plan()
    n = (len(STAGES) + 1) * len(POINTS)
    assert len(plan) == n and len(set(plan)) == n
    assert {(stage, point) for _, stage, point in plan} == {
        (s, p) for s in STAGES + (REPORT,) for p in POINTS}
    assert {i for i, stage, _ in plan if stage not in (*ONCE_PER_RUN, REPORT)} == {1, 2}
    assert plan[-len(POINTS):] == [(AFTER_ITERATIONS, REPORT, p) for p in POINTS]


def _rows(store: Store, run_id: uuid.UUID) -> dict[tuple[int, str], StageRun]:
    with store.session() as s:
        rows = s.execute(select(Iteration.index, StageRun).join(Iteration, StageRun.iteration_id == Iteration.id)
                         .where(Iteration.run_id == run_id)).all()
    return {(index, row.stage): row for index, row in rows}


def _report_rows(store: Store) -> list[StageRun]:
    with store.session() as s:
        return list(s.scalars(select(StageRun).where(StageRun.stage == REPORT).order_by(StageRun.created)))


def _positions(s, rows) -> dict:
    return {key: {"stage_key": row.stage_key,
                  "inputs": {r: a.sha256 for r, a in repo.stage_inputs(s, row).items()},
                  "outputs": {r: a.sha256 for r, a in repo.stage_outputs(s, row).items()}}
            for key, row in rows}


def lineage_by_position(store: Store) -> dict:
    """Per (iteration, stage) of the store's one run, and for its completed report: the stage key
    and the digests of the stage's inputs and outputs by role."""
    with store.session() as s:
        (run,) = repo.list_runs(s)
        rows = s.execute(select(Iteration.index, StageRun).join(Iteration, StageRun.iteration_id == Iteration.id)
                         .where(Iteration.run_id == run.id)).all()
        (report,) = s.scalars(select(StageRun).where(StageRun.stage == REPORT,
                                                    StageRun.status == StageStatus.completed)).all()
        return _positions(s, [((index, row.stage), row) for index, row in rows]
                          + [((AFTER_ITERATIONS, REPORT), report)])


def _where_it_died(store: Store, run_id: uuid.UUID, iteration: int, stage: str) -> StageStatus | None:
    if stage == REPORT:
        rows = _report_rows(store)
        return rows[-1].status if rows else None
    row = _rows(store, run_id).get((iteration, stage))
    return row.status if row else None


@pytest.mark.slow
def test_sigkill_at_every_stage_and_point_then_resume_gives_the_uninterrupted_lineage(cli_env, tmp_path):
    # The uninterrupted run, in its own store, alongside the chain (the two share the CPU).
    reference_home = tmp_path / "reference-home"
    reference_env = {**cli_env, "SELFREFINE_HOME": str(reference_home)}
    reference = subprocess.Popen([sys.executable, "-m", "selfrefine", "run", "--preset", "tiny", "-n", "2"],
                                 cwd=REPO, env=reference_env, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE, text=True)
    plan = kill_plan()
    try:
        store = Store()
        run_id = None
        left_unregistered = 0
        for n, (iteration, stage, point) in enumerate(plan):
            fault = fault_of(iteration, stage, point)
            args = ("run", "--preset", "tiny", "-n", "2") if run_id is None else ("resume", str(run_id))
            proc = selfrefine(cli_env, *args, fault=fault, check=False)
            assert proc.returncode == -signal.SIGKILL, f"kill {n} ({fault}) was not reached:\n{proc.stderr[-3000:]}"
            if run_id is None:
                (only,) = run_ids(cli_env)
                run_id = uuid.UUID(only)
            # It died where planned: inside the stage the row is left running, after it completed.
            expected = StageStatus.completed if point == "after_register" else StageStatus.running
            assert _where_it_died(store, run_id, iteration, stage) == expected, fault
            # Only a kill between storing and registering leaves objects that no artifact names
            # (each resume's rerun of the stage registers the earlier ones' identical bytes). It
            # leaves none when every output's bytes are already registered (content addressing:
            # e.g. a stage whose output equals an earlier iteration's).
            unknown = check_unknown_objects(store, ArtifactStore())
            if point == "before_register":
                left_unregistered += bool(unknown)
            else:
                assert not unknown, (fault, unknown)
        assert left_unregistered, "no kill between storing and registering left an unregistered object"
        selfrefine(cli_env, "resume", str(run_id))
        assert reference.wait(timeout=1800) == 0, reference.stderr.read()[-3000:]
    finally:
        if reference.poll() is None:
            reference.kill()
            reference.wait()

    with store.session() as s:
        assert s.get_one(Run, run_id).status == RunStatus.completed
        assert [i.status for i in repo.iterations_of(s, run_id)] == [RunStatus.completed] * 2
        twice = s.execute(select(StageRun.stage_key).where(StageRun.status == StageStatus.completed)
                          .group_by(StageRun.stage_key).having(func.count() > 1)).all()
        assert twice == []
        artifacts = ArtifactStore()
        for art in s.scalars(select(Artifact)):
            artifacts.verify(art.uri, art.sha256)

    # Only the killed work was redone: one more attempt per kill inside a stage, none for the rest.
    rows = _rows(store, run_id)
    redone = Counter((i, stage) for i, stage, point in plan if point in IN_FLIGHT)
    attempts = {key: row.attempt for key, row in rows.items() if row.status == StageStatus.completed}
    assert attempts == {key: 1 + redone[key] for key in attempts}
    assert set(attempts) | {(2, stage) for stage in ONCE_PER_RUN} == {(i, s) for i in (1, 2) for s in STAGES}
    # The report stage has no iteration row to take over: each attempt is a row of its own, and
    # the rows of the two processes killed inside it are left running, for doctor to find.
    report_rows = _report_rows(store)
    killed_in_report = sum(stage == REPORT and point in IN_FLIGHT for _, stage, point in plan)
    assert [r.status for r in report_rows] == [StageStatus.running] * killed_in_report + [StageStatus.completed]

    # Doctor finds exactly what the kills left: a staging directory per kill before storing,
    # and the report's killed rows; --fix clears both, then nothing is wrong.
    report = json.loads(selfrefine(cli_env, "doctor", "--json", check=False).stdout)
    found = Counter(f["check"] for f in report["findings"])
    assert found == {"abandoned_staging": sum(point == "before_store" for _, _, point in plan),
                     "stale_stage_run": killed_in_report}, report
    assert {f["subject"] for f in report["findings"] if f["check"] == "stale_stage_run"} == {
        str(r.id) for r in report_rows[:-1]}
    fixed = selfrefine(cli_env, "doctor", "--fix", check=False)
    assert fixed.returncode == 0, fixed.stdout
    clean = selfrefine(cli_env, "doctor", check=False)
    assert (clean.returncode, clean.stdout.strip()) == (0, "no problems found")
    store.dispose()

    # The same lineage as the uninterrupted run: keys, input and output digests, position by position.
    reference_store = Store(f"sqlite:///{reference_home / 'selfrefine.db'}")
    expected = lineage_by_position(reference_store)
    reference_store.dispose()
    assert len(expected) == 2 * len(STAGES) + 1  # every stage in both iterations (reused or run), the report
    assert lineage_by_position(Store()) == expected
