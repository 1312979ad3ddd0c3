"""instance names in DNS (relative to the master's zone)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26 01:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.add_column(sa.Column('hostname', sa.String(length=128), nullable=True))
        batch_op.create_index('ux_instances_hostname', ['hostname'], unique=True)


def downgrade():
    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.drop_index('ux_instances_hostname')
        batch_op.drop_column('hostname')
