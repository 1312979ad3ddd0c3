"""lost nodes: when the master marked a computer lost (it stopped polling)

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-26 11:20:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('computers') as batch:
        batch.add_column(sa.Column('lost_at', sa.DateTime(timezone=True), nullable=True))


def downgrade():
    with op.batch_alter_table('computers') as batch:
        batch.drop_column('lost_at')
