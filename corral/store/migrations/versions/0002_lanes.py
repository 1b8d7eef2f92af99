"""lanes: a line's lane, and the provider batches the batch lane runs

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
    with op.batch_alter_table('lines', schema=None) as batch_op:
        batch_op.add_column(sa.Column('lane', sa.String(length=8), server_default='live',
                                      nullable=False))

    op.create_table('provider_batches',
    sa.Column('id', sa.String(length=200), nullable=False),
    sa.Column('batch_id', sa.String(length=64), nullable=False),
    sa.Column('provider', sa.String(length=200), nullable=False),
    sa.Column('model', sa.String(length=200), nullable=False),
    sa.Column('status', sa.String(length=32), nullable=False),
    sa.Column('total', sa.Integer(), nullable=False),
    sa.Column('done', sa.Integer(), nullable=False),
    sa.Column('tokens', sa.BigInteger(), nullable=False),
    sa.Column('custom_ids', sa.Text(), nullable=False),
    sa.Column('created_at', sa.BigInteger(), nullable=False),
    sa.Column('ended_at', sa.BigInteger(), nullable=True),
    sa.Column('hedged_at', sa.BigInteger(), nullable=True),
    sa.Column('polled_at', sa.BigInteger(), nullable=True),
    sa.Column('collected', sa.Boolean(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_provider_batches'))
    )
    with op.batch_alter_table('provider_batches', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_provider_batches_batch_id'), ['batch_id'],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table('provider_batches', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_provider_batches_batch_id'))

    op.drop_table('provider_batches')
    with op.batch_alter_table('lines', schema=None) as batch_op:
        batch_op.drop_column('lane')
