"""Computers: enrollment, ownership, partitions, supplies, the desired state, the node's reports.

Owns the node side of the master's logic: turning a one-time enrollment token
into a node credential (the computer belongs to whoever made the token), its
owner's allocation scope, taking a node's partition report (growing, and
shrinking only free partitions), administering supplies, computing a
computer's desired-state document, and taking the node's report of actual
state (software status, instance status, connection parameters, promises).
"""

import datetime as dt
import re

from sqlalchemy import func, select, update

from slapnode.states import DESTROYED, InstanceStatus, SupplyStatus

from . import allocation, audit, auth, catalog, groups, instances, limits, usage, users
from .core import touch_computer, touch_instance
from .errors import BadRequest, Conflict, Forbidden, NotFound, Unauthorized
from .models import (Computer, ComputerFriend, EnrollmentToken, Group, Instance, Partition, Supply,
                     User, iso, utcnow)

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
ENROLLMENT_LIFETIME = dt.timedelta(days=7)
LOG_TAIL_MAX = 16 * 1024


def check_name(name):
    if not NAME_RE.match(name or ""):
        raise BadRequest(f"computer name {name!r} must be 1-64 letters, digits, '_', '.' or '-', "
                         "starting with a letter or digit")


def check_scope(scope):
    if scope not in allocation.SCOPES:
        raise BadRequest(f"allocation scope {scope!r} must be one of {', '.join(allocation.SCOPES)}")


def create_enrollment_token(session, principal, name, scope=None):
    """A one-time token enrolling ``name`` for ``principal``: a new computer becomes
    theirs; an existing one (re-enrollment) only by its owner or an admin."""
    check_name(name)
    if scope is not None:
        check_scope(scope)
    existing = session.scalars(select(Computer).where(Computer.name == name)).first()
    if existing is not None and existing.owner_id != principal.id and not principal.is_admin:
        raise Forbidden(f"computer {name!r} belongs to someone else; choose another name")
    token, digest = auth.mint(auth.ENROLL_PREFIX)
    session.add(EnrollmentToken(token_hash=digest, computer_name=name, created_by=principal.id,
                                scope=scope, expires_at=utcnow() + ENROLLMENT_LIFETIME))
    return token


def enroll(session, token, name=None, capacity=None):
    """One-time token -> (computer, node credential)."""
    if not token.startswith(auth.ENROLL_PREFIX):
        raise Unauthorized("that is not an enrollment token (they start with 'sne_'); "
                           "ask the admin for one: `slapnode node token create NAME`")
    record = session.scalars(select(EnrollmentToken).where(
        EnrollmentToken.token_hash == auth.hash_token(token))).first()
    if record is None:
        raise Unauthorized("unknown enrollment token; ask the admin for a new one: "
                           "`slapnode node token create NAME`")
    if record.used_at is not None:
        raise Unauthorized("this enrollment token was already used; ask the admin for a new one")
    if users.aware(record.expires_at) < utcnow():
        raise Unauthorized("this enrollment token has expired; ask the admin for a new one")
    if name and name != record.computer_name:
        raise BadRequest(f"this token enrolls the computer {record.computer_name!r}, not {name!r}; "
                         "drop --name or use the matching token")
    used = session.execute(update(EnrollmentToken)
                           .where(EnrollmentToken.id == record.id, EnrollmentToken.used_at.is_(None))
                           .values(used_at=utcnow()))
    if used.rowcount != 1:
        raise Unauthorized("this enrollment token was already used; ask the admin for a new one")
    computer = session.scalars(select(Computer).where(Computer.name == record.computer_name)).first()
    if computer is None:
        computer = Computer(name=record.computer_name, owner_id=record.created_by,
                            allocation_scope=record.scope or "personal")
        session.add(computer)
    elif record.scope is not None:
        computer.allocation_scope = record.scope
    credential, digest = auth.mint(auth.NODE_PREFIX)
    computer.credential_hash = digest          # a re-enrollment rotates the credential
    computer.enrolled_at = computer.last_seen = utcnow()
    set_capacity(computer, capacity or {})
    session.flush()
    audit.record(session, auth.NodePrincipal(computer.id, computer.name), "computer", computer.id,
                 computer.name, "enrolled", scope=computer.allocation_scope)
    touch_computer(session, computer.id)
    return computer, credential


def set_capacity(computer, capacity):
    for key, kind in (("cpus", int), ("ram_mb", int), ("disk_gb", int),
                      ("arch", str), ("distribution", str)):
        if key in capacity and capacity[key] is not None:
            setattr(computer, key, kind(capacity[key]))


def get_by_name(session, name):
    computer = session.scalars(select(Computer).where(Computer.name == name)).first()
    if computer is None:
        raise NotFound(f"no computer {name!r}; see `slapnode node list`")
    return computer


def owned(session, principal, name):
    """Computer ``name`` if the caller owns it (or is an admin): its usage is theirs to see."""
    computer = get_by_name(session, name)
    if computer.owner_id != principal.id and not principal.is_admin:
        raise Forbidden(f"computer {name!r} is not yours; its owner sees its usage")
    return computer


def report_partitions(session, computer, reported):
    """Make the master's partitions of ``computer`` what the node reported.

    New ones are added, changed addresses updated, missing ones removed only
    when free; a busy one blocks the whole report (nothing changes).
    """
    seen = set()
    for item in reported:
        if item["reference"] in seen:
            raise BadRequest(f"partition {item['reference']!r} is reported twice")
        seen.add(item["reference"])
    existing = {p.reference: p for p in session.scalars(
        select(Partition).where(Partition.computer_id == computer.id))}
    for reference, partition in existing.items():
        if reference in seen:
            continue
        holder = session.get(Instance, partition.instance_id) if partition.instance_id else None
        if holder is not None:
            raise Conflict(f"partition {reference} holds instance {holder.title!r}; "
                           "it can be removed once that instance is destroyed")
    changed = False
    for reference, partition in existing.items():
        if reference not in seen:
            session.delete(partition)
            changed = True
    for item in reported:
        partition = existing.get(item["reference"])
        if partition is None:
            partition = Partition(computer_id=computer.id, reference=item["reference"])
            session.add(partition)
            changed = True
        for key in ("unix_user", "ipv4", "ipv6", "tap"):
            if getattr(partition, key) != (item.get(key) or ""):
                setattr(partition, key, item.get(key) or "")
                changed = True
    computer.last_seen = utcnow()
    if not changed:         # a re-format with nothing to do: no new revision for the node
        return
    touch_computer(session, computer.id)
    session.flush()
    instances.place_pending(session, computer.id)


def supply(session, ref, computer_name, requested="available", by=None):
    release = catalog.require(session, ref)
    computer = get_by_name(session, computer_name)
    row = session.scalars(select(Supply).where(
        Supply.computer_id == computer.id, Supply.url == release.url)).first()
    if row is None:
        if requested == DESTROYED:
            raise NotFound(f"{release.title!r} is not supplied to {computer.name!r}")
        row = Supply(computer_id=computer.id, url=release.url)
        session.add(row)
    elif row.requested == requested:
        return row
    row.requested = requested
    session.flush()
    audit.record(session, by, "supply", row.id, f"{release.title} on {computer.name}",
                 "supplied" if requested == "available" else requested)
    if requested == "available" and row.status == SupplyStatus.DESTROYED:
        row.status = SupplyStatus.PENDING
    row.updated_at = utcnow()
    touch_computer(session, computer.id)
    return row


def desired_state(session, computer, naming=None):
    """The document a node reconciles to. Pure read; no side effects."""
    from .names import Naming

    naming = naming or Naming()
    supplies = session.scalars(select(Supply).where(Supply.computer_id == computer.id)
                               .order_by(Supply.id)).all()
    partitions = session.scalars(select(Partition).where(Partition.computer_id == computer.id)
                                 .order_by(Partition.id)).all()
    held = [p.instance_id for p in partitions if p.instance_id is not None]
    by_id = {i.id: i for i in session.scalars(select(Instance).where(Instance.id.in_(held)))} if held else {}
    placed = {p.id: by_id[p.instance_id] for p in partitions if p.instance_id in by_id}
    hosts = [i.id for i in placed.values()]
    shared = {}
    if hosts:
        for item in session.scalars(select(Instance).where(Instance.host_instance_id.in_(hosts))
                                    .order_by(Instance.id)):
            shared.setdefault(item.host_instance_id, []).append({
                "id": item.id, "title": item.title, "state": item.requested_state,
                "parameters": item.parameters,
            })
    return limits.finite({
        "computer": computer.name,
        "revision": computer.revision,
        "trusted_builder": computer.trusted_builder,
        "dns": naming.document(),
        "software": [{"url": s.url, "state": s.requested, "status": s.status} for s in supplies],
        "partitions": [
            {
                "reference": p.reference,
                "instance": None if p.id not in placed else {
                    "id": placed[p.id].id,
                    "title": placed[p.id].title,
                    "hostname": naming.name_of(placed[p.id].hostname),
                    "mail_from": naming.mail_from(placed[p.id].hostname),
                    "software": placed[p.id].sr_url,
                    "type": placed[p.id].software_type,
                    "state": placed[p.id].requested_state,
                    "parameters": placed[p.id].parameters,
                    "shared_instances": shared.get(placed[p.id].id, []),
                },
            }
            for p in partitions
        ],
    })


def set_availability(computer, availability):
    """The volunteer's policy as the node reports it: a computer that is frozen, paused
    or draining takes no new instance (its current ones stay); its own cap applies."""
    computer.availability = {k: availability.get(k) for k in ("state", "reason", "next_change")}
    computer.accepting = availability.get("state") == "running"
    computer.max_instances = availability.get("max_instances") or None


def apply_report(session, computer, report):
    """Take a node's report of actual state. Entries about what this computer
    does not hold (anymore) are ignored: a node sees only its own computer."""
    computer.last_seen = utcnow()
    node = auth.NodePrincipal(computer.id, computer.name)
    if report.get("availability") is not None:
        was_accepting = computer.accepting
        set_availability(computer, report["availability"])
        if computer.accepting and not was_accepting:     # thawed, resumed, undrained
            instances.place_pending(session, computer.id)
    for item in report.get("software", []):
        _software_report(session, computer, item)
    items = report.get("instances", [])
    # one query for the partitions, one for the instances and one per usage table for the
    # whole report; nothing is flushed until the end (a big node's report is a few
    # statements, not thousands)
    holders = dict(session.execute(select(Partition.reference, Partition.instance_id).where(
        Partition.computer_id == computer.id,
        Partition.reference.in_({i["partition"] for i in items}))).all()) if items else {}
    for item in items:
        if item["partition"] not in holders:
            raise NotFound(f"this computer has no partition {item['partition']!r}")
    with session.no_autoflush:
        held = [i["instance_id"] for i in items if holders[i["partition"]] == i["instance_id"]]
        loaded = {i.id: i for i in session.scalars(select(Instance).where(Instance.id.in_(held)))} \
            if held else {}
        ingest = usage.Ingest(session, [i["instance_id"] for i in items
                                        if i.get("usage") is not None and i["instance_id"] in loaded])
        for item in items:
            instance = loaded.get(item["instance_id"])
            if instance is None or holders[item["partition"]] != instance.id:
                continue        # stale: the partition changed hands since the node looked
            _instance_report(session, instance, item, node, ingest)
    for item in report.get("shared", []):
        instance = session.get(Instance, item["instance_id"])
        host = session.get(Instance, instance.host_instance_id) if instance and instance.host_instance_id else None
        if host is None or host.partition is None or host.partition.computer_id != computer.id:
            continue
        _instance_report(session, instance, item, node)


def _software_report(session, computer, item):
    row = session.scalars(select(Supply).where(
        Supply.computer_id == computer.id, Supply.url == item["url"])).first()
    if row is None:
        return
    if item["status"] == SupplyStatus.DESTROYED and row.requested == DESTROYED:
        session.delete(row)
        touch_computer(session, computer.id)
        return
    row.status = item["status"]
    if item.get("log_tail") is not None:
        row.log_tail = item["log_tail"][-LOG_TAIL_MAX:]
    row.updated_at = utcnow()


def _instance_report(session, instance, item, node, ingest=None):
    status = item.get("status")
    if status == InstanceStatus.DESTROYED:
        if instance.requested_state == DESTROYED:
            audit.record(session, node, "instance", instance.id, instance.title, "destroyed")
            instances.free(session, instance)
        return
    if status is not None:
        if status != instance.status:
            audit.record(session, node, "instance", instance.id, instance.title, status,
                         was=instance.status, reason=(item.get("reason") or "")[:500])
        instance.status = status
        instance.status_reason = item.get("reason") or ""
    connection = item.get("connection")
    if connection is not None and limits.json_size(connection) > limits.MAX_CONNECTION:
        connection = {}
        instance.status = InstanceStatus.ERROR
        instance.status_reason = (f"the instance published more than {limits.MAX_CONNECTION // 1024} "
                                  "KiB of connection parameters; they were not kept")
    if connection is not None and connection != instance.connection:
        audit.record(session, node, "instance", instance.id, instance.title, "published",
                     keys=[key[:64] for key in sorted(connection)[:50]])     # names, not values
        instance.connection = connection
    if item.get("promises") is not None:
        instance.promises = item["promises"]
    if item.get("usage") is not None and ingest is not None:
        instance.usage = ingest.add(instance, node.computer_id, item["usage"])
    instance.updated_at = utcnow()
    touch_instance(session, instance.id)


def view(computer, total=0, used=0, owner=None, friends=()):
    return {
        "name": computer.name,
        "owner": owner,
        "scope": computer.allocation_scope,
        "friends": list(friends),
        "enrolled": computer.credential_hash is not None,
        "partitions": total,
        "free": total - used,
        "cpus": computer.cpus,
        "ram_mb": computer.ram_mb,
        "disk_gb": computer.disk_gb,
        "arch": computer.arch,
        "distribution": computer.distribution,
        "trusted_builder": computer.trusted_builder,
        "revision": computer.revision,
        "last_seen": iso(computer.last_seen),
        "lost": computer.lost_at is not None,
        "availability": computer.availability or {"state": "running", "reason": "",
                                                  "next_change": None},
        "max_instances": computer.max_instances,
    }


def list_for(session, principal, name=None):
    """Admins see every computer; a user their own and those that take their instances."""
    query = select(Computer).order_by(Computer.name)
    if name is not None:
        query = query.where(Computer.name == name)
    if not principal.is_admin:
        query = query.where((Computer.owner_id == principal.id) | allocation.SCOPE)
    rows = session.scalars(query, {"requester": principal.id}).all()
    ids = [c.id for c in rows]
    counts = dict(session.execute(select(Partition.computer_id, func.count(Partition.id))
                                  .where(Partition.computer_id.in_(ids))
                                  .group_by(Partition.computer_id)).all())
    used = dict(session.execute(select(Partition.computer_id, func.count(Partition.instance_id))
                                .where(Partition.computer_id.in_(ids))
                                .group_by(Partition.computer_id)).all())
    owners = dict(session.execute(select(User.id, User.name)).all())
    friends = {}
    for computer_id, name in session.execute(
            select(ComputerFriend.computer_id, Group.name).join(Group, Group.id == ComputerFriend.group_id)
            .where(ComputerFriend.computer_id.in_(ids)).order_by(Group.name)):
        friends.setdefault(computer_id, []).append(name)
    return [view(c, counts.get(c.id, 0), used.get(c.id, 0), owners.get(c.owner_id),
                 friends.get(c.id, ())) for c in rows]


def set_scope(session, principal, name, scope, friend_groups=None):
    """The owner (or an admin) says whose instances the computer takes; with
    ``friends``, ``friend_groups`` names the groups (kept as they are when None)."""
    check_scope(scope)
    computer = get_by_name(session, name)
    if computer.owner_id != principal.id and not principal.is_admin:
        raise Forbidden(f"computer {name!r} is not yours; its owner sets its scope")
    if friend_groups is not None:
        wanted = [groups.get(session, g) for g in dict.fromkeys(friend_groups)]
        session.execute(ComputerFriend.__table__.delete().where(
            ComputerFriend.computer_id == computer.id))
        for group in wanted:
            session.add(ComputerFriend(computer_id=computer.id, group_id=group.id))
    elif scope == "friends" and session.scalars(select(ComputerFriend.group_id).where(
            ComputerFriend.computer_id == computer.id)).first() is None:
        raise BadRequest("scope 'friends' needs the groups whose members may allocate: "
                         f"`slapnode computer scope {name} friends --group NAME`")
    before = computer.allocation_scope
    computer.allocation_scope = scope
    audit.record(session, principal, "computer", computer.id, name, "scope set", scope=scope,
                 was=before, groups=list(friend_groups) if friend_groups is not None else None)
    session.flush()
    if scope != "closed":
        instances.place_pending(session, computer.id)
    return computer


def set_trusted(session, admin, name, trusted):
    computer = get_by_name(session, name)
    if computer.trusted_builder != trusted:
        computer.trusted_builder = trusted
        audit.record(session, admin, "computer", computer.id, name,
                     "trusted" if trusted else "untrusted")
        touch_computer(session, computer.id)
    return computer


# -- lost nodes ---------------------------------------------------------------------------

def lost_reason(computer):
    """An unreachable instance's reason. Pure."""
    seen = computer.last_seen.strftime("%Y-%m-%d %H:%M:%S UTC") if computer.last_seen else "never"
    return (f"its node {computer.name} is lost (last seen {seen}); `slapnode instance request "
            "TITLE SOFTWARE --move` puts it on another node")


def mark_lost(session, now, lost_after):
    """Computers that have not been seen for ``lost_after`` seconds become lost, and their
    placed instances unreachable. Returns the names newly lost."""
    limit = now - dt.timedelta(seconds=lost_after)
    lost = session.scalars(select(Computer).where(
        Computer.lost_at.is_(None), Computer.credential_hash.is_not(None),
        Computer.last_seen.is_not(None), Computer.last_seen < limit)).all()
    for computer in lost:
        computer.lost_at = now
        audit.record(session, None, "computer", computer.id, computer.name, "lost",
                     last_seen=iso(computer.last_seen))
        reason = lost_reason(computer)
        for instance in session.scalars(select(Instance).join(
                Partition, Partition.instance_id == Instance.id).where(
                Partition.computer_id == computer.id, Instance.requested_state != DESTROYED)):
            instance.status = InstanceStatus.UNREACHABLE
            instance.status_reason = reason
            touch_instance(session, instance.id)
    return [c.name for c in lost]


def seen(session, computer_ids, now):
    """Computers that polled: their ``last_seen`` (one statement)."""
    session.execute(update(Computer).where(Computer.id.in_(sorted(computer_ids)))
                    .values(last_seen=now).execution_options(synchronize_session=False))


def back(session, computer_ids):
    """Lost computers that polled again are back (their revision bumps, so that their
    nodes report everything again). Returns their names."""
    back = session.scalars(select(Computer).where(Computer.id.in_(sorted(computer_ids)),
                                                  Computer.lost_at.is_not(None))).all()
    for computer in back:
        computer.lost_at = None
        audit.record(session, None, "computer", computer.id, computer.name, "back")
        touch_computer(session, computer.id)
    return [c.name for c in back]
