"""Query functions over the store. Each takes a session; none commits (the caller's transaction does)."""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import String, cast, select, update
from sqlalchemy.orm import Session

from selfrefine.errors import NotFoundError
from selfrefine.storage.artifacts import StoredObject
from selfrefine.storage.schema import (
    Artifact,
    ArtifactEdge,
    Base,
    EdgeKind,
    Iteration,
    Metric,
    Run,
    RunStatus,
    StageRun,
    StageStatus,
    utcnow,
)

log = logging.getLogger(__name__)

# -- runs and iterations -----------------------------------------------------------------------


def create_run(session: Session, *, name: str, n_iterations: int, config: dict[str, Any],
               config_digest: str, host: str | None = None,
               versions: dict[str, Any] | None = None,
               prefect_flow_run_id: str | None = None) -> Run:
    run = Run(name=name, n_iterations=n_iterations, config=config, config_digest=config_digest,
              host=host, versions=versions or {}, prefect_flow_run_id=prefect_flow_run_id,
              status=RunStatus.pending)
    session.add(run)
    session.flush()
    return run


def list_runs(session: Session, limit: int = 50) -> list[Run]:
    return list(session.scalars(select(Run).order_by(Run.created.desc()).limit(limit)))


def get_or_create_iteration(session: Session, run_id: uuid.UUID, index: int) -> Iteration:
    it = session.scalar(select(Iteration).where(Iteration.run_id == run_id, Iteration.index == index))
    if it is None:
        it = Iteration(run_id=run_id, index=index, status=RunStatus.pending)
        session.add(it)
        session.flush()
    return it


def iterations_of(session: Session, run_id: uuid.UUID) -> list[Iteration]:
    return list(session.scalars(
        select(Iteration).where(Iteration.run_id == run_id).order_by(Iteration.index)))


def stage_runs_of(session: Session, iteration_id: uuid.UUID) -> list[StageRun]:
    return list(session.scalars(
        select(StageRun).where(StageRun.iteration_id == iteration_id).order_by(StageRun.created)))


# -- leases ------------------------------------------------------------------------------------


def acquire_run_lease(session: Session, run_id: uuid.UUID, owner: str, ttl: timedelta,
                      process: Mapping[str, Any] | None = None) -> bool:
    """Take the run's lease for `owner` if it is free, expired or already ours (one UPDATE, so two
    processes racing for it cannot both win). `process` (boot_id, pid_ns, started) records where
    the owner's pid is valid. Returns whether `owner` now holds it."""
    now = utcnow()
    process = process or {}
    result = session.execute(
        update(Run)
        .where(Run.id == run_id)
        .where((Run.lease_owner.is_(None)) | (Run.lease_expires_at < now) | (Run.lease_owner == owner))
        .values(lease_owner=owner, lease_expires_at=now + ttl, lease_boot_id=process.get("boot_id"),
                lease_pid_ns=process.get("pid_ns"), lease_pid_start=process.get("started"))
        # Not evaluated in Python against loaded rows: SQLite returns naive datetimes, which do
        # not compare with `now`; the database decides, and the caller reloads what it needs.
        .execution_options(synchronize_session=False))
    return result.rowcount == 1


def renew_run_lease(session: Session, run_id: uuid.UUID, owner: str, ttl: timedelta) -> bool:
    """Extend the lease if `owner` still holds it (expired or not, as long as no other process
    took it since); returns False once it has been taken."""
    result = session.execute(update(Run).where(Run.id == run_id, Run.lease_owner == owner)
                             .values(lease_expires_at=utcnow() + ttl)
                             .execution_options(synchronize_session=False))
    return result.rowcount == 1


def release_run_lease(session: Session, run_id: uuid.UUID, owner: str) -> bool:
    """Give the lease up if `owner` still holds it; returns whether it did."""
    result = session.execute(update(Run).where(Run.id == run_id, Run.lease_owner == owner)
                             .values(lease_owner=None, lease_expires_at=None)
                             .execution_options(synchronize_session=False))
    return result.rowcount == 1


# -- stage runs --------------------------------------------------------------------------------


def completed_stage_run(session: Session, stage_key: str) -> StageRun | None:
    return session.scalar(select(StageRun).where(
        StageRun.stage_key == stage_key, StageRun.status == StageStatus.completed))


def stage_run_for(session: Session, iteration_id: uuid.UUID | None, stage: str) -> StageRun | None:
    if iteration_id is None:
        return None
    return session.scalar(select(StageRun).where(
        StageRun.iteration_id == iteration_id, StageRun.stage == stage))


def producing_stage_run(session: Session, stage_run: StageRun) -> StageRun:
    """The stage run that made the outputs: itself, or the one it reused."""
    if stage_run.status == StageStatus.reused and stage_run.reused_from_id is not None:
        return session.get_one(StageRun, stage_run.reused_from_id)
    return stage_run


def edges_of(session: Session, stage_run_id: uuid.UUID, kind: EdgeKind) -> list[tuple[str, Artifact]]:
    rows = session.execute(
        select(ArtifactEdge.role, Artifact)
        .join(Artifact, Artifact.id == ArtifactEdge.artifact_id)
        .where(ArtifactEdge.stage_run_id == stage_run_id, ArtifactEdge.kind == kind)
        .order_by(ArtifactEdge.role))
    return [(role, art) for role, art in rows]


def stage_outputs(session: Session, stage_run: StageRun) -> dict[str, Artifact]:
    producer = producing_stage_run(session, stage_run)
    return dict(edges_of(session, producer.id, EdgeKind.makes))


def stage_inputs(session: Session, stage_run: StageRun) -> dict[str, Artifact]:
    return dict(edges_of(session, stage_run.id, EdgeKind.uses))


def replace_input_edges(session: Session, stage_run_id: uuid.UUID,
                        inputs: Mapping[str, uuid.UUID]) -> None:
    for edge in session.scalars(select(ArtifactEdge).where(
            ArtifactEdge.stage_run_id == stage_run_id, ArtifactEdge.kind == EdgeKind.uses)):
        session.delete(edge)
    session.flush()
    for role, artifact_id in inputs.items():
        session.add(ArtifactEdge(stage_run_id=stage_run_id, artifact_id=artifact_id,
                                 kind=EdgeKind.uses, role=role))


def _as_seen(row: StageRun):
    """The WHERE clause matching `row` only as it was read: same status, attempt and heartbeat.
    Every claim raises `attempt` and every beat moves `heartbeat_at`, so an UPDATE under it
    changes nothing if any process claimed or beat the row since."""
    beat = (StageRun.heartbeat_at.is_(None) if row.heartbeat_at is None
            else StageRun.heartbeat_at == row.heartbeat_at)
    return (StageRun.id == row.id, StageRun.status == row.status, StageRun.attempt == row.attempt, beat)


def take_over_stage_run(session: Session, row: StageRun, values: Mapping[str, Any]) -> bool:
    """Claim `row` (failed, pending, reused, or running but stale, as read) with one conditional
    UPDATE, setting `values` and `attempt + 1`. Of two processes that read the same row and both
    try, exactly one wins; returns whether this one did."""
    result = session.execute(update(StageRun).where(*_as_seen(row))
                             .values(**values, attempt=row.attempt + 1)
                             .execution_options(synchronize_session=False))
    return result.rowcount == 1


def fail_stage_run(session: Session, row_id: uuid.UUID, attempt: int, error: str,
                   seen: StageRun | None = None) -> bool:
    """Mark claim (row, attempt) failed if it is still running; with `seen`, only if the row is
    unchanged since it was read (doctor's repair of a stale row). Returns whether it did."""
    where = _as_seen(seen) if seen is not None else (
        StageRun.id == row_id, StageRun.status == StageStatus.running, StageRun.attempt == attempt)
    result = session.execute(update(StageRun).where(*where)
                             .values(status=StageStatus.failed, error=error, ended_at=utcnow())
                             .execution_options(synchronize_session=False))
    return result.rowcount == 1


def touch_heartbeat(session: Session, stage_run_id: uuid.UUID, attempt: int) -> bool:
    """Beat for claim (row, attempt); False when the row is no longer running under that claim."""
    result = session.execute(update(StageRun).where(StageRun.id == stage_run_id,
                                                    StageRun.status == StageStatus.running,
                                                    StageRun.attempt == attempt)
                             .values(heartbeat_at=utcnow()).execution_options(synchronize_session=False))
    return result.rowcount == 1


# -- artifacts and metrics ---------------------------------------------------------------------


def register_artifact(session: Session, stored: StoredObject, *, kind: str, name: str,
                      stage_run_id: uuid.UUID | None, meta: dict[str, Any] | None = None) -> Artifact:
    art = Artifact(kind=kind, name=name, uri=stored.key, sha256=stored.sha256,
                   size_bytes=stored.size_bytes, is_dir=stored.is_dir, stage_run_id=stage_run_id,
                   meta=meta or {})
    session.add(art)
    session.flush()
    if stage_run_id is not None:
        session.add(ArtifactEdge(stage_run_id=stage_run_id, artifact_id=art.id,
                                 kind=EdgeKind.makes, role=name))
    return art


def add_metrics(session: Session, stage_run_id: uuid.UUID,
                metrics: Iterable[tuple[str, float, Mapping[str, Any]]]) -> int:
    """Add a stage run's metric rows; returns how many were added.

    A NaN or infinite value (or label) is left out with a warning, as `flatten_metrics` does:
    SQLite turns NaN into NULL, which the NOT NULL column refuses (failing the whole registration),
    PostgreSQL stores it and every comparison and plot downstream then reads a non-number, and
    PostgreSQL's JSON refuses a NaN label. An undefined statistic (e.g. an accuracy over no items)
    is absent, not a reason to discard the stage's outputs.
    """
    rows = []
    for name, value, labels in metrics:
        number = float(value)
        bad = [k for k, v in labels.items() if isinstance(v, float) and not math.isfinite(v)]
        if not math.isfinite(number) or bad:
            what = f"label {bad[0]!r} is {labels[bad[0]]}" if bad else f"value is {number}"
            log.warning("metric %s of stage run %s: %s; not stored", name, stage_run_id, what)
            continue
        rows.append(Metric(stage_run_id=stage_run_id, name=name, value=number, labels=dict(labels)))
    session.add_all(rows)
    return len(rows)


def metrics_of(session: Session, stage_run_id: uuid.UUID) -> list[Metric]:
    return list(session.scalars(select(Metric).where(Metric.stage_run_id == stage_run_id)
                                .order_by(Metric.name)))


# -- resolving ids that users type -------------------------------------------------------------

_RESOLVABLE: tuple[type[Base], ...] = (Run, Iteration, StageRun, Artifact)


def resolve(session: Session, text: str) -> Base:
    """A run, iteration, stage run or artifact by full id, unique id prefix (>= 4 hex characters),
    or `sha256:<digest prefix>` for an artifact."""
    text = text.strip()
    if text.startswith("sha256:"):
        prefix = text.removeprefix("sha256:").lower()
        found = list(session.scalars(select(Artifact).where(Artifact.sha256.like(f"{_hex(prefix, text)}%"))
                                     .order_by(Artifact.created).limit(2)))
        return _one(found, text)
    try:
        exact = uuid.UUID(text)
    except ValueError:
        exact = None
    if exact is not None:
        for model in _RESOLVABLE:
            obj = session.get(model, exact)
            if obj is not None:
                return obj
        raise NotFoundError(f"no run, iteration, stage run or artifact has id {text}")
    prefix = _hex(text.replace("-", "").lower(), text)
    found = []
    for model in _RESOLVABLE:
        column = cast(model.id, String)
        pattern = prefix if session.bind.dialect.name == "sqlite" else _dashed(prefix)
        found += list(session.scalars(select(model).where(column.like(f"{pattern}%")).limit(2)))
    return _one(found, text)


def _hex(prefix: str, original: str) -> str:
    if len(prefix) < 4 or any(c not in "0123456789abcdef" for c in prefix):
        raise NotFoundError(f"{original!r} is not an id: give a full id, a prefix of at least 4 hex "
                            "characters, or sha256:<digest prefix>")
    return prefix


def _dashed(prefix: str) -> str:
    """Insert UUID dashes into a hex prefix so it matches PostgreSQL's text form of a uuid."""
    out, cuts = [], {8, 12, 16, 20}
    for i, c in enumerate(prefix):
        if i in cuts:
            out.append("-")
        out.append(c)
    return "".join(out)


def _one(found: list[Base], text: str) -> Base:
    if not found:
        raise NotFoundError(f"no run, iteration, stage run or artifact matches {text!r} "
                            "(list runs with `selfrefine runs`)")
    if len(found) > 1:
        raise NotFoundError(f"{text!r} is ambiguous: it matches several ids; give more characters")
    return found[0]


def describe(obj: Base) -> str:
    return {Run: "run", Iteration: "iteration", StageRun: "stage run", Artifact: "artifact"}[type(obj)]


def ago(ts: datetime | None) -> str:
    if ts is None:
        return "-"
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=timezone.utc)
    return ts.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def names_model_elsewhere(text: str) -> bool:
    """Whether `text` names a model outside the store: an existing path, a model alias, or a hub id
    (`owner/name`). Such names are never looked up as artifact ids."""
    from pathlib import Path

    return Path(text).expanduser().exists() or text in ("packaged", "tiny") or "/" in text


def named_model_artifact(session: Session, text: str) -> Artifact | None:
    """The model artifact `text` names (a full id, unique prefix or `sha256:` digest prefix), or None
    when `text` names a model outside the store (`names_model_elsewhere`) or nothing in it."""
    from selfrefine.errors import ConfigError

    if names_model_elsewhere(text):
        return None
    try:
        obj = resolve(session, text)
    except NotFoundError:
        return None
    if not isinstance(obj, Artifact) or obj.kind != "model":
        raise ConfigError(f"{text!r} is a {describe(obj)}, not a model artifact")
    return obj


def model_artifact_id(text: str, store: Any = None) -> uuid.UUID | None:
    """The id of the model artifact `text` names, or None. A name outside the store (path, alias, hub
    id) is recognised before any store is opened (`store`, a `Store`, defaults to the default store),
    so checking a config creates none."""
    if names_model_elsewhere(text):
        return None
    if store is None:
        from selfrefine.storage.engine import default_store

        store = default_store()
    with store.session() as s:
        art = named_model_artifact(s, text)
        return art.id if art is not None else None
