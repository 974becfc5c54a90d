"""fact learning state: attempts, the version that learned a fact, parked facts

Revision ID: 0002
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # server defaults fill the rows that exist already: every stored fact starts as "not yet learned".
    with op.batch_alter_table('knowledge_items', schema=None) as batch_op:
        batch_op.add_column(sa.Column('train_attempts', sa.Integer(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('learned_version', sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column('parked', sa.Boolean(), server_default=sa.false(), nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('knowledge_items', schema=None) as batch_op:
        batch_op.drop_column('parked')
        batch_op.drop_column('learned_version')
        batch_op.drop_column('train_attempts')
