"""exchanges.adapter_applied: whether the served version's adapter produced the reply (routing by scope)

Revision ID: 0003
Revises: 0002
"""
import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Existing rows stay NULL: nobody recorded whether the adapter applied before routing existed.
    with op.batch_alter_table('exchanges', schema=None) as batch_op:
        batch_op.add_column(sa.Column('adapter_applied', sa.Boolean(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('exchanges', schema=None) as batch_op:
        batch_op.drop_column('adapter_applied')
