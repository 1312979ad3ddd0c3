"""The master's tables (SQLAlchemy 2 declarative).

Owns the data model only: users and their named tokens, groups of users,
the software release catalog, computers (with their owner, allocation scope
and networks), their partitions and supplies, enrollment tokens, instances,
and the audit trail. Constraints here are the last line of defence of the
allocation rules: a partition holds at most one instance (it has one
``instance_id`` column), an instance is in at most one partition (that column
is unique), and a title is unique per owner. Free partitions are found
through a partial index, so allocation stays cheap on big nodes.
"""

import datetime as dt

from sqlalchemy import (JSON, BigInteger, Boolean, DateTime, Float, ForeignKey, Index, Integer,
                        String, Text, UniqueConstraint, text)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from slapnode.states import InstanceStatus, SupplyStatus


def utcnow():
    return dt.datetime.now(dt.timezone.utc)


def iso(moment):
    """ISO 8601 in UTC; SQLite hands back naive datetimes, which are UTC here."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.timezone.utc)
    return moment.isoformat()


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    email: Mapped[str] = mapped_column(String(254), default="")
    # argon2id (argon2-cffi's encoded form), for the web; None: no password sign-in
    password_hash: Mapped[str | None] = mapped_column(String(255), nullable=True)
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    # A disabled user's instances keep running; the user can no longer change anything.
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Token(Base):
    """A user's named API token. Only its SHA-256 is stored; revoking deletes it."""

    __tablename__ = "tokens"
    __table_args__ = (UniqueConstraint("user_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    user: Mapped[User] = relationship(lazy="joined")


class Group(Base):
    """A named set of users. Its owner manages it and is a member."""

    __tablename__ = "groups"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class GroupMember(Base):
    __tablename__ = "group_members"

    group_id: Mapped[int] = mapped_column(ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True,
                                         index=True)


class SoftwareRelease(Base):
    """A catalog entry: a buildout-style profile named by its URL; one version of a title."""

    __tablename__ = "software_releases"
    __table_args__ = (UniqueConstraint("title", "version", name="uq_software_releases_title_version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    url: Mapped[str] = mapped_column(String(1024), unique=True)
    title: Mapped[str] = mapped_column(String(128))
    version: Mapped[str] = mapped_column(String(64), default="")
    description: Mapped[str] = mapped_column(Text, default="")
    price_cents: Mapped[int] = mapped_column(Integer, default=0)   # per month, the master's currency
    # metered prices, in millionths of the currency (exact integers, never floats)
    cpu_hour_micros: Mapped[int] = mapped_column(BigInteger, default=0)
    disk_gb_month_micros: Mapped[int] = mapped_column(BigInteger, default=0)
    parameter_schema: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Computer(Base):
    """An enrolled node. ``revision`` grows whenever its desired state changes."""

    __tablename__ = "computers"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    credential_hash: Mapped[str | None] = mapped_column(String(64), unique=True, nullable=True)
    revision: Mapped[int] = mapped_column(Integer, default=1)
    cpus: Mapped[int] = mapped_column(Integer, default=0)
    ram_mb: Mapped[int] = mapped_column(Integer, default=0)
    disk_gb: Mapped[int] = mapped_column(Integer, default=0)
    arch: Mapped[str] = mapped_column(String(32), default="")
    distribution: Mapped[str] = mapped_column(String(64), default="")
    trusted_builder: Mapped[bool] = mapped_column(Boolean, default=False)
    # Whose instances it takes: personal (its owner's), friends (also the members of
    # the groups in computer_friends), public (anyone's), closed (no new ones).
    allocation_scope: Mapped[str] = mapped_column(String(16), default="personal")
    enrolled_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_seen: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # set when it stopped polling for longer than the master's --lost-after; cleared when back
    lost_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # The volunteer's policy, as the node last reported it: whether it can run a new
    # instance now (not frozen, paused or draining), why not, and its own instance cap.
    accepting: Mapped[bool] = mapped_column(Boolean, default=True, server_default=text("true"))
    availability: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    max_instances: Mapped[int | None] = mapped_column(Integer, nullable=True)


class ComputerFriend(Base):
    """A group whose members may allocate on a computer with scope ``friends``."""

    __tablename__ = "computer_friends"

    computer_id: Mapped[int] = mapped_column(ForeignKey("computers.id", ondelete="CASCADE"),
                                             primary_key=True)
    group_id: Mapped[int] = mapped_column(ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True,
                                          index=True)


class Network(Base):
    """A named set of computers of one owner; a request may target it."""

    __tablename__ = "networks"
    __table_args__ = (UniqueConstraint("owner_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class NetworkComputer(Base):
    __tablename__ = "network_computers"

    network_id: Mapped[int] = mapped_column(ForeignKey("networks.id", ondelete="CASCADE"), primary_key=True)
    computer_id: Mapped[int] = mapped_column(ForeignKey("computers.id", ondelete="CASCADE"),
                                             primary_key=True, index=True)


class EnrollmentToken(Base):
    """A one-time token that turns into a node credential for ``computer_name``."""

    __tablename__ = "enrollment_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    computer_name: Mapped[str] = mapped_column(String(64))
    # the allocation scope the computer gets when it enrolls (None: personal, or unchanged)
    scope: Mapped[str | None] = mapped_column(String(16), nullable=True)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    used_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class Partition(Base):
    """A slot on a computer, as the node reported it."""

    __tablename__ = "partitions"
    __table_args__ = (
        UniqueConstraint("computer_id", "reference"),
        # Free partitions, in allocation order.
        Index("ix_partitions_free", "computer_id", "id",
              sqlite_where=text("instance_id IS NULL"), postgresql_where=text("instance_id IS NULL")),
        # An instance is in at most one partition. Partial, so that no planner
        # uses it to look for free partitions (NULLs) instead of the index above.
        Index("ux_partitions_instance", "instance_id", unique=True,
              sqlite_where=text("instance_id IS NOT NULL"),
              postgresql_where=text("instance_id IS NOT NULL")),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    computer_id: Mapped[int] = mapped_column(ForeignKey("computers.id", ondelete="CASCADE"), index=True)
    reference: Mapped[str] = mapped_column(String(64))
    unix_user: Mapped[str] = mapped_column(String(64), default="")
    ipv4: Mapped[str] = mapped_column(String(64), default="")
    ipv6: Mapped[str] = mapped_column(String(64), default="")
    tap: Mapped[str] = mapped_column(String(64), default="")
    # The instance this partition holds. Set only by allocation.claim() (a
    # compare-and-set) and cleared when the node reports the instance destroyed.
    instance_id: Mapped[int | None] = mapped_column(
        ForeignKey("instances.id", ondelete="SET NULL"), nullable=True)

    computer: Mapped[Computer] = relationship(lazy="joined")


class Supply(Base):
    """"Have this software release on that computer" and how far the node got."""

    __tablename__ = "supplies"
    __table_args__ = (UniqueConstraint("computer_id", "url"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    computer_id: Mapped[int] = mapped_column(ForeignKey("computers.id", ondelete="CASCADE"), index=True)
    url: Mapped[str] = mapped_column(String(1024))
    requested: Mapped[str] = mapped_column(String(16), default="available")
    status: Mapped[str] = mapped_column(String(16), default=SupplyStatus.PENDING)
    log_tail: Mapped[str] = mapped_column(Text, default="")
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Instance(Base):
    """A user's request, and what the node made of it."""

    __tablename__ = "instances"
    __table_args__ = (UniqueConstraint("owner_id", "title"),
                      Index("ux_instances_hostname", "hostname", unique=True))

    id: Mapped[int] = mapped_column(primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    title: Mapped[str] = mapped_column(String(128))
    sr_url: Mapped[str] = mapped_column(String(1024))
    software_type: Mapped[str] = mapped_column(String(64), default="default")
    parameters: Mapped[dict] = mapped_column(JSON, default=dict)
    shared: Mapped[bool] = mapped_column(Boolean, default=False)
    # A host's consent: who may attach shared instances to it. [] = its owner only,
    # ["*"] = everyone, else these user names (and its owner).
    share_with: Mapped[list] = mapped_column(JSON, default=list)
    # Its name in DNS below the master's zone ("<title>.<owner>"), chosen once; unique.
    hostname: Mapped[str | None] = mapped_column(String(128), nullable=True)
    node_filter: Mapped[dict] = mapped_column(JSON, default=dict)
    # The group whose members may see and manage it (None: its owner only).
    group_id: Mapped[int | None] = mapped_column(ForeignKey("groups.id", ondelete="SET NULL"),
                                                 nullable=True, index=True)
    requested_state: Mapped[str] = mapped_column(String(16))
    host_instance_id: Mapped[int | None] = mapped_column(
        ForeignKey("instances.id", ondelete="SET NULL"), nullable=True, index=True)
    connection: Mapped[dict] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(16), default=InstanceStatus.PENDING, index=True)
    status_reason: Mapped[str] = mapped_column(Text, default="")
    promises: Mapped[list] = mapped_column(JSON, default=list)
    usage: Mapped[dict] = mapped_column(JSON, default=dict)     # cpu_seconds, memory_mb, disk_mb
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    owner: Mapped[User] = relationship(lazy="joined")
    partition: Mapped[Partition | None] = relationship(
        lazy="joined", uselist=False, viewonly=True,
        primaryjoin="Partition.instance_id == Instance.id")


class CacheEntry(Base):
    """A built software release archive uploaded by a trusted builder."""

    __tablename__ = "cache_entries"

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(64), unique=True)
    url: Mapped[str] = mapped_column(String(1024))
    platform: Mapped[str] = mapped_column(String(128))
    digest: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(Integer)
    computer_id: Mapped[int | None] = mapped_column(ForeignKey("computers.id", ondelete="SET NULL"))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class AuditEvent(Base):
    """Who changed what, when: one row per change to an instance, computer, release,
    supply, token, group, network or invoice. ``detail`` never holds a secret
    (parameter values, connection values and tokens are named, not copied)."""

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_subject", "subject_kind", "subject_id", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    actor: Mapped[str] = mapped_column(String(80))          # "alice", "node:pc1", "master"
    subject_kind: Mapped[str] = mapped_column(String(16))   # instance, computer, release, ...
    subject_id: Mapped[int] = mapped_column(Integer)
    subject: Mapped[str] = mapped_column(String(256))       # its title or name then
    action: Mapped[str] = mapped_column(String(32))
    detail: Mapped[dict] = mapped_column(JSON, default=dict)


class UsageSample(Base):
    """One usage report of one instance, as received (kept 48 h): the CPU seconds and
    network bytes since the previous one, memory and disk at that moment."""

    __tablename__ = "usage_samples"
    __table_args__ = (Index("ix_usage_samples_instance_at", "instance_id", "at"),
                      Index("ix_usage_samples_at", "at"))

    id: Mapped[int] = mapped_column(primary_key=True)
    instance_id: Mapped[int] = mapped_column(ForeignKey("instances.id", ondelete="CASCADE"))
    computer_id: Mapped[int | None] = mapped_column(ForeignKey("computers.id", ondelete="SET NULL"),
                                                    nullable=True)
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    cpu_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    memory_mb: Mapped[float] = mapped_column(Float, default=0.0)
    disk_mb: Mapped[float] = mapped_column(Float, default=0.0)
    net_in_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    net_out_bytes: Mapped[int] = mapped_column(BigInteger, default=0)


class UsageHourly(Base):
    """One instance's usage in one hour (UTC), kept 13 months: sums of CPU seconds and
    network bytes; memory and disk as sum over samples (for the average) and peak."""

    __tablename__ = "usage_hourly"
    __table_args__ = (Index("ix_usage_hourly_computer_hour", "computer_id", "hour"),
                      Index("ix_usage_hourly_hour", "hour"))

    instance_id: Mapped[int] = mapped_column(ForeignKey("instances.id", ondelete="CASCADE"),
                                             primary_key=True)
    hour: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    computer_id: Mapped[int | None] = mapped_column(ForeignKey("computers.id", ondelete="SET NULL"),
                                                    nullable=True)
    samples: Mapped[int] = mapped_column(Integer, default=0)
    cpu_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    memory_mb_sum: Mapped[float] = mapped_column(Float, default=0.0)
    memory_mb_peak: Mapped[float] = mapped_column(Float, default=0.0)
    disk_mb_sum: Mapped[float] = mapped_column(Float, default=0.0)
    disk_mb_peak: Mapped[float] = mapped_column(Float, default=0.0)
    net_in_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    net_out_bytes: Mapped[int] = mapped_column(BigInteger, default=0)


class UsageMonthly(Base):
    """What one instance used on one computer in one month (UTC), kept for invoices and
    credit: CPU seconds, and memory and disk integrated over time (MB x seconds)."""

    __tablename__ = "usage_monthly"
    __table_args__ = (UniqueConstraint("instance_id", "computer_id", "month"),
                      Index("ix_usage_monthly_computer_month", "computer_id", "month"))

    id: Mapped[int] = mapped_column(primary_key=True)
    instance_id: Mapped[int] = mapped_column(ForeignKey("instances.id", ondelete="CASCADE"))
    computer_id: Mapped[int | None] = mapped_column(ForeignKey("computers.id", ondelete="SET NULL"),
                                                    nullable=True)
    month: Mapped[str] = mapped_column(String(7))                  # YYYY-MM
    cpu_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    memory_mb_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    disk_mb_seconds: Mapped[float] = mapped_column(Float, default=0.0)


class InstancePeriod(Base):
    """A stretch of an instance's life on one release: from its request (or its move to
    the release) to its destruction (or its move to another). What subscriptions bill."""

    __tablename__ = "instance_periods"
    __table_args__ = (Index("ix_instance_periods_instance", "instance_id", "started_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    instance_id: Mapped[int] = mapped_column(ForeignKey("instances.id", ondelete="CASCADE"))
    release_id: Mapped[int | None] = mapped_column(ForeignKey("software_releases.id", ondelete="SET NULL"),
                                                   nullable=True)
    started_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class Setting(Base):
    """The master's own settings that every worker shares (the currency)."""

    __tablename__ = "settings"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(256))


class Sequence(Base):
    """Gapless counters (invoice and credit note numbers); incremented by UPDATE, which
    serialises concurrent closers on the row."""

    __tablename__ = "sequences"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger, default=0)


class Invoice(Base):
    """An issued invoice or credit note: immutable once written (a correction is a credit
    note that references the invoice). Drafts are computed, never stored."""

    __tablename__ = "invoices"
    __table_args__ = (Index("ix_invoices_user_month", "user_id", "month"),
                      Index("ux_invoices_user_month_invoice", "user_id", "month", unique=True,
                            sqlite_where=text("kind = 'invoice'"),
                            postgresql_where=text("kind = 'invoice'")))

    id: Mapped[int] = mapped_column(primary_key=True)
    number: Mapped[str] = mapped_column(String(32), unique=True)
    kind: Mapped[str] = mapped_column(String(16))               # invoice | credit
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"))
    month: Mapped[str] = mapped_column(String(7))
    currency: Mapped[str] = mapped_column(String(3))
    total_cents: Mapped[int] = mapped_column(BigInteger)
    issued_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    credits_id: Mapped[int | None] = mapped_column(ForeignKey("invoices.id", ondelete="RESTRICT"),
                                                   nullable=True)
    note: Mapped[str] = mapped_column(Text, default="")


class InvoiceLine(Base):
    __tablename__ = "invoice_lines"

    id: Mapped[int] = mapped_column(primary_key=True)
    invoice_id: Mapped[int] = mapped_column(ForeignKey("invoices.id", ondelete="RESTRICT"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    instance_id: Mapped[int | None] = mapped_column(ForeignKey("instances.id", ondelete="SET NULL"),
                                                    nullable=True)
    title: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(16))               # subscription | cpu | disk
    description: Mapped[str] = mapped_column(String(512))
    period_start: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    period_end: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    quantity: Mapped[str] = mapped_column(String(40))           # a decimal, as text
    unit: Mapped[str] = mapped_column(String(16))
    unit_price: Mapped[str] = mapped_column(String(40))         # a decimal, as text
    amount_cents: Mapped[int] = mapped_column(BigInteger)


class WebSession(Base):
    """A signed-in browser (My Space). The cookie holds a random secret; only its
    SHA-256 is stored. A session opened with a token dies with that token."""

    __tablename__ = "web_sessions"

    id: Mapped[int] = mapped_column(primary_key=True)
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_id: Mapped[int | None] = mapped_column(ForeignKey("tokens.id", ondelete="CASCADE"),
                                                 nullable=True, index=True)
    csrf: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class Invite(Base):
    """A one-time link with which a user sets their password (``slapnode user invite``)."""

    __tablename__ = "invites"

    id: Mapped[int] = mapped_column(primary_key=True)
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class PartitionCertificate(Base):
    """A certificate the master's CA signed for an instance's partition (names and
    addresses); revoked when the instance is destroyed."""

    __tablename__ = "partition_certificates"

    id: Mapped[int] = mapped_column(primary_key=True)
    instance_id: Mapped[int] = mapped_column(ForeignKey("instances.id", ondelete="CASCADE"),
                                             index=True)
    serial: Mapped[str] = mapped_column(String(48), unique=True)
    names: Mapped[list] = mapped_column(JSON, default=list)
    not_after: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
