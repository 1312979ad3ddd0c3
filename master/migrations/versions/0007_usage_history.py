"""usage history: raw samples (48 h) and hourly aggregates (13 months) per instance

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-26 05:10:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'usage_samples',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('instance_id', sa.Integer(), nullable=False),
        sa.Column('computer_id', sa.Integer(), nullable=True),
        sa.Column('at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('cpu_seconds', sa.Float(), nullable=False),
        sa.Column('memory_mb', sa.Float(), nullable=False),
        sa.Column('disk_mb', sa.Float(), nullable=False),
        sa.Column('net_in_bytes', sa.BigInteger(), nullable=False),
        sa.Column('net_out_bytes', sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(['instance_id'], ['instances.id'], ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['computer_id'], ['computers.id'], ondelete='SET NULL'),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_usage_samples_instance_at', 'usage_samples', ['instance_id', 'at'])
    op.create_index('ix_usage_samples_at', 'usage_samples', ['at'])
    op.create_table(
        'usage_hourly',
        sa.Column('instance_id', sa.Integer(), nullable=False),
        sa.Column('hour', sa.DateTime(timezone=True), nullable=False),
        sa.Column('computer_id', sa.Integer(), nullable=True),
        sa.Column('samples', sa.Integer(), nullable=False),
        sa.Column('cpu_seconds', sa.Float(), nullable=False),
        sa.Column('memory_mb_sum', sa.Float(), nullable=False),
        sa.Column('memory_mb_peak', sa.Float(), nullable=False),
        sa.Column('disk_mb_sum', sa.Float(), nullable=False),
        sa.Column('disk_mb_peak', sa.Float(), nullable=False),
        sa.Column('net_in_bytes', sa.BigInteger(), nullable=False),
        sa.Column('net_out_bytes', sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(['instance_id'], ['instances.id'], ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['computer_id'], ['computers.id'], ondelete='SET NULL'),
        sa.PrimaryKeyConstraint('instance_id', 'hour'),
    )
    op.create_index('ix_usage_hourly_computer_hour', 'usage_hourly', ['computer_id', 'hour'])
    op.create_index('ix_usage_hourly_hour', 'usage_hourly', ['hour'])


def downgrade():
    op.drop_table('usage_hourly')
    op.drop_table('usage_samples')
