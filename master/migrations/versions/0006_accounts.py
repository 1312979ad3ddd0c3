"""accounts: e-mail, password, disabled users; named tokens with expiry; groups;
computers' allocation scope and friends; networks; instances' group; the audit trail

Computers enrolled before this revision took anyone's instances: they get the scope
``public`` so that an upgraded master keeps placing as it did (new ones are ``personal``).
Tokens made before it are named ``token-<id>``.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26 05:20:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('email', sa.String(length=254), nullable=False, server_default=''))
        batch_op.add_column(sa.Column('password_hash', sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column('disabled', sa.Boolean(), nullable=False, server_default=sa.false()))

    with op.batch_alter_table('tokens', schema=None) as batch_op:
        batch_op.add_column(sa.Column('name', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE tokens SET name = 'token-' || CAST(id AS VARCHAR(20))")
    with op.batch_alter_table('tokens', schema=None) as batch_op:
        batch_op.alter_column('name', existing_type=sa.String(length=64), nullable=False)
        batch_op.create_unique_constraint('uq_tokens_user_name', ['user_id', 'name'])

    op.create_table(
        'groups',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=64), nullable=False),
        sa.Column('owner_id', sa.Integer(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['owner_id'], ['users.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('name'),
    )
    op.create_index('ix_groups_owner_id', 'groups', ['owner_id'])
    op.create_table(
        'group_members',
        sa.Column('group_id', sa.Integer(), nullable=False),
        sa.Column('user_id', sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(['group_id'], ['groups.id'], ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['user_id'], ['users.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('group_id', 'user_id'),
    )
    op.create_index('ix_group_members_user_id', 'group_members', ['user_id'])

    with op.batch_alter_table('computers', schema=None) as batch_op:
        batch_op.add_column(sa.Column('allocation_scope', sa.String(length=16), nullable=False,
                                      server_default='personal'))
    op.execute("UPDATE computers SET allocation_scope = 'public'")
    with op.batch_alter_table('enrollment_tokens', schema=None) as batch_op:
        batch_op.add_column(sa.Column('scope', sa.String(length=16), nullable=True))
    op.create_table(
        'computer_friends',
        sa.Column('computer_id', sa.Integer(), nullable=False),
        sa.Column('group_id', sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(['computer_id'], ['computers.id'], ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['group_id'], ['groups.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('computer_id', 'group_id'),
    )
    op.create_index('ix_computer_friends_group_id', 'computer_friends', ['group_id'])
    op.create_table(
        'networks',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('owner_id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=64), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['owner_id'], ['users.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('owner_id', 'name'),
    )
    op.create_index('ix_networks_owner_id', 'networks', ['owner_id'])
    op.create_table(
        'network_computers',
        sa.Column('network_id', sa.Integer(), nullable=False),
        sa.Column('computer_id', sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(['network_id'], ['networks.id'], ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['computer_id'], ['computers.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('network_id', 'computer_id'),
    )
    op.create_index('ix_network_computers_computer_id', 'network_computers', ['computer_id'])

    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.add_column(sa.Column('group_id', sa.Integer(), nullable=True))
        batch_op.create_foreign_key('fk_instances_group_id', 'groups', ['group_id'], ['id'],
                                    ondelete='SET NULL')
        batch_op.create_index('ix_instances_group_id', ['group_id'])

    op.create_table(
        'audit_events',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('actor', sa.String(length=80), nullable=False),
        sa.Column('subject_kind', sa.String(length=16), nullable=False),
        sa.Column('subject_id', sa.Integer(), nullable=False),
        sa.Column('subject', sa.String(length=256), nullable=False),
        sa.Column('action', sa.String(length=32), nullable=False),
        sa.Column('detail', sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_audit_subject', 'audit_events', ['subject_kind', 'subject_id', 'id'])


def downgrade():
    op.drop_index('ix_audit_subject', table_name='audit_events')
    op.drop_table('audit_events')
    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.drop_index('ix_instances_group_id')
        batch_op.drop_constraint('fk_instances_group_id', type_='foreignkey')
        batch_op.drop_column('group_id')
    op.drop_table('network_computers')
    op.drop_table('networks')
    op.drop_table('computer_friends')
    with op.batch_alter_table('enrollment_tokens', schema=None) as batch_op:
        batch_op.drop_column('scope')
    with op.batch_alter_table('computers', schema=None) as batch_op:
        batch_op.drop_column('allocation_scope')
    op.drop_table('group_members')
    op.drop_table('groups')
    with op.batch_alter_table('tokens', schema=None) as batch_op:
        batch_op.drop_constraint('uq_tokens_user_name', type_='unique')
        batch_op.drop_column('expires_at')
        batch_op.drop_column('name')
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_column('disabled')
        batch_op.drop_column('password_hash')
        batch_op.drop_column('email')
