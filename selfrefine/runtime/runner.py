"""The stage runner: the one mechanism every stage goes through.

Given a stage (`runtime.stage.Stage`), its config and its input artifact ids, `run_stage`:

1. resolves and verifies the inputs (before touching any row, so bad input changes nothing);
2. computes the stage key (`runtime.keys.key_for`: stage, code version, output-affecting pinned
   config, input digests, seed);
3. reuses a completed stage run with that key whose outputs still verify (an altered output
   marks that run `invalidated` and the stage recomputes);
4. otherwise claims this iteration's row (`running`, attempt + 1; a `running` row whose process
   is dead or whose heartbeat stopped is stale and is taken over, by the rule in
   storage/liveness.py, with one conditional UPDATE), runs the function in a staging
   directory, stores the outputs by digest and registers them, their lineage edges and metrics
   in one transaction; a failure is recorded with its error and re-raised.

Resume is therefore the same code path as a first run.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
import traceback
import uuid
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel
from sqlalchemy.exc import IntegrityError

from selfrefine.errors import ArtifactIntegrityError, LeaseHeldError, NotFoundError, StoreError
from selfrefine.provenance import config_snapshot, library_versions, redact_text
from selfrefine.runtime.keys import key_for
from selfrefine.runtime.stage import InputArtifact, Stage, StageContext, StageOutcome
from selfrefine.storage import repository as repo
from selfrefine.storage.artifacts import ArtifactStore
from selfrefine.storage.engine import Store, default_store
from selfrefine.storage.liveness import Heartbeat, claim_fields, stage_run_is_stale
from selfrefine.storage.schema import Artifact, StageRun, StageStatus, utcnow

log = logging.getLogger(__name__)


def run_stage(stage: Stage, config: BaseModel, inputs: Mapping[str, uuid.UUID], *,
              iteration_id: uuid.UUID | None = None, seed: int | None = None,
              placement: str = "inline", store: Store | None = None,
              artifacts: ArtifactStore | None = None) -> StageOutcome:
    """Run (or reuse) `stage` with `config` on the artifacts `inputs` (role → id)."""
    store = store or default_store()
    artifacts = artifacts or ArtifactStore()
    resolved = _resolve_inputs(store, artifacts, inputs)
    key, config = key_for(stage, config, {r: a.sha256 for r, a in resolved.items()}, seed)
    name = stage.name

    reused = _try_reuse(store, artifacts, key, name, iteration_id, resolved, config, seed)
    if reused is not None:
        log.info("%s: reused stage run %s (key %s)", name, str(reused.stage_run_id)[:8], key[:12])
        return reused

    row_id, attempt = _claim(store, name, key, iteration_id, config, stage.code_version, seed, placement)
    heartbeat = Heartbeat(store, row_id, attempt)
    heartbeat.start()
    try:
        _fault(name, "start", store, iteration_id)
        with artifacts.staging() as out_dir:
            ctx = StageContext(stage=name, config=config, inputs=resolved, out_dir=out_dir,
                               seed=seed, stage_run_id=row_id)
            started = time.perf_counter()
            result = stage.run(ctx)
            # The stage's own work, apart from the runner's bookkeeping (bench/orchestration.py).
            result.metrics.append(("stage_function_seconds", time.perf_counter() - started, {}))
            _fault(name, "before_store", store, iteration_id)
            stored = {role: (artifacts.put(_inside(out_dir, out.path, name, role)), out)
                      for role, out in result.outputs.items()}
        _fault(name, "before_register", store, iteration_id)
        outcome = _register(store, row_id, key, name, resolved, stored, result.metrics, attempt)
    except BaseException as exc:
        heartbeat.stop()
        _record_failure(store, row_id, exc, attempt)
        raise
    heartbeat.stop()
    _fault(name, "after_register", store, iteration_id)
    log.info("%s: completed stage run %s (key %s)", name, str(row_id)[:8], key[:12])
    return outcome


# -- steps ---------------------------------------------------------------------------------------


def _resolve_inputs(store: Store, artifacts: ArtifactStore,
                    inputs: Mapping[str, uuid.UUID]) -> dict[str, InputArtifact]:
    with store.session() as s:
        rows: dict[str, Artifact] = {}
        for role, art_id in inputs.items():
            art = s.get(Artifact, art_id)
            if art is None:
                raise NotFoundError(f"input {role!r}: no artifact with id {art_id}")
            rows[role] = art
    resolved = {}
    for role, art in sorted(rows.items()):
        artifacts.verify(art.uri, art.sha256)
        resolved[role] = InputArtifact(id=art.id, kind=art.kind, sha256=art.sha256,
                                       path=artifacts.local_path(art.uri), meta=dict(art.meta))
    return resolved


def _try_reuse(store, artifacts, key, stage, iteration_id, resolved, config, seed) -> StageOutcome | None:
    with store.session() as s:
        done = repo.completed_stage_run(s, key)
        if done is None:
            return None
        outputs = repo.stage_outputs(s, done)
        checks = [(role, a.id, a.uri, a.sha256) for role, a in outputs.items()]
        done_id, done_iteration, done_version = done.id, done.iteration_id, done.code_version
    try:
        for _, _, uri, sha in checks:
            artifacts.verify(uri, sha)
    except ArtifactIntegrityError as exc:
        log.warning("%s: %s; recomputing", stage, exc)
        with store.session() as s:
            row = s.get_one(StageRun, done_id)
            row.status, row.error = StageStatus.invalidated, f"output digest mismatch: {exc}"
        return None
    output_ids = {role: art_id for role, art_id, _, _ in checks}
    if iteration_id is None or done_iteration == iteration_id:
        return StageOutcome(done_id, key, "reused", output_ids)
    with store.session() as s:
        row = repo.stage_run_for(s, iteration_id, stage)
        if row is not None and row.status == StageStatus.reused and row.reused_from_id == done_id \
                and row.stage_key == key:
            return StageOutcome(row.id, key, "reused", output_ids)  # already recorded as such
        if row is None:
            row = StageRun(iteration_id=iteration_id, stage=stage, attempt=0)
            s.add(row)
        elif row.status in _MADE_OUTPUTS:
            row = _supersede(s, row)
        row.status, row.reused_from_id, row.stage_key = StageStatus.reused, done_id, key
        _stamp(row, config, done_version, seed)
        row.started_at = row.ended_at = utcnow()
        row.error = None
        s.flush()
        repo.replace_input_edges(s, row.id, {r: a.id for r, a in resolved.items()})
        return StageOutcome(row.id, key, "reused", output_ids)


def _claim(store, stage, key, iteration_id, config, code_version, seed,
           placement) -> tuple[uuid.UUID, int]:
    """Make this iteration's row `running` for this process and return the claim (row id, attempt);
    refuse if a live process has it. An existing row is taken with one conditional UPDATE on the
    row as read, so of two processes taking over the same stale row exactly one wins; a new row is
    an INSERT, which the (iteration, stage) unique constraint lets only one process make."""
    for _ in range(5):
        try:
            with store.session() as s:
                row = repo.stage_run_for(s, iteration_id, stage)
                if row is not None and row.status == StageStatus.running:
                    if not stage_run_is_stale(row):
                        raise LeaseHeldError(
                            f"stage {stage} of this iteration is running in process {row.pid} on "
                            f"{row.host} (heartbeat {repo.ago(row.heartbeat_at)} UTC); wait for it or stop it")
                    log.warning("%s: taking over stage run %s, left running by process %s on %s "
                                "(heartbeat %s UTC)", stage, str(row.id)[:8], row.pid, row.host,
                                repo.ago(row.heartbeat_at))
                now = utcnow()
                claim = {"stage_key": key, "status": StageStatus.running, "reused_from_id": None,
                         "error": None, "ended_at": None, "placement": placement,
                         "started_at": now, "heartbeat_at": now}
                if row is None or row.status in _MADE_OUTPUTS:
                    if row is None:
                        row = StageRun(iteration_id=iteration_id, stage=stage, attempt=0)
                        s.add(row)
                    else:
                        row = _supersede(s, row)
                    for name, value in claim.items():
                        setattr(row, name, value)
                    row.attempt += 1
                elif repo.take_over_stage_run(s, row, claim):
                    s.refresh(row)
                else:
                    continue  # another process claimed or beat the row since it was read: look again
                _stamp(row, config, code_version, seed)
                s.flush()
                return row.id, row.attempt
        except IntegrityError:  # another process created the same (iteration, stage) row first
            continue
    raise StoreError(f"could not claim stage {stage}: concurrent writers kept conflicting")


# A row in these states made (and is the record of) outputs under its own key.
_MADE_OUTPUTS = (StageStatus.completed, StageStatus.invalidated)


def _supersede(s, row: StageRun) -> StageRun:
    """The iteration's row made outputs under another key (a config change, or outputs found
    altered): keep it, detached from the iteration, as the record of how those outputs were made
    (still reusable by its key), and give the iteration a new row. Updating it in place would
    leave its old `makes` edges beside the new ones, so its outputs by role would be ambiguous."""
    iteration_id, stage, attempt = row.iteration_id, row.stage, row.attempt
    row.iteration_id = None
    s.flush()  # frees the (iteration, stage) slot before the new row takes it
    new = StageRun(iteration_id=iteration_id, stage=stage, attempt=attempt)
    s.add(new)
    return new


def _register(store, row_id, key, stage, resolved, stored, metrics, attempt) -> StageOutcome:
    try:
        with store.session() as s:
            # First, and conditional on the claim: a row taken over as stale is not ours to complete.
            if not repo.touch_heartbeat(s, row_id, attempt):
                raise LeaseHeldError(f"stage {stage}: stage run {row_id} was taken over by another "
                                     "process (its heartbeat was stale); outputs not registered")
            row = s.get_one(StageRun, row_id)
            repo.replace_input_edges(s, row.id, {r: a.id for r, a in resolved.items()})
            ids = {}
            for role, (obj, out) in sorted(stored.items()):
                art = repo.register_artifact(s, obj, kind=out.kind, name=role, stage_run_id=row.id,
                                             meta=out.meta)
                ids[role] = art.id
            repo.add_metrics(s, row.id, metrics)
            row.status, row.ended_at = StageStatus.completed, utcnow()
            s.flush()
        return StageOutcome(row_id, key, "ran", ids)
    except IntegrityError:
        # Another process completed the same key while we ran: keep its outputs, not a duplicate.
        with store.session() as s:
            winner = repo.completed_stage_run(s, key)
            if winner is None:
                raise
            row = s.get_one(StageRun, row_id)
            row.status, row.reused_from_id, row.ended_at = StageStatus.reused, winner.id, utcnow()
            repo.replace_input_edges(s, row.id, {r: a.id for r, a in resolved.items()})
            outputs = {role: a.id for role, a in repo.stage_outputs(s, winner).items()}
        return StageOutcome(row_id, key, "reused", outputs)


def _record_failure(store: Store, row_id: uuid.UUID, exc: BaseException, attempt: int) -> None:
    text = redact_text("".join(traceback.format_exception(exc))[-8000:])
    try:
        with store.session() as s:
            if not repo.fail_stage_run(s, row_id, attempt, text):
                log.warning("stage run %s is no longer this process's claim; its failure is not "
                            "recorded on it", row_id)
    except Exception:  # the store itself may be what failed; the original error matters more
        log.exception("could not record the failure of stage run %s", row_id)


def _stamp(row: StageRun, config: BaseModel, code_version: str, seed: int | None) -> None:
    row.config = config_snapshot(config)  # whole but for secret fields: resume reads it
    row.code_version = code_version
    row.versions = library_versions()
    row.seed = seed
    for name, value in claim_fields().items():  # host, pid and what tells the process apart
        setattr(row, name, value)
    flow_id, task_id = prefect_run_ids()
    row.prefect_flow_run_id, row.prefect_task_run_id = flow_id, task_id


def _inside(out_dir: Path, path: Path, stage: str, role: str) -> Path:
    full = (out_dir / path).resolve()
    if not full.is_relative_to(out_dir.resolve()) or not full.exists():
        raise StoreError(f"stage {stage} output {role!r} ({path}) is not a file or directory "
                         f"inside its output directory")
    return full


def prefect_run_ids() -> tuple[str | None, str | None]:
    """The current Prefect flow and task run ids, if running under Prefect."""
    if "prefect" not in sys.modules:
        return None, None
    from prefect.context import FlowRunContext, TaskRunContext

    flow_ctx, task_ctx = FlowRunContext.get(), TaskRunContext.get()
    flow_id = str(flow_ctx.flow_run.id) if flow_ctx and flow_ctx.flow_run else None
    task_id = str(task_ctx.task_run.id) if task_ctx else None
    if flow_id is None and task_ctx is not None and task_ctx.task_run.flow_run_id:
        flow_id = str(task_ctx.task_run.flow_run_id)
    return flow_id, task_id


def _fault(stage: str, point: str, store: Store | None = None,
           iteration_id: uuid.UUID | None = None) -> None:
    """Deterministic fault injection for recovery tests.

    SELFREFINE_FAULT="stage[@iteration]:point[:action]" with point one of start, before_store,
    before_register, after_register and action `raise` (default) or `kill` (SIGKILL of this
    process). `@iteration` restricts it to that iteration index of the run.
    """
    spec = os.environ.get("SELFREFINE_FAULT")
    if not spec:
        return
    target, want_point, action = (spec.split(":") + ["raise"])[:3]
    want_stage, _, want_iteration = target.partition("@")
    if want_stage != stage or want_point != point:
        return
    if want_iteration:
        if store is None or iteration_id is None:
            return
        from selfrefine.storage.schema import Iteration

        with store.session() as s:
            if s.get_one(Iteration, iteration_id).index != int(want_iteration):
                return
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if action.startswith("sleep="):
        time.sleep(float(action.removeprefix("sleep=")))
        return
    raise RuntimeError(f"injected fault at {stage}:{point}")
