"""the record store's tables

Revision ID: 0001
Revises: (none)
"""

import sqlalchemy as sa
from alembic import op

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('batches',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('end_status', sa.String(length=16), nullable=False),
    sa.Column('input_file', sa.Text(), nullable=False),
    sa.Column('completion_window', sa.String(length=16), nullable=False),
    sa.Column('total', sa.Integer(), nullable=False),
    sa.Column('completed', sa.Integer(), nullable=False),
    sa.Column('failed', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.BigInteger(), nullable=False),
    sa.Column('expires_at', sa.BigInteger(), nullable=False),
    sa.Column('cancelling_at', sa.BigInteger(), nullable=True),
    sa.Column('ended_at', sa.BigInteger(), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('rebuilds', sa.Integer(), nullable=False),
    sa.Column('options', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_batches'))
    )
    with op.batch_alter_table('batches', schema=None) as batch_op:
        batch_op.create_index('ix_batches_status', ['status'], unique=False)

    op.create_table('ledger',
    sa.Column('batch_id', sa.String(length=64), nullable=False),
    sa.Column('custom_id', sa.String(length=300), nullable=False),
    sa.Column('attempt', sa.Integer(), nullable=False),
    sa.Column('model', sa.String(length=200), nullable=False),
    sa.Column('unsettled', sa.Boolean(), nullable=False),
    sa.Column('productive', sa.Boolean(), nullable=False),
    sa.Column('input_tokens', sa.BigInteger(), nullable=False),
    sa.Column('cached_input_tokens', sa.BigInteger(), nullable=False),
    sa.Column('output_tokens', sa.BigInteger(), nullable=False),
    sa.Column('cost_usd', sa.Text(), nullable=False),
    sa.Column('list_cost_usd', sa.Text(), nullable=False),
    sa.Column('client_request_id', sa.String(length=64), nullable=False),
    sa.Column('lane', sa.String(length=16), nullable=False),
    sa.Column('written_at', sa.BigInteger(), nullable=False),
    sa.Column('row', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('batch_id', 'custom_id', 'attempt', name=op.f('pk_ledger'))
    )
    op.create_table('lines',
    sa.Column('batch_id', sa.String(length=64), nullable=False),
    sa.Column('custom_id', sa.String(length=300), nullable=False),
    sa.Column('line_no', sa.Integer(), nullable=False),
    sa.Column('model', sa.String(length=200), nullable=False),
    sa.Column('job', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('batch_id', 'custom_id', name=op.f('pk_lines')),
    sa.UniqueConstraint('batch_id', 'line_no', name=op.f('uq_lines_batch_id_line_no'))
    )
    with op.batch_alter_table('lines', schema=None) as batch_op:
        batch_op.create_index('ix_lines_batch_id_model_line_no',
                              ['batch_id', 'model', 'line_no'], unique=False)

    op.create_table('records',
    sa.Column('seq', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True,
              nullable=False),
    sa.Column('batch_id', sa.String(length=64), nullable=False),
    sa.Column('custom_id', sa.String(length=300), nullable=False),
    sa.Column('line_no', sa.Integer(), nullable=True),
    sa.Column('error_code', sa.String(length=64), nullable=True),
    sa.Column('record', sa.Text(), nullable=True),
    sa.Column('written_at', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('seq', name=op.f('pk_records')),
    sa.UniqueConstraint('batch_id', 'custom_id', name=op.f('uq_records_batch_id_custom_id'))
    )
    with op.batch_alter_table('records', schema=None) as batch_op:
        batch_op.create_index('ix_records_batch_id_line_no', ['batch_id', 'line_no'], unique=False)
        batch_op.create_index('ix_records_batch_id_seq', ['batch_id', 'seq'], unique=False)

    op.create_table('retry_history',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True,
              nullable=False),
    sa.Column('batch_id', sa.String(length=64), nullable=False),
    sa.Column('custom_id', sa.String(length=300), nullable=False),
    sa.Column('record', sa.Text(), nullable=False),
    sa.Column('replaced_at', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_retry_history'))
    )
    with op.batch_alter_table('retry_history', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_retry_history_batch_id'), ['batch_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('retry_history', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_retry_history_batch_id'))

    op.drop_table('retry_history')
    with op.batch_alter_table('records', schema=None) as batch_op:
        batch_op.drop_index('ix_records_batch_id_seq')
        batch_op.drop_index('ix_records_batch_id_line_no')

    op.drop_table('records')
    with op.batch_alter_table('lines', schema=None) as batch_op:
        batch_op.drop_index('ix_lines_batch_id_model_line_no')

    op.drop_table('lines')
    op.drop_table('ledger')
    with op.batch_alter_table('batches', schema=None) as batch_op:
        batch_op.drop_index('ix_batches_status')

    op.drop_table('batches')
