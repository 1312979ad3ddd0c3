"""who may attach shared instances to a host instance

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25 22:40:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade():
    # [] = the host's owner only (the default); ["*"] = everyone; else user names.
    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.add_column(sa.Column('share_with', sa.JSON(), nullable=False, server_default='[]'))


def downgrade():
    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.drop_column('share_with')
