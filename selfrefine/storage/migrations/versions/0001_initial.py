"""initial schema: runs, iterations, stage runs, artifacts, edges, metrics

Revision ID: 0001
Revises: 
Create Date: 2026-11-23 14:12:46.730399
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('runs',
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('status', sa.Enum('pending', 'running', 'completed', 'failed', name='runstatus', native_enum=False, length=16), nullable=False),
    sa.Column('n_iterations', sa.Integer(), nullable=False),
    sa.Column('config', sa.JSON(), nullable=False),
    sa.Column('config_digest', sa.String(length=64), nullable=False),
    sa.Column('prefect_flow_run_id', sa.String(length=64), nullable=True),
    sa.Column('host', sa.String(length=255), nullable=True),
    sa.Column('versions', sa.JSON(), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('ended_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('lease_owner', sa.String(length=255), nullable=True),
    sa.Column('lease_expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('created', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_runs'))
    )
    op.create_table('iterations',
    sa.Column('run_id', sa.Uuid(), nullable=False),
    sa.Column('index', sa.Integer(), nullable=False),
    sa.Column('status', sa.Enum('pending', 'running', 'completed', 'failed', name='runstatus', native_enum=False, length=16), nullable=False),
    sa.Column('prefect_flow_run_id', sa.String(length=64), nullable=True),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('ended_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('created', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], name=op.f('fk_iterations_run_id_runs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_iterations')),
    sa.UniqueConstraint('run_id', 'index', name=op.f('uq_iterations_run_id_index'))
    )
    with op.batch_alter_table('iterations', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_iterations_run_id'), ['run_id'], unique=False)

    op.create_table('stage_runs',
    sa.Column('iteration_id', sa.Uuid(), nullable=True),
    sa.Column('stage', sa.String(length=64), nullable=False),
    sa.Column('stage_key', sa.String(length=64), nullable=False),
    sa.Column('status', sa.Enum('pending', 'running', 'completed', 'failed', 'reused', 'invalidated', name='stagestatus', native_enum=False, length=16), nullable=False),
    sa.Column('attempt', sa.Integer(), nullable=False),
    sa.Column('reused_from_id', sa.Uuid(), nullable=True),
    sa.Column('code_version', sa.String(length=64), nullable=False),
    sa.Column('config', sa.JSON(), nullable=False),
    sa.Column('versions', sa.JSON(), nullable=False),
    sa.Column('seed', sa.Integer(), nullable=True),
    sa.Column('host', sa.String(length=255), nullable=True),
    sa.Column('pid', sa.Integer(), nullable=True),
    sa.Column('placement', sa.String(length=100), nullable=False),
    sa.Column('prefect_flow_run_id', sa.String(length=64), nullable=True),
    sa.Column('prefect_task_run_id', sa.String(length=64), nullable=True),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('heartbeat_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('ended_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('created', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint('attempt >= 0', name=op.f('ck_stage_runs_attempt_non_negative')),
    sa.CheckConstraint('reused_from_id IS NULL OR reused_from_id <> id', name=op.f('ck_stage_runs_no_self_reuse')),
    sa.ForeignKeyConstraint(['iteration_id'], ['iterations.id'], name=op.f('fk_stage_runs_iteration_id_iterations'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['reused_from_id'], ['stage_runs.id'], name=op.f('fk_stage_runs_reused_from_id_stage_runs')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_stage_runs')),
    sa.UniqueConstraint('iteration_id', 'stage', name=op.f('uq_stage_runs_iteration_id_stage'))
    )
    with op.batch_alter_table('stage_runs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_stage_runs_iteration_id'), ['iteration_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_stage_runs_stage_key'), ['stage_key'], unique=False)
        batch_op.create_index('uq_stage_runs_completed_key', ['stage_key'], unique=True, sqlite_where=sa.text("status = 'completed'"), postgresql_where=sa.text("status = 'completed'"))

    op.create_table('artifacts',
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('uri', sa.String(length=500), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('size_bytes', sa.BigInteger(), nullable=False),
    sa.Column('is_dir', sa.Boolean(), nullable=False),
    sa.Column('stage_run_id', sa.Uuid(), nullable=True),
    sa.Column('meta', sa.JSON(), nullable=False),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('created', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['stage_run_id'], ['stage_runs.id'], name=op.f('fk_artifacts_stage_run_id_stage_runs'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_artifacts'))
    )
    with op.batch_alter_table('artifacts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_artifacts_sha256'), ['sha256'], unique=False)
        batch_op.create_index(batch_op.f('ix_artifacts_stage_run_id'), ['stage_run_id'], unique=False)

    op.create_table('metrics',
    sa.Column('stage_run_id', sa.Uuid(), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('value', sa.Float(), nullable=False),
    sa.Column('labels', sa.JSON(), nullable=False),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('created', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['stage_run_id'], ['stage_runs.id'], name=op.f('fk_metrics_stage_run_id_stage_runs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_metrics'))
    )
    with op.batch_alter_table('metrics', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_metrics_stage_run_id'), ['stage_run_id'], unique=False)

    op.create_table('artifact_edges',
    sa.Column('stage_run_id', sa.Uuid(), nullable=False),
    sa.Column('artifact_id', sa.Uuid(), nullable=False),
    sa.Column('kind', sa.Enum('uses', 'makes', name='edgekind', native_enum=False, length=16), nullable=False),
    sa.Column('role', sa.String(length=64), nullable=False),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('created', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['artifact_id'], ['artifacts.id'], name=op.f('fk_artifact_edges_artifact_id_artifacts'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['stage_run_id'], ['stage_runs.id'], name=op.f('fk_artifact_edges_stage_run_id_stage_runs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_artifact_edges')),
    sa.UniqueConstraint('stage_run_id', 'artifact_id', 'kind', 'role', name=op.f('uq_artifact_edges_stage_run_id_artifact_id_kind_role'))
    )
    with op.batch_alter_table('artifact_edges', schema=None) as batch_op:
        batch_op.create_index('ix_artifact_edges_artifact_kind', ['artifact_id', 'kind'], unique=False)
        batch_op.create_index('ix_artifact_edges_stage_run_kind', ['stage_run_id', 'kind'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('artifact_edges', schema=None) as batch_op:
        batch_op.drop_index('ix_artifact_edges_stage_run_kind')
        batch_op.drop_index('ix_artifact_edges_artifact_kind')

    op.drop_table('artifact_edges')
    with op.batch_alter_table('metrics', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_metrics_stage_run_id'))

    op.drop_table('metrics')
    with op.batch_alter_table('artifacts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_artifacts_stage_run_id'))
        batch_op.drop_index(batch_op.f('ix_artifacts_sha256'))

    op.drop_table('artifacts')
    with op.batch_alter_table('stage_runs', schema=None) as batch_op:
        batch_op.drop_index('uq_stage_runs_completed_key', sqlite_where=sa.text("status = 'completed'"), postgresql_where=sa.text("status = 'completed'"))
        batch_op.drop_index(batch_op.f('ix_stage_runs_stage_key'))
        batch_op.drop_index(batch_op.f('ix_stage_runs_iteration_id'))

    op.drop_table('stage_runs')
    with op.batch_alter_table('iterations', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_iterations_run_id'))

    op.drop_table('iterations')
    op.drop_table('runs')
