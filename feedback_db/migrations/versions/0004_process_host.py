"""training_runs.host and locks.host: the machine of the process (pid) that holds a run or the lock

Revision ID: 0004
Revises: 0003
"""
import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Existing rows stay NULL: they were written by a single-machine install, so "this machine".
    with op.batch_alter_table('training_runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('host', sa.String(length=64), nullable=True))
    with op.batch_alter_table('locks', schema=None) as batch_op:
        batch_op.add_column(sa.Column('host', sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('locks', schema=None) as batch_op:
        batch_op.drop_column('host')
    with op.batch_alter_table('training_runs', schema=None) as batch_op:
        batch_op.drop_column('host')
