"""process identity beyond the pid: boot id, PID namespace and start time of claim holders

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('lease_boot_id', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('lease_pid_ns', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('lease_pid_start', sa.BigInteger(), nullable=True))

    with op.batch_alter_table('stage_runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('boot_id', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('pid_ns', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('pid_start', sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('stage_runs', schema=None) as batch_op:
        batch_op.drop_column('pid_start')
        batch_op.drop_column('pid_ns')
        batch_op.drop_column('boot_id')

    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.drop_column('lease_pid_start')
        batch_op.drop_column('lease_pid_ns')
        batch_op.drop_column('lease_boot_id')
