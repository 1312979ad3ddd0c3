"""Instance requests: create, change, place, and show.

Owns what happens when a user requests an instance: the idempotence per
(owner, title), which changes bump the node's revision, placement onto a free
partition (or onto a host instance, for a shared one), the automatic supply
of the release to the chosen computer, and pending instances that wait for a
fitting partition. Every function runs inside the caller's write transaction.
"""

import re

from sqlalchemy import insert, select
from sqlalchemy.orm import aliased

from slapnode.states import DESTROYED, REQUESTED_STATES, InstanceStatus

from . import allocation, audit, catalog, certificates, groups, limits, names, networks
from .core import touch_computer, touch_instance
from .errors import ApiError, BadRequest, Conflict, Forbidden, Invalid, NotFound
from .models import Computer, Group, Instance, InstancePeriod, Partition, Supply, User, iso, utcnow

TYPE_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
EVERYONE = "*"
MAX_HOST_CANDIDATES = 200


def check_title(title):
    if not title or len(title) > 128 or title != title.strip():
        raise BadRequest(f"instance title {title!r} must be 1-128 characters, "
                         "without leading or trailing spaces")
    bad = limits.bad_character(title)
    if bad is not None:
        raise BadRequest(f"instance title {title!r} holds {limits.describe(bad)}; titles are "
                         "printable text, without control or bidirectional-override characters")


def check_parameters(parameters):
    """Parameters are a JSON object of finite values, at most MAX_PARAMETERS bytes."""
    if not isinstance(parameters, dict) or not all(isinstance(k, str) for k in parameters):
        raise BadRequest("parameters must be an object with string keys")
    where = limits.non_finite(parameters)
    if where:
        raise Invalid(f"parameter {where}: NaN and Infinity are not numbers; give a number or text")
    size = limits.json_size(parameters)
    if size > limits.MAX_PARAMETERS:
        raise ApiError(f"parameters are {size} bytes, more than the {limits.MAX_PARAMETERS} "
                       "allowed; keep large data out of parameters", status=413)


def check_share_with(share_with, shared):
    names = list(share_with or [])
    if names and shared:
        raise BadRequest("share_with is for host instances; a shared instance cannot be a host")
    for name in names:
        if name != EVERYONE and not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$", name):
            raise BadRequest(f"share_with {name!r}: give user names, or '*' for everyone")
    return sorted(set(names))


def may_attach(host, requester):
    """The host's owner decides who attaches: its owner always, others if it says so."""
    allowed = host.share_with or []
    return host.owner_id == requester.id or EVERYONE in allowed or requester.name in allowed


def _ensure_supply(session, computer_id, url):
    supply = session.scalars(select(Supply).where(
        Supply.computer_id == computer_id, Supply.url == url)).first()
    if supply is None:
        session.add(Supply(computer_id=computer_id, url=url))
        touch_computer(session, computer_id)
    elif supply.requested != "available":
        supply.requested = "available"
        supply.updated_at = utcnow()
        touch_computer(session, computer_id)


def _host_computer_id(session, instance):
    if instance.partition is not None:
        return instance.partition.computer_id
    if instance.host_instance_id is not None:
        host = session.get(Instance, instance.host_instance_id)
        if host is not None and host.partition is not None:
            return host.partition.computer_id
    return None


def _find_host(session, instance):
    """The oldest placed, non-shared instance of the same release and type whose
    owner lets the requester attach to it."""
    query = (select(Instance)
             .join(Partition, Partition.instance_id == Instance.id)
             .join(Computer, Partition.computer_id == Computer.id)
             .where(Instance.shared.is_(False), Instance.sr_url == instance.sr_url,
                    Instance.software_type == instance.software_type,
                    Instance.requested_state != DESTROYED,
                    *allocation.filter_clauses(instance.node_filter or {}, instance.owner_id))
             .order_by(Instance.id).limit(MAX_HOST_CANDIDATES))
    requester = instance.owner or session.get(User, instance.owner_id)
    for host in session.scalars(query):
        if may_attach(host, requester):
            return host
    return None


def place(session, instance, computer_id=None):
    """Try to give ``instance`` a partition (or a host). True when placed."""
    if instance.requested_state == DESTROYED:
        return False
    if instance.shared:
        host = _find_host(session, instance)
        if host is None:
            return False
        instance.host_instance_id = host.id
        instance.status = InstanceStatus.DEPLOYING
        touch_computer(session, host.partition.computer_id)
        touch_instance(session, instance.id)
        return True
    for _attempt in range(10):
        partition_id = allocation.find_free_partition(session, instance.sr_url,
                                                      instance.node_filter or {}, computer_id,
                                                      instance.owner_id)
        if partition_id is None:
            instance.status_reason = allocation.waiting_reason(
                session, instance.node_filter or {}, instance.owner_id)
            return False
        if allocation.claim(session, partition_id, instance.id):
            break
    else:
        return False
    session.expire(instance, ["partition"])
    partition = session.get(Partition, partition_id)
    instance.status = InstanceStatus.DEPLOYING
    instance.status_reason = ""
    instance.updated_at = utcnow()
    _ensure_supply(session, partition.computer_id, instance.sr_url)
    touch_computer(session, partition.computer_id)
    touch_instance(session, instance.id)
    _attach_waiting_shared(session, instance)
    return True


def _attach_waiting_shared(session, host):
    waiting = session.scalars(select(Instance).where(
        Instance.shared.is_(True), Instance.status == InstanceStatus.PENDING,
        Instance.sr_url == host.sr_url, Instance.software_type == host.software_type,
        Instance.requested_state != DESTROYED)).all()
    for shared in waiting:
        place(session, shared)


def place_pending(session, computer_id=None):
    """Place waiting instances, oldest first, as long as partitions are free."""
    pending = session.scalars(select(Instance).where(
        Instance.status == InstanceStatus.PENDING, Instance.shared.is_(False),
        Instance.requested_state != DESTROYED).order_by(Instance.id)).all()
    for instance in pending:
        place(session, instance, computer_id)


def free(session, instance, reason=""):
    """The instance is gone: free its partition and detach its shared instances."""
    computer_id = _host_computer_id(session, instance)
    allocation.release(session, instance.id)
    certificates.revoke(session, instance.id)
    session.expire(instance, ["partition"])
    instance.host_instance_id = None
    instance.status = InstanceStatus.DESTROYED
    instance.status_reason = reason
    instance.connection = {}
    instance.promises = []
    instance.updated_at = utcnow()
    touch_instance(session, instance.id)
    if computer_id is not None:
        touch_computer(session, computer_id)
    if not instance.shared:
        for shared in session.scalars(select(Instance).where(Instance.host_instance_id == instance.id)):
            shared.host_instance_id = None
            shared.status = InstanceStatus.PENDING
            shared.connection = {}
            touch_instance(session, shared.id)
    session.flush()
    if computer_id is not None and not instance.shared:
        place_pending(session, computer_id)


def check_request(session, title, software, software_type="default", parameters=None,
                  shared=False, node=None, state="started", share_with=(), version=None):
    """Everything about a request that needs no write: its form, its parameters against
    the release's schema (which may take time: never under the write lock).
    Returns the release's URL, or None for a destroy."""
    check_title(title)
    if state not in REQUESTED_STATES:
        raise BadRequest(f"state {state!r} must be one of {', '.join(REQUESTED_STATES)}")
    if not TYPE_RE.match(software_type or ""):
        raise BadRequest(f"software type {software_type!r} must be 1-64 letters, digits, '_', '.' or '-'")
    check_parameters(parameters or {})
    check_share_with(share_with, shared)
    try:
        allocation.parse_filter(node or {})
    except allocation.FilterError as exc:
        raise Invalid(str(exc)) from None
    if state == DESTROYED:
        return None
    release = catalog.require(session, software, version)
    catalog.validate_parameters(release, parameters or {})
    return release.url


def _open_period(session, instance, release_id, now):
    session.execute(insert(InstancePeriod).values(instance_id=instance.id, release_id=release_id,
                                                  started_at=now))


def _close_period(session, instance, now):
    """The instance's open period ends now (it was destroyed or moved to another release)."""
    for period in session.scalars(select(InstancePeriod).where(
            InstancePeriod.instance_id == instance.id, InstancePeriod.ended_at.is_(None))):
        period.ended_at = now


def _check_targets(session, user, node_filter):
    """A network the filter names is one of the requester's; a computer it names takes
    the requester's instances (else the request would wait for ever)."""
    if "network" in node_filter:
        networks.get(session, user, node_filter["network"])
    if "computer" in node_filter:
        computer = session.scalars(select(Computer).where(
            Computer.name == node_filter["computer"])).first()
        if computer is not None:
            reason = allocation.refusal(session, computer, user.id)
            if reason:
                raise Forbidden(reason)


def _group_id(session, user, group):
    if not group:
        return None
    row = groups.get(session, group)
    if not groups.is_member(session, row.id, user.id):
        raise Forbidden(f"you are not a member of group {group!r}; its owner can add you")
    return row.id


def request(session, user, title, software, software_type="default", parameters=None,
            shared=False, node=None, state="started", share_with=(), checked=False, group=None,
            version=None, move=False):
    """Create or update the instance (user, title). Returns (instance, changed).
    ``move``: an instance whose node is lost gets a partition on another node (the lost
    node destroys what it kept of it if it ever comes back).
    ``checked``: ``check_request`` already passed (parameters are not checked again).
    ``group``: a group of the requester whose members may see and manage it.
    ``version``: of the release's title (the newest for a new instance; an instance
    requested again without one stays on its version, with one it moves to it)."""
    if not checked:
        check_request(session, title, software, software_type, parameters, shared, node, state,
                      share_with, version)
    parameters = parameters or {}
    share_with = check_share_with(share_with, shared)
    node_filter = allocation.parse_filter(node or {})
    _check_targets(session, user, node_filter)
    group_id = _group_id(session, user, group)

    instance = session.scalars(select(Instance).where(
        Instance.owner_id == user.id, Instance.title == title)).first()
    alive = instance is not None and instance.status != InstanceStatus.DESTROYED

    if state == DESTROYED:
        if not alive:
            if instance is None:
                raise NotFound(f"no instance {title!r} to destroy; see `slapnode instance list`")
            return instance, False
        return instance, _set_state(session, instance, DESTROYED, by=user)

    release = catalog.require(session, software, version)
    if version is None and alive:
        current = catalog.lookup(session, instance.sr_url)
        if current is not None and current.title == release.title:
            release = current           # no --version: it stays on its version

    if not alive:
        if instance is None:
            instance = Instance(owner_id=user.id, title=title)
            session.add(instance)
        if instance.hostname is None and not shared:
            with session.no_autoflush:      # (the new row is not complete yet)
                instance.hostname = names.unique_name(
                    names.relative_name(title, user.name),
                    lambda n: session.scalars(select(Instance.id).where(
                        Instance.hostname == n)).first() is not None)
        instance.sr_url = release.url
        instance.software_type = software_type
        instance.parameters = parameters
        instance.shared = bool(shared)
        instance.share_with = share_with
        instance.node_filter = node_filter
        instance.requested_state = state
        instance.connection = {}
        instance.promises = []
        instance.status = InstanceStatus.PENDING
        instance.status_reason = ""
        instance.group_id = group_id
        instance.created_at = instance.updated_at = utcnow()
        session.flush()
        _open_period(session, instance, release.id, instance.created_at)
        audit.record(session, user, "instance", instance.id, title, "requested",
                     software=release.url, type=software_type, state=state,
                     parameters=sorted(parameters), node=node_filter, shared=bool(shared),
                     group=group)
        place(session, instance)
        touch_instance(session, instance.id)
        return instance, True

    if bool(shared) != instance.shared:
        raise Conflict(f"instance {title!r} is {'' if instance.shared else 'not '}shared; "
                       "destroy it and request it again to change that")
    changed = (instance.sr_url != release.url or instance.software_type != software_type
               or instance.parameters != parameters)
    what = {}
    if instance.sr_url != release.url:
        what["software"] = release.url
    if instance.software_type != software_type:
        what["type"] = software_type
    if instance.parameters != parameters:
        what["parameters"] = sorted(k for k in set(parameters) | set(instance.parameters or {})
                                    if parameters.get(k) != (instance.parameters or {}).get(k))
    if instance.node_filter != node_filter:
        instance.node_filter = node_filter      # applies to the next placement only
        what["node"] = node_filter
    if group is not None and instance.group_id != group_id:
        instance.group_id = group_id
        what["group"] = group
    if (instance.share_with or []) != share_with:
        instance.share_with = share_with
        _detach_refused(session, instance)
        if instance.partition is not None:
            _attach_waiting_shared(session, instance)
    if instance.sr_url != release.url:       # another release (version): another period
        now = utcnow()
        _close_period(session, instance, now)
        _open_period(session, instance, release.id, now)
    if changed:
        instance.sr_url = release.url
        instance.software_type = software_type
        instance.parameters = parameters
    if what:
        audit.record(session, user, "instance", instance.id, title, "changed", **what)
    if move:
        _move(session, instance, user)
        changed = True
    state_changed = _set_state(session, instance, state, force=changed, by=user)
    return instance, changed or state_changed


def _lost_computer(session, instance):
    """The lost computer holding ``instance``, or None."""
    if instance.partition is None:
        return None
    computer = session.get(Computer, instance.partition.computer_id)
    return computer if computer.lost_at is not None else None


def _move(session, instance, user):
    """Give an instance of a lost node a partition elsewhere: its old partition is free
    again (the lost node, back, finds it free or another's, and destroys what it kept)."""
    if instance.shared:
        raise Conflict(f"instance {instance.title!r} is shared: it follows its host")
    lost = _lost_computer(session, instance)
    if lost is None:
        where = "is not placed yet" if instance.partition is None else \
            "is on a node that is not lost"
        raise Conflict(f"instance {instance.title!r} {where}; --move is for an instance whose "
                       "node is lost (status unreachable)")
    allocation.release(session, instance.id)
    certificates.revoke(session, instance.id)
    session.expire(instance, ["partition"])
    instance.status = InstanceStatus.PENDING
    instance.status_reason = ""
    instance.connection = {}
    instance.promises = []
    audit.record(session, user, "instance", instance.id, instance.title, "moved",
                 lost_node=lost.name)
    place(session, instance)


def _detach_refused(session, host):
    """After a host changed who may attach: those no longer allowed wait again."""
    for shared in session.scalars(select(Instance).where(Instance.host_instance_id == host.id)):
        if not may_attach(host, shared.owner or session.get(User, shared.owner_id)):
            shared.host_instance_id = None
            shared.status = InstanceStatus.PENDING
            shared.connection = {}
            touch_instance(session, shared.id)
            if host.partition is not None:
                touch_computer(session, host.partition.computer_id)
    session.flush()


def _set_state(session, instance, state, force=False, by=None):
    """Record a requested state; tell the node. True if anything changed."""
    if instance.requested_state == state and not force:
        return False
    if instance.requested_state != state:
        audit.record(session, by, "instance", instance.id, instance.title,
                     "destroy requested" if state == DESTROYED else state,
                     was=instance.requested_state)
        if state == DESTROYED:              # billing ends when the user asks
            _close_period(session, instance, utcnow())
    instance.requested_state = state
    instance.updated_at = utcnow()
    touch_instance(session, instance.id)
    placed = instance.partition is not None or instance.host_instance_id is not None
    if not placed:
        if state == DESTROYED:
            free(session, instance)
        return True
    if state == DESTROYED and not instance.shared and _lost_computer(session, instance):
        free(session, instance, "destroyed while its node was lost (the node removes what it "
                                "kept when it comes back)")
        return True
    if instance.shared and state == DESTROYED:
        free(session, instance)        # the host drops it from its list at once
        return True
    if instance.partition is not None:
        _ensure_supply(session, instance.partition.computer_id, instance.sr_url)
    instance.status = InstanceStatus.DEPLOYING
    instance.status_reason = ""
    touch_computer(session, _host_computer_id(session, instance))
    return True


def change_state(session, user, title, state, owner=None):
    instance = get(session, user, title, owner)
    if instance.status == InstanceStatus.DESTROYED:
        raise Conflict(f"instance {title!r} is destroyed; request it again to recreate it")
    return instance, _set_state(session, instance, state, by=user)


def get(session, user, title, owner=None):
    """``user``'s instance ``title``, or with ``owner``, that user's instance, if it is
    in a group ``user`` belongs to (or ``user`` is an admin)."""
    if owner and owner != user.name:
        row = session.scalars(select(Instance).join(User, User.id == Instance.owner_id).where(
            User.name == owner, Instance.title == title)).first()
        if row is not None and (user.is_admin or (
                row.group_id is not None and groups.is_member(session, row.group_id, user.id))):
            return row
        raise NotFound(f"no instance {title!r} of {owner!r} that you may see; it must be in one "
                       "of your groups")
    instance = session.scalars(select(Instance).where(
        Instance.owner_id == user.id, Instance.title == title)).first()
    if instance is None:
        raise NotFound(f"no instance {title!r}; see `slapnode instance list`")
    return instance


def _visible(user):
    return (Instance.owner_id == user.id) | Instance.group_id.in_(groups.member_group_ids(user.id))


def list_for(session, user):
    """The user's instances, then those of their groups' members in those groups."""
    return session.scalars(select(Instance).where(_visible(user))
                           .order_by(Instance.owner_id != user.id, Instance.id)).all()


def summaries(session, user):
    """One line per instance of ``list_for``, in one query: title, owner, software,
    state, status, reason and where it runs (a shared instance: its host's node, when
    the host is its owner's, as ``view`` shows it)."""
    host, host_partition, host_computer = aliased(Instance), aliased(Partition), aliased(Computer)
    rows = session.execute(
        select(Instance.title, User.name, Instance.sr_url, Instance.requested_state,
               Instance.status, Instance.status_reason, Computer.name, Partition.reference,
               host.owner_id, Instance.owner_id, host_computer.name, host_partition.reference)
        .join(User, User.id == Instance.owner_id)
        .outerjoin(Partition, Partition.instance_id == Instance.id)
        .outerjoin(Computer, Computer.id == Partition.computer_id)
        .outerjoin(host, host.id == Instance.host_instance_id)
        .outerjoin(host_partition, host_partition.instance_id == host.id)
        .outerjoin(host_computer, host_computer.id == host_partition.computer_id)
        .where(_visible(user)).order_by(Instance.owner_id != user.id, Instance.id))
    result = []
    for (title, owner, url, state, status, reason, node, partition, host_owner, owner_id,
         host_node, host_part) in rows:
        if host_owner is not None:
            node, partition = (host_node, host_part) if host_owner == owner_id else (None, None)
        result.append({"title": title, "owner": owner, "software": url, "state": state,
                       "status": status, "reason": reason, "node": node, "partition": partition})
    return result


def history(session, user, title, owner=None):
    instance = get(session, user, title, owner)
    return audit.history(session, "instance", instance.id)


def view(session, instance, naming=None, owner=None):
    """What the instance's owner sees. Of a host owned by someone else, a shared
    instance shows only what the host published for it: not the host's title,
    node, partition or addresses. An instance's DNS name is in ``hostname`` and,
    unless the instance published its own, in its connection parameters."""
    naming = naming or names.Naming()
    hostname = naming.name_of(instance.hostname)
    connection = dict(instance.connection or {})
    if hostname and instance.partition is not None:
        connection.setdefault("hostname", hostname)
    partition = instance.partition
    host = None
    if instance.host_instance_id is not None:
        host = session.get(Instance, instance.host_instance_id)
        partition = host.partition if host is not None else None
        if host is not None and host.owner_id != instance.owner_id:
            host, partition = None, None
    group = session.get(Group, instance.group_id) if instance.group_id else None
    if owner is None:
        owner = instance.owner.name if instance.owner else None
    return limits.finite({
        "title": instance.title,
        "owner": owner,
        "group": group.name if group is not None else None,
        "software": instance.sr_url,
        "type": instance.software_type,
        "state": instance.requested_state,
        "status": instance.status,
        "reason": instance.status_reason,
        "node": partition.computer.name if partition is not None else None,
        "partition": partition.reference if partition is not None else None,
        "ipv4": partition.ipv4 if partition is not None else None,
        "ipv6": partition.ipv6 if partition is not None else None,
        "hostname": hostname,
        "shared": instance.shared,
        "share_with": instance.share_with or [],
        "host": host.title if host is not None else None,
        "parameters": instance.parameters,
        "node_filter": instance.node_filter,
        "connection": connection,
        "promises": instance.promises,
        "usage": instance.usage or {},
        "created_at": iso(instance.created_at),
        "updated_at": iso(instance.updated_at),
    })


