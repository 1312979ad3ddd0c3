"""volunteer policy: whether a computer takes new instances now, why not, its instance cap

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-26 08:30:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('computers', schema=None) as batch_op:
        batch_op.add_column(sa.Column('accepting', sa.Boolean(), nullable=False,
                                      server_default=sa.text('true')))
        batch_op.add_column(sa.Column('availability', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('max_instances', sa.Integer(), nullable=True))


def downgrade():
    with op.batch_alter_table('computers', schema=None) as batch_op:
        batch_op.drop_column('max_instances')
        batch_op.drop_column('availability')
        batch_op.drop_column('accepting')
