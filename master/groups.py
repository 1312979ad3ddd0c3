"""Groups: named sets of users.

Owns groups and their members. A group's owner (who made it) manages it and
is its first member. Groups are what a computer's ``friends`` scope names
(allocation) and what an instance may be shared with (``--group``: its
members see and manage it).
"""

import re

from sqlalchemy import delete, select

from . import audit
from .errors import BadRequest, Conflict, Forbidden, NotFound
from .models import Group, GroupMember, User, iso

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def check_name(name):
    if not NAME_RE.match(name or ""):
        raise BadRequest(f"group name {name!r} must be 1-64 letters, digits, '_', '.' or '-', "
                         "starting with a letter or digit")


def get(session, name):
    group = session.scalars(select(Group).where(Group.name == name)).first()
    if group is None:
        raise NotFound(f"no group {name!r}; see `slapnode group list`")
    return group


def is_member(session, group_id, user_id):
    return session.scalars(select(GroupMember.user_id).where(
        GroupMember.group_id == group_id, GroupMember.user_id == user_id)).first() is not None


def member_group_ids(user_id):
    """SQL: the ids of the groups ``user_id`` is a member of."""
    return select(GroupMember.group_id).where(GroupMember.user_id == user_id)


def _managed(session, principal, name):
    group = get(session, name)
    if group.owner_id != principal.id and not principal.is_admin:
        raise Forbidden(f"group {name!r} is managed by its owner; ask them")
    return group


def create(session, principal, name):
    check_name(name)
    if session.scalars(select(Group.id).where(Group.name == name)).first() is not None:
        raise Conflict(f"a group named {name!r} already exists; choose another name")
    group = Group(name=name, owner_id=principal.id)
    session.add(group)
    session.flush()
    session.add(GroupMember(group_id=group.id, user_id=principal.id))
    audit.record(session, principal, "group", group.id, name, "created")
    return group


def add_member(session, principal, name, user_name):
    group = _managed(session, principal, name)
    user = session.scalars(select(User).where(User.name == user_name)).first()
    if user is None:
        raise NotFound(f"no user {user_name!r}")
    if is_member(session, group.id, user.id):
        return group, False
    session.add(GroupMember(group_id=group.id, user_id=user.id))
    audit.record(session, principal, "group", group.id, name, "member added", user=user_name)
    return group, True


def remove_member(session, principal, name, user_name):
    group = _managed(session, principal, name)
    user = session.scalars(select(User).where(User.name == user_name)).first()
    if user is None or not is_member(session, group.id, user.id):
        raise NotFound(f"{user_name!r} is not a member of group {name!r}")
    if user.id == group.owner_id:
        raise Conflict(f"{user_name!r} owns group {name!r} and stays a member of it")
    session.execute(delete(GroupMember).where(GroupMember.group_id == group.id,
                                              GroupMember.user_id == user.id))
    audit.record(session, principal, "group", group.id, name, "member removed", user=user_name)
    return group


def view(session, group):
    members = session.scalars(select(User.name).join(GroupMember, GroupMember.user_id == User.id)
                              .where(GroupMember.group_id == group.id).order_by(User.name)).all()
    owner = session.get(User, group.owner_id)
    return {"name": group.name, "owner": owner.name if owner else None, "members": list(members),
            "created_at": iso(group.created_at)}


def list_for(session, principal):
    """The groups the caller owns or belongs to (all of them for an admin)."""
    query = select(Group).order_by(Group.name)
    if not principal.is_admin:
        query = query.where(Group.id.in_(member_group_ids(principal.id)))
    return [view(session, g) for g in session.scalars(query)]
