"""invoices: metered prices, instance periods, monthly usage, settings, sequences,
invoices and their lines

Instances alive at the upgrade get a period from their creation (on their release).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-26 05:20:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('software_releases', schema=None) as batch_op:
        batch_op.add_column(sa.Column('cpu_hour_micros', sa.BigInteger(), nullable=False,
                                      server_default='0'))
        batch_op.add_column(sa.Column('disk_gb_month_micros', sa.BigInteger(), nullable=False,
                                      server_default='0'))
    op.create_table(
        'usage_monthly',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('instance_id', sa.Integer(), nullable=False),
        sa.Column('computer_id', sa.Integer(), nullable=True),
        sa.Column('month', sa.String(length=7), nullable=False),
        sa.Column('cpu_seconds', sa.Float(), nullable=False),
        sa.Column('memory_mb_seconds', sa.Float(), nullable=False),
        sa.Column('disk_mb_seconds', sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(['instance_id'], ['instances.id'], ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['computer_id'], ['computers.id'], ondelete='SET NULL'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('instance_id', 'computer_id', 'month'),
    )
    op.create_index('ix_usage_monthly_computer_month', 'usage_monthly', ['computer_id', 'month'])
    op.create_table(
        'instance_periods',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('instance_id', sa.Integer(), nullable=False),
        sa.Column('release_id', sa.Integer(), nullable=True),
        sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('ended_at', sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['instance_id'], ['instances.id'], ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['release_id'], ['software_releases.id'], ondelete='SET NULL'),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_instance_periods_instance', 'instance_periods', ['instance_id', 'started_at'])
    op.execute("INSERT INTO instance_periods (instance_id, release_id, started_at) "
               "SELECT i.id, r.id, i.created_at FROM instances i "
               "LEFT JOIN software_releases r ON r.url = i.sr_url "
               "WHERE i.requested_state != 'destroyed'")
    op.create_table(
        'settings',
        sa.Column('key', sa.String(length=64), nullable=False),
        sa.Column('value', sa.String(length=256), nullable=False),
        sa.PrimaryKeyConstraint('key'),
    )
    op.create_table(
        'sequences',
        sa.Column('name', sa.String(length=32), nullable=False),
        sa.Column('value', sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint('name'),
    )
    op.execute("INSERT INTO sequences (name, value) VALUES ('invoice', 0), ('credit', 0)")
    op.create_table(
        'invoices',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('number', sa.String(length=32), nullable=False),
        sa.Column('kind', sa.String(length=16), nullable=False),
        sa.Column('user_id', sa.Integer(), nullable=False),
        sa.Column('month', sa.String(length=7), nullable=False),
        sa.Column('currency', sa.String(length=3), nullable=False),
        sa.Column('total_cents', sa.BigInteger(), nullable=False),
        sa.Column('issued_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('credits_id', sa.Integer(), nullable=True),
        sa.Column('note', sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(['user_id'], ['users.id'], ondelete='RESTRICT'),
        sa.ForeignKeyConstraint(['credits_id'], ['invoices.id'], ondelete='RESTRICT'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('number'),
    )
    op.create_index('ix_invoices_user_month', 'invoices', ['user_id', 'month'])
    op.create_index('ux_invoices_user_month_invoice', 'invoices', ['user_id', 'month'], unique=True,
                    sqlite_where=sa.text("kind = 'invoice'"),
                    postgresql_where=sa.text("kind = 'invoice'"))
    op.create_table(
        'invoice_lines',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('invoice_id', sa.Integer(), nullable=False),
        sa.Column('position', sa.Integer(), nullable=False),
        sa.Column('instance_id', sa.Integer(), nullable=True),
        sa.Column('title', sa.String(length=128), nullable=False),
        sa.Column('kind', sa.String(length=16), nullable=False),
        sa.Column('description', sa.String(length=512), nullable=False),
        sa.Column('period_start', sa.DateTime(timezone=True), nullable=False),
        sa.Column('period_end', sa.DateTime(timezone=True), nullable=False),
        sa.Column('quantity', sa.String(length=40), nullable=False),
        sa.Column('unit', sa.String(length=16), nullable=False),
        sa.Column('unit_price', sa.String(length=40), nullable=False),
        sa.Column('amount_cents', sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(['invoice_id'], ['invoices.id'], ondelete='RESTRICT'),
        sa.ForeignKeyConstraint(['instance_id'], ['instances.id'], ondelete='SET NULL'),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_invoice_lines_invoice_id', 'invoice_lines', ['invoice_id'])


def downgrade():
    op.drop_table('invoice_lines')
    op.drop_table('invoices')
    op.drop_table('sequences')
    op.drop_table('settings')
    op.drop_table('instance_periods')
    op.drop_table('usage_monthly')
    with op.batch_alter_table('software_releases', schema=None) as batch_op:
        batch_op.drop_column('disk_gb_month_micros')
        batch_op.drop_column('cpu_hour_micros')
