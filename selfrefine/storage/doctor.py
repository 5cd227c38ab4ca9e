"""Health checks of a store, for `selfrefine doctor`: plain functions that return findings.

Faults must cost at most the work in flight, never the record of what happened. These checks
look for what a fault can leave behind, and for damage done from outside:

- `check_artifacts`: every registered artifact's object exists and still has its digest;
- `check_lineage`: every artifact has the stage run that made it, and no stage key has two
  completed stage runs;
- `check_unknown_objects`: object files that no artifact row refers to (a process killed between
  storing and registering, or files copied in by hand);
- `check_abandoned_staging`: staging directories whose process died (no live process holds
  their lock);
- `check_stale_runs`: stage runs, iterations and runs left `running` by a process that is gone
  (dead, or silent past its heartbeat or lease: the rule in `storage/liveness.py`, which the
  runner and the run lease use too).

None of them changes anything. `repair` applies the two repairs that are always safe: it marks
stale rows failed (so `selfrefine show` and the UI tell the truth) and removes abandoned
staging directories. It never deletes an object or a row: a digest mismatch or an unknown object
needs a person to look at it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import and_, func, select, update

from selfrefine.errors import ArtifactIntegrityError
from selfrefine.storage import repository as repo
from selfrefine.storage.artifacts import ArtifactStore
from selfrefine.storage.engine import Store
from selfrefine.storage.liveness import lease_is_live, stage_run_is_stale
from selfrefine.storage.schema import (
    Artifact,
    ArtifactEdge,
    EdgeKind,
    Iteration,
    Run,
    RunStatus,
    StageRun,
    StageStatus,
    utcnow,
)

DIED = "its process is gone (found by selfrefine doctor); continue with `selfrefine resume`"


@dataclass(frozen=True)
class Finding:
    """One problem: the check that found it, the id, key or path it concerns, what is wrong and
    what to do, and whether `repair` can fix it."""

    check: str
    subject: str
    message: str
    fixable: bool = False

    def to_json(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.check}: {self.subject}: {self.message}"


# -- artifacts ---------------------------------------------------------------------------------


def check_artifacts(store: Store, artifacts: ArtifactStore) -> list[Finding]:
    """Each registered artifact's object file exists and still has its registered digest."""
    with store.session() as s:
        rows = s.execute(select(Artifact.id, Artifact.uri, Artifact.sha256).order_by(Artifact.created)).all()
    findings, verified = [], {}
    for art_id, uri, sha in rows:
        if (uri, sha) not in verified:  # identical outputs share one object: digest it once
            verified[(uri, sha)] = _verify(artifacts, uri, sha)
        problem = verified[(uri, sha)]
        if problem:
            findings.append(Finding(problem[0], str(art_id), (
                f"{problem[1]}; the stage that made it recomputes it when next needed, but find "
                "out what altered the store")))
    return findings


def _verify(artifacts: ArtifactStore, uri: str, sha: str) -> tuple[str, str] | None:
    """None if the object is intact, else (check name, message)."""
    try:
        artifacts.verify(uri, sha)
    except ArtifactIntegrityError as exc:
        return ("digest_mismatch" if artifacts.exists(uri) else "missing_file"), str(exc)
    return None


def check_lineage(store: Store) -> list[Finding]:
    """Every artifact was made by a stage run (row and `makes` edge); stage keys complete once."""
    makes = and_(ArtifactEdge.artifact_id == Artifact.id, ArtifactEdge.stage_run_id == Artifact.stage_run_id,
                 ArtifactEdge.kind == EdgeKind.makes)
    with store.session() as s:
        orphans = s.execute(
            select(Artifact.id, Artifact.name, Artifact.stage_run_id, StageRun.id, ArtifactEdge.id)
            .outerjoin(StageRun, StageRun.id == Artifact.stage_run_id)
            .outerjoin(ArtifactEdge, makes)
            .where((StageRun.id.is_(None)) | (ArtifactEdge.id.is_(None)))
            .order_by(Artifact.created)).all()
        duplicated = s.execute(
            select(StageRun.stage_key, func.count())
            .where(StageRun.status == StageStatus.completed)
            .group_by(StageRun.stage_key).having(func.count() > 1)).all()
    findings = []
    for art_id, name, creator_id, row_id, _edge in orphans:
        if creator_id is None:
            why = "has no creating stage run"
        elif row_id is None:
            why = f"names creating stage run {creator_id}, which does not exist"
        else:
            why = f"has no 'makes' edge from its creating stage run {creator_id}"
        findings.append(Finding("orphan_artifact", str(art_id),
                                f"artifact {name!r} {why}: its lineage is unknown; do not use it as an input"))
    for key, count in duplicated:
        findings.append(Finding("duplicate_completed_key", key, (
            f"{count} completed stage runs share this key (the store's unique index is missing?); "
            "run `selfrefine db upgrade`")))
    return findings


def check_unknown_objects(store: Store, artifacts: ArtifactStore) -> list[Finding]:
    """Object files under the artifact root that no artifact row refers to."""
    with store.session() as s:
        known = set(s.scalars(select(Artifact.uri).distinct()))
    return [Finding("unknown_object", key, (
        "no artifact refers to this object: a process stopped between storing and registering "
        "it, or it was copied in by hand. It is harmless; a rerun of the same stage registers "
        "identical bytes. Delete it by hand once no stage is running"))
        for key in sorted(artifacts.stored_keys() - known)]


def check_abandoned_staging(artifacts: ArtifactStore) -> list[Finding]:
    """Staging directories no live process holds: the partial outputs of a stage that died."""
    return [Finding("abandoned_staging", str(path), (
        "temporary outputs of a stage whose process died; nothing refers to them "
        "(`selfrefine doctor --fix` removes them)"), fixable=True)
        for path in artifacts.abandoned_staging()]


# -- rows left running -------------------------------------------------------------------------


def _aware(ts: datetime | None) -> datetime | None:
    if ts is not None and ts.tzinfo is None:
        return ts.replace(tzinfo=timezone.utc)
    return ts


def check_stale_runs(store: Store) -> list[Finding]:
    """Stage runs, iterations and runs marked `running` whose process is gone."""
    findings = []
    with store.session() as s:
        for row in s.scalars(select(StageRun).where(StageRun.status == StageStatus.running)
                             .order_by(StageRun.created)):
            if stage_run_is_stale(row):
                findings.append(Finding("stale_stage_run", str(row.id), (
                    f"stage {row.stage} was left running by process {row.pid} on {row.host} (heartbeat "
                    f"{_when(row.heartbeat_at)}), which is dead or stopped beating; --fix marks it failed"), fixable=True))
        live_runs = {run.id for run in s.scalars(select(Run)) if lease_is_live(run)}
        for run in s.scalars(select(Run).where(Run.status == RunStatus.running).order_by(Run.created)):
            if run.id not in live_runs:
                findings.append(Finding("stale_run", str(run.id), (
                    f"marked running but no live process holds its lease (last holder "
                    f"{run.lease_owner or 'none'}); --fix marks it failed; continue it with "
                    f"`selfrefine resume {run.id}`"), fixable=True))
        for it in s.scalars(select(Iteration).where(Iteration.status == RunStatus.running)
                            .order_by(Iteration.created)):
            if it.run_id not in live_runs:
                findings.append(Finding("stale_iteration", str(it.id), (
                    f"iteration {it.index} of run {it.run_id} is marked running but the run has no "
                    "live driver; --fix marks it failed"), fixable=True))
    return findings


def _when(ts: datetime | None) -> str:
    ts = _aware(ts)
    return ts.strftime("%Y-%m-%d %H:%M:%S UTC") if ts else "never"


# -- all checks and the repairs ----------------------------------------------------------------


def run_checks(store: Store, artifacts: ArtifactStore) -> list[Finding]:
    """Every check, cheapest first."""
    return (check_stale_runs(store) + check_abandoned_staging(artifacts) + check_lineage(store)
            + check_unknown_objects(store, artifacts) + check_artifacts(store, artifacts))


def repair(store: Store, artifacts: ArtifactStore, findings: Iterable[Finding]) -> list[Finding]:
    """Apply the safe repairs to fixable findings; return the findings actually repaired.

    Each repair re-checks its condition at the moment it acts (a resume may have taken a stale
    stage run over since the check), so a live process is never marked failed and a directory
    in use is never removed.
    """
    repaired = []
    for finding in findings:
        if not finding.fixable:
            continue
        if finding.check == "abandoned_staging":
            done = artifacts.remove_abandoned(Path(finding.subject))
        elif finding.check == "stale_stage_run":
            done = _fail_stale_stage_run(store, uuid.UUID(finding.subject))
        elif finding.check == "stale_run":
            done = _fail_stale_run(store, uuid.UUID(finding.subject))
        elif finding.check == "stale_iteration":
            done = _fail_stale_iteration(store, uuid.UUID(finding.subject))
        else:  # pragma: no cover - every fixable check has a repair above
            raise ValueError(f"no repair for {finding.check}")
        if done:
            repaired.append(finding)
    return repaired


def _fail_stale_stage_run(store: Store, row_id: uuid.UUID) -> bool:
    with store.session() as s:
        row = s.get(StageRun, row_id)
        if row is None or row.status != StageStatus.running or not stage_run_is_stale(row):
            return False
        # Conditional on the row as read: a resume that took it over, or a beat since, wins.
        return repo.fail_stage_run(s, row_id, row.attempt, f"stage run {DIED}", seen=row)


def _fail_stale_run(store: Store, run_id: uuid.UUID) -> bool:
    with store.session() as s:
        run = s.get(Run, run_id)
        if run is None or run.status != RunStatus.running or lease_is_live(run):
            return False
        owner = run.lease_owner
        result = s.execute(update(Run).where(
            Run.id == run_id, Run.status == RunStatus.running,
            Run.lease_owner.is_(None) if owner is None else Run.lease_owner == owner)
            .values(status=RunStatus.failed, ended_at=utcnow(), error=f"run {DIED}")
            .execution_options(synchronize_session=False))
        return result.rowcount == 1


def _fail_stale_iteration(store: Store, iteration_id: uuid.UUID) -> bool:
    with store.session() as s:
        it = s.get(Iteration, iteration_id)
        if it is None or it.status != RunStatus.running or lease_is_live(s.get_one(Run, it.run_id)):
            return False
        it.status, it.ended_at, it.error = RunStatus.failed, utcnow(), f"iteration {DIED}"
        return True
