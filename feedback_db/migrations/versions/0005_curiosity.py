"""Curiosity and more sources: exchanges.confidence, knowledge_items.status and source_url, the
curious_questions table (questions Kaizen proposes itself, and questions the admin dismissed) and the
paraphrases table (model-written phrasings of a taught question)

Revision ID: 0005
Revises: 0004
"""
import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Existing replies were not measured (NULL); existing knowledge was approved by whoever added it.
    with op.batch_alter_table('exchanges', schema=None) as batch_op:
        batch_op.add_column(sa.Column('confidence', sa.Float(), nullable=True))
    with op.batch_alter_table('knowledge_items', schema=None) as batch_op:
        batch_op.add_column(sa.Column('status', sa.String(length=10), server_default='approved', nullable=False))
        batch_op.add_column(sa.Column('source_url', sa.String(length=1000), nullable=True))
    op.create_table(
        'curious_questions',
        sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('question', sa.Text(), nullable=False),
        sa.Column('key', sa.String(length=500), nullable=False),
        sa.Column('origin', sa.String(length=10), nullable=False),
        sa.Column('status', sa.String(length=10), nullable=False),
        sa.Column('item_id', sa.Integer(), nullable=True),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(['item_id'], ['knowledge_items.id'], ondelete='SET NULL'),
        sa.PrimaryKeyConstraint('id'),
    )
    with op.batch_alter_table('curious_questions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_curious_questions_key'), ['key'], unique=False)
    op.create_table(
        'paraphrases',
        sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('item_id', sa.Integer(), nullable=False),
        sa.Column('question', sa.Text(), nullable=False),
        sa.Column('origin', sa.String(length=10), nullable=False),
        sa.Column('use', sa.String(length=8), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(['item_id'], ['knowledge_items.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
    )
    with op.batch_alter_table('paraphrases', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_paraphrases_item_id'), ['item_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('paraphrases', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_paraphrases_item_id'))
    op.drop_table('paraphrases')
    with op.batch_alter_table('curious_questions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_curious_questions_key'))
    op.drop_table('curious_questions')
    with op.batch_alter_table('knowledge_items', schema=None) as batch_op:
        batch_op.drop_column('source_url')
        batch_op.drop_column('status')
    with op.batch_alter_table('exchanges', schema=None) as batch_op:
        batch_op.drop_column('confidence')
