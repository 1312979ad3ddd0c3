"""release versions: a title may have several versions (URLs); unique per (title, version)

Releases made before get the version "" (one per title, as before).

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-26 05:30:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None

CONVENTION = {"uq": "uq_%(table_name)s_%(column_0_name)s"}


def upgrade():
    if op.get_bind().dialect.name == "postgresql":
        op.drop_constraint('software_releases_title_key', 'software_releases', type_='unique')
        with op.batch_alter_table('software_releases', schema=None) as batch_op:
            batch_op.add_column(sa.Column('version', sa.String(length=64), nullable=False,
                                          server_default=''))
            batch_op.create_unique_constraint('uq_software_releases_title_version',
                                              ['title', 'version'])
        return
    # SQLite: the unnamed UNIQUE(title) is named by the convention while the table is copied
    with op.batch_alter_table('software_releases', schema=None,
                              naming_convention=CONVENTION) as batch_op:
        batch_op.drop_constraint('uq_software_releases_title', type_='unique')
        batch_op.add_column(sa.Column('version', sa.String(length=64), nullable=False,
                                      server_default=''))
        batch_op.create_unique_constraint('uq_software_releases_title_version', ['title', 'version'])


def downgrade():
    with op.batch_alter_table('software_releases', schema=None) as batch_op:
        batch_op.drop_constraint('uq_software_releases_title_version', type_='unique')
        batch_op.drop_column('version')
        batch_op.create_unique_constraint('uq_software_releases_title', ['title'])
