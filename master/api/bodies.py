"""Request bodies of the API (pydantic). Unknown fields are refused; numbers are
finite and integers fit the database (``limits``)."""

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from slapnode.states import REQUESTED_STATES, SUPPLY_REQUESTS, InstanceStatus, SupplyStatus

from ..limits import MAX_INT

ID = Field(ge=1, le=MAX_INT)


def one_of(values):
    """A pattern accepting exactly ``values`` (the states module is the one source)."""
    return "^(" + "|".join(values) + ")$"


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class UserCreate(Body):
    name: str = Field(min_length=1, max_length=64)
    admin: bool = False
    email: str = Field(default="", max_length=254)


class UserChange(Body):
    disabled: bool | None = None
    email: str | None = Field(default=None, max_length=254)


class PasswordSet(Body):
    password: str = Field(min_length=1, max_length=1024)


class TokenCreate(Body):
    name: str = Field(min_length=1, max_length=64)
    expires_at: datetime | None = None


class NameBody(Body):
    name: str = Field(min_length=1, max_length=64)


class MemberAdd(Body):
    user: str = Field(min_length=1, max_length=64)


class NetworkComputerAdd(Body):
    computer: str = Field(min_length=1, max_length=64)


class SoftwareCreate(Body):
    url: str = Field(min_length=1, max_length=1024)
    title: str = Field(min_length=1, max_length=128)
    description: str = Field(default="", max_length=10000)
    price: str = Field(default="0", max_length=32)
    price_cpu_hour: str = Field(default="0", max_length=32)
    price_disk_gb_month: str = Field(default="0", max_length=32)
    version: str = Field(default="", max_length=64)
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")


class SupplyRequest(Body):
    software: str = Field(min_length=1, max_length=1024)
    node: str = Field(min_length=1, max_length=64)
    state: str = Field(default="available", pattern=one_of(SUPPLY_REQUESTS))


class EnrollmentTokenCreate(Body):
    name: str = Field(min_length=1, max_length=64)
    scope: str | None = Field(default=None, max_length=16)


class ComputerChange(Body):
    trusted_builder: bool | None = None
    scope: str | None = Field(default=None, max_length=16)
    friends: list[str] | None = Field(default=None, max_length=100)


class InstanceRequest(Body):
    title: str = Field(min_length=1, max_length=128)
    software: str = Field(default="", max_length=1024)
    type: str = Field(default="default", max_length=64)
    parameters: dict[str, Any] = Field(default_factory=dict)
    shared: bool = False
    share_with: list[str] = Field(default_factory=list, max_length=1000)
    node: dict[str, str] = Field(default_factory=dict, max_length=32)
    state: str = Field(default="started", pattern=one_of(REQUESTED_STATES))
    group: str | None = Field(default=None, max_length=64)
    version: str | None = Field(default=None, max_length=64)
    move: bool = False          # its node is lost: a partition elsewhere


class StateChange(Body):
    state: str = Field(pattern=one_of(REQUESTED_STATES))


class Capacity(Body):
    cpus: int | None = Field(default=None, ge=0, le=1 << 20)
    ram_mb: int | None = Field(default=None, ge=0, le=MAX_INT)
    disk_gb: int | None = Field(default=None, ge=0, le=MAX_INT)
    arch: str | None = Field(default=None, max_length=32)
    distribution: str | None = Field(default=None, max_length=64)


class Enrollment(Body):
    token: str = Field(min_length=1, max_length=200)
    name: str | None = Field(default=None, max_length=64)
    capacity: Capacity = Field(default_factory=Capacity)


class PartitionItem(Body):
    reference: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    unix_user: str = Field(default="", max_length=64)
    ipv4: str = Field(default="", max_length=64)
    ipv6: str = Field(default="", max_length=64)
    tap: str = Field(default="", max_length=64)


class PartitionReport(Body):
    partitions: list[PartitionItem] = Field(max_length=10000)


class SoftwareStatus(Body):
    url: str = Field(min_length=1, max_length=1024)
    status: str = Field(pattern=one_of(SupplyStatus.REPORTABLE))
    log_tail: str | None = Field(default=None, max_length=1 << 20)


class Promise(Body):
    name: str = Field(max_length=128)
    ok: bool
    message: str = Field(default="", max_length=4096)


class InstanceStatusReport(Body):
    partition: str = Field(max_length=64)
    instance_id: int = ID
    status: str | None = Field(default=None, pattern=one_of(InstanceStatus.REPORTABLE))
    reason: str | None = Field(default=None, max_length=4096)
    connection: dict[str, Any] | None = None
    promises: list[Promise] | None = Field(default=None, max_length=100)
    usage: dict[str, float] | None = Field(default=None, max_length=16)


class SharedStatusReport(Body):
    instance_id: int = ID
    status: str | None = Field(default=None, pattern=one_of(
        tuple(s for s in InstanceStatus.REPORTABLE if s != InstanceStatus.DESTROYED)))
    reason: str | None = Field(default=None, max_length=4096)
    connection: dict[str, Any] | None = None


class Availability(Body):
    """The volunteer's policy on the node now (slapnode/policy.py)."""
    state: Literal["running", "frozen", "paused", "draining"]
    reason: str = Field("", max_length=300)
    next_change: str | None = Field(None, max_length=64)
    max_instances: int = Field(0, ge=0, le=100000)


class CertificateRequest(Body):
    partition: str = Field(max_length=64)
    instance_id: int = ID
    csr: str = Field(max_length=8192)


class MailRequest(Body):
    """A message a partition sent through its node's relay (``message``: base64)."""
    partition: str = Field(max_length=64)
    instance_id: int = ID
    sender: str = Field(max_length=320)
    recipients: list[str] = Field(min_length=1, max_length=100)
    message: str = Field(max_length=14 << 20)


class NodeReport(Body):
    availability: Availability | None = None
    software: list[SoftwareStatus] = Field(default_factory=list, max_length=1000)
    instances: list[InstanceStatusReport] = Field(default_factory=list, max_length=10000)
    shared: list[SharedStatusReport] = Field(default_factory=list, max_length=10000)


class InvoiceClose(Body):
    month: str = Field(pattern=r"^\d{4}-(0[1-9]|1[0-2])$")


class CreditNote(Body):
    reason: str = Field(min_length=1, max_length=1000)
