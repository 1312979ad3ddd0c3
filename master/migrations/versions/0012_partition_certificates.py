"""partition certificates: what the master's CA signed for each instance's partition

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-26 09:45:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'partition_certificates',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('instance_id', sa.Integer(), nullable=False),
        sa.Column('serial', sa.String(length=48), nullable=False),
        sa.Column('names', sa.JSON(), nullable=False),
        sa.Column('not_after', sa.DateTime(timezone=True), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['instance_id'], ['instances.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('serial'),
    )
    op.create_index('ix_partition_certificates_instance_id', 'partition_certificates',
                    ['instance_id'])


def downgrade():
    op.drop_table('partition_certificates')
