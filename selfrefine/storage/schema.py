"""The SQL lineage store's tables (SQLAlchemy 2.0, typed).

Nesting is by parent keys (run → iteration → stage run); lineage is explicit edges
(stage run —uses→ artifact, stage run —makes→ artifact), never inferred from paths.
The schema changes only through the Alembic migrations in `storage/migrations/`.
"""

from __future__ import annotations

import enum
import uuid
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    Uuid,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dict[str, Any]: JSON, uuid.UUID: Uuid}

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


class RunStatus(str, enum.Enum):
    pending = "pending"
    running = "running"
    completed = "completed"
    failed = "failed"


class StageStatus(str, enum.Enum):
    pending = "pending"
    running = "running"
    completed = "completed"
    failed = "failed"
    # This iteration's stage was satisfied by another completed stage run with the same key.
    reused = "reused"
    # Was completed, but an output no longer matched its digest; the stage was recomputed.
    invalidated = "invalidated"


class EdgeKind(str, enum.Enum):
    uses = "uses"
    makes = "makes"


def _enum(cls: type[enum.Enum]) -> Enum:
    # Stored as plain strings (no native PG enum types): adding a status is a one-line migration.
    return Enum(cls, native_enum=False, length=16, validate_strings=True,
                values_callable=lambda e: [m.value for m in e])


class Run(Base):
    """One self-refine run of N iterations, with its redacted config snapshot and its lease."""

    __tablename__ = "runs"

    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[RunStatus] = mapped_column(_enum(RunStatus), default=RunStatus.pending)
    n_iterations: Mapped[int] = mapped_column(Integer)
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    config_digest: Mapped[str] = mapped_column(String(64))
    prefect_flow_run_id: Mapped[str | None] = mapped_column(String(64))
    host: Mapped[str | None] = mapped_column(String(255))
    versions: Mapped[dict[str, Any]] = mapped_column(default=dict)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    error: Mapped[str | None] = mapped_column(Text)
    # Lease: the process currently driving the run ("host:pid:token") and until when it holds it.
    lease_owner: Mapped[str | None] = mapped_column(String(255))
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Where the lease owner's pid is valid and which process had it (storage/liveness.py).
    lease_boot_id: Mapped[str | None] = mapped_column(String(64))
    lease_pid_ns: Mapped[str | None] = mapped_column(String(64))
    lease_pid_start: Mapped[int | None] = mapped_column(BigInteger)

    iterations: Mapped[list[Iteration]] = relationship(
        back_populates="run", lazy="raise", order_by="Iteration.index")


class Iteration(Base):
    __tablename__ = "iterations"
    __table_args__ = (UniqueConstraint("run_id", "index"),)

    run_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    index: Mapped[int] = mapped_column(Integer)
    status: Mapped[RunStatus] = mapped_column(_enum(RunStatus), default=RunStatus.pending)
    prefect_flow_run_id: Mapped[str | None] = mapped_column(String(64))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    error: Mapped[str | None] = mapped_column(Text)

    run: Mapped[Run] = relationship(back_populates="iterations", lazy="raise")
    stage_runs: Mapped[list[StageRun]] = relationship(
        back_populates="iteration", lazy="raise", foreign_keys="StageRun.iteration_id")


class StageRun(Base):
    """One stage of one iteration (or a standalone stage such as `selfrefine eval`).

    Retries of the same stage in the same iteration update this row (`attempt` counts them).
    At most one row per stage key is `completed` (partial unique index): a second process that
    computes the same key concurrently turns its row into `reused` instead of duplicating it.
    """

    __tablename__ = "stage_runs"
    __table_args__ = (
        UniqueConstraint("iteration_id", "stage"),
        Index("uq_stage_runs_completed_key", "stage_key", unique=True,
              sqlite_where=text("status = 'completed'"),
              postgresql_where=text("status = 'completed'")),
        CheckConstraint("attempt >= 0", name="attempt_non_negative"),
        CheckConstraint("reused_from_id IS NULL OR reused_from_id <> id", name="no_self_reuse"),
    )

    iteration_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("iterations.id", ondelete="CASCADE"), index=True)
    stage: Mapped[str] = mapped_column(String(64))
    stage_key: Mapped[str] = mapped_column(String(64), index=True)
    status: Mapped[StageStatus] = mapped_column(_enum(StageStatus), default=StageStatus.pending)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    reused_from_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("stage_runs.id"))
    code_version: Mapped[str] = mapped_column(String(64))
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    versions: Mapped[dict[str, Any]] = mapped_column(default=dict)
    seed: Mapped[int | None] = mapped_column(Integer)
    host: Mapped[str | None] = mapped_column(String(255))
    pid: Mapped[int | None] = mapped_column(Integer)
    # With host and pid, what names the process holding a running row, so that a reused pid or
    # another container under the same host name is told apart (storage/liveness.py): the
    # kernel's boot id, the PID namespace and the process start time.
    boot_id: Mapped[str | None] = mapped_column(String(64))
    pid_ns: Mapped[str | None] = mapped_column(String(64))
    pid_start: Mapped[int | None] = mapped_column(BigInteger)
    placement: Mapped[str] = mapped_column(String(100), default="inline")
    prefect_flow_run_id: Mapped[str | None] = mapped_column(String(64))
    prefect_task_run_id: Mapped[str | None] = mapped_column(String(64))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    error: Mapped[str | None] = mapped_column(Text)

    iteration: Mapped[Iteration | None] = relationship(
        back_populates="stage_runs", lazy="raise", foreign_keys=[iteration_id])


class Artifact(Base):
    """A registered, content-addressed file or directory. `uri` is relative to the artifact root."""

    __tablename__ = "artifacts"

    kind: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(200))
    uri: Mapped[str] = mapped_column(String(500))
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    is_dir: Mapped[bool] = mapped_column(default=False)
    stage_run_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("stage_runs.id", ondelete="SET NULL"), index=True)
    meta: Mapped[dict[str, Any]] = mapped_column(default=dict)


class ArtifactEdge(Base):
    """stage run —uses→ artifact (an input, under a role name) or —makes→ artifact (an output)."""

    __tablename__ = "artifact_edges"
    __table_args__ = (
        UniqueConstraint("stage_run_id", "artifact_id", "kind", "role"),
        Index("ix_artifact_edges_artifact_kind", "artifact_id", "kind"),
        Index("ix_artifact_edges_stage_run_kind", "stage_run_id", "kind"),
    )

    stage_run_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("stage_runs.id", ondelete="CASCADE"))
    artifact_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("artifacts.id", ondelete="CASCADE"))
    kind: Mapped[EdgeKind] = mapped_column(_enum(EdgeKind))
    role: Mapped[str] = mapped_column(String(64))


class Metric(Base):
    """A named value a stage measured; `labels` narrow it (source, dimension, bin, ...)."""

    __tablename__ = "metrics"

    stage_run_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("stage_runs.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(128))
    value: Mapped[float] = mapped_column(Float)
    labels: Mapped[dict[str, Any]] = mapped_column(default=dict)
