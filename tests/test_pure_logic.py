"""Pure decisions of the master: node filters, prices, schema coercion, states."""

from types import SimpleNamespace

import pytest

from slapnode.master import allocation, catalog
from slapnode.master.errors import BadRequest, Invalid
from slapnode.states import InstanceStatus, settled_for


def test_filter_keys_are_checked_and_numbers_parsed():
    assert allocation.parse_filter({"computer": "n1", "min-ram-mb": "512"}) == {
        "computer": "n1", "min-ram-mb": 512}
    with pytest.raises(allocation.FilterError, match="known keys"):
        allocation.parse_filter({"colour": "blue"})
    with pytest.raises(allocation.FilterError, match="whole number"):
        allocation.parse_filter({"min-cpus": "many"})
    with pytest.raises(allocation.FilterError, match="between 0 and"):
        allocation.parse_filter({"min-cpus": "-1"})
    with pytest.raises(allocation.FilterError, match="between 0 and"):
        allocation.parse_filter({"min-ram-mb": str(2**63)})     # beyond an INTEGER column


@pytest.mark.parametrize("text, cents", [("0", 0), ("4.99", 499), ("10", 1000), ("0.5", 50)])
def test_prices_are_stored_in_cents(text, cents):
    assert catalog.parse_price(text) == cents


@pytest.mark.parametrize("text", ["-1", "abc", "1.234", "nan", "inf"])
def test_bad_prices_are_refused(text):
    with pytest.raises(BadRequest):
        catalog.parse_price(text)


SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "port": {"type": "integer", "minimum": 1, "maximum": 65535},
        "use_passwd": {"type": "boolean"},
        "name": {"type": "string"},
    },
}


def test_xml_strings_are_read_as_the_schema_types():
    release = SimpleNamespace(title="t", parameter_schema=SCHEMA)
    catalog.validate_parameters(release, {"port": "8080", "use_passwd": "true", "name": "x"})


@pytest.mark.parametrize("params, field", [
    ({"port": "0"}, "port"), ({"port": "eighty"}, "port"), ({"use_passwd": "maybe"}, "use_passwd"),
    ({"colour": "blue"}, "colour"),
])
def test_schema_errors_name_the_field(params, field):
    release = SimpleNamespace(title="t", parameter_schema=SCHEMA)
    with pytest.raises(Invalid) as info:
        catalog.validate_parameters(release, params)
    assert field in info.value.message


def test_invalid_schema_is_refused():
    with pytest.raises(BadRequest, match="not valid JSON Schema"):
        catalog.check_schema({"type": "no-such-type"})


def test_settled_means_what_was_requested_or_error():
    assert settled_for("started", InstanceStatus.READY)
    assert not settled_for("started", InstanceStatus.DEPLOYING)
    assert settled_for("stopped", InstanceStatus.STOPPED)
    assert settled_for("destroyed", InstanceStatus.DESTROYED)
    assert settled_for("started", InstanceStatus.ERROR)
    assert not settled_for("destroyed", InstanceStatus.READY)


def test_migrations_match_the_models(tmp_path):
    """A model change without its Alembic migration fails here."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from slapnode.master import db as dbmod
    from slapnode.master.models import Base

    database = dbmod.Database(f"sqlite:///{tmp_path}/m.db")
    try:
        dbmod.migrate(database)
        with database.read_engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    finally:
        database.dispose()
    assert diff == []


# -- usage increments and command-line moments ----------------------------------------------

def test_usage_increments_count_a_counter_that_went_down_as_a_new_start():
    from slapnode.master.usage import increments

    assert increments(None, {"cpu_seconds": 5}) == {"cpu_seconds": 5, "net_in_bytes": 0,
                                                   "net_out_bytes": 0}
    grown = increments({"cpu_seconds": 5, "net_in_bytes": 100},
                       {"cpu_seconds": 7.5, "net_in_bytes": 40, "net_out_bytes": 9})
    assert grown == {"cpu_seconds": 2.5, "net_in_bytes": 40, "net_out_bytes": 9}
    assert increments({"cpu_seconds": 5}, {"cpu_seconds": -3})["cpu_seconds"] == 0


def test_command_line_moments_are_durations_or_dates():
    import datetime as dt

    from slapnode.cli import moments
    from slapnode.errors import UsageError

    now = dt.datetime(2027, 1, 31, 12, tzinfo=dt.timezone.utc)
    assert moments.parse("30d", "--expires", now=now) == now + dt.timedelta(days=30)
    assert moments.parse("12h", "--since", future=False, now=now) == now - dt.timedelta(hours=12)
    assert moments.parse("2027-02-01", "--expires", now=now) == dt.datetime(2027, 2, 1, tzinfo=dt.timezone.utc)
    assert moments.parse("2027-02-01T10:00+01:00", "--x", now=now).utcoffset() == dt.timedelta(hours=1)
    with pytest.raises(UsageError, match="give a duration"):
        moments.parse("soon", "--expires", now=now)


# -- software.cfg.json beside a profile --------------------------------------------------------

def test_a_slapos_software_cfg_json_names_the_default_types_request_schema(tmp_path):
    import json

    from slapnode import release_meta

    profile = tmp_path / "software.cfg"
    profile.write_text("[buildout]\n")
    assert release_meta.read(str(profile)) == (None, None, None)
    (tmp_path / "software.cfg.json").write_text(json.dumps({
        "name": "KVM", "description": "Virtual machines", "serialisation": "json-in-xml",
        "software-type": {"cluster": {"request": "cluster.json", "index": 2},
                          "default": {"request": "instance-input-schema.json", "index": 1}}}))
    schema = {"type": "object", "properties": {"ram": {"type": "integer"}}}
    (tmp_path / "instance-input-schema.json").write_text(json.dumps(schema))
    found, description, where = release_meta.read(str(profile))
    assert (found, description) == (schema, "Virtual machines")
    assert where.endswith("instance-input-schema.json")
    assert release_meta.read("file://" + str(profile))[0] == schema
    (tmp_path / "instance-input-schema.json").unlink()
    with pytest.raises(release_meta.MetaError, match="which is not there"):
        release_meta.read(str(profile))
    (tmp_path / "software.cfg.json").write_text(json.dumps(schema))       # a plain schema
    assert release_meta.read(str(profile))[0] == schema
    (tmp_path / "software.cfg.json").write_text("{nope")
    with pytest.raises(release_meta.MetaError, match="not valid JSON"):
        release_meta.read(str(profile))


def test_a_partition_keeps_its_mac_address_from_one_start_to_the_next():
    from slapnode.deploy.isolation import mac_address

    mac = mac_address("slapbr0", "10.0.0.2")
    assert mac == mac_address("slapbr0", "10.0.0.2")            # every start: the same
    assert mac.endswith(":0a:00:00:02") and len(mac.split(":")) == 6
    first = int(mac.split(":")[0], 16)
    assert first & 0x02 and not first & 0x01           # locally administered, unicast
    assert mac != mac_address("slapbr0", "10.0.0.3") != mac_address("otherbr", "10.0.0.3")


def test_the_zygote_finds_the_cgroups_of_a_containers_init():
    from pathlib import Path

    from slapnode.deploy.zygote import cgroup_dirs
    from slapnode.errors import SlapnodeError

    root = Path("/cg")
    hybrid = {"/cg/unified", "/cg/cpu,cpuacct", "/cg/systemd", "/cg/unified/a/b",
              "/cg/cpu,cpuacct/a/b", "/cg/systemd/a/b"}
    text = "2:cpu,cpuacct:/a/b\n1:name=systemd:/a/b\n0::/a/b\n"
    assert cgroup_dirs(text, root, hybrid.__contains__) == [
        Path("/cg/cpu,cpuacct/a/b"), Path("/cg/systemd/a/b"), Path("/cg/unified/a/b")]
    v2 = {"/cg/cgroup.procs", "/cg/a/b"}
    assert cgroup_dirs("0::/a/b\n", root, v2.__contains__) == [Path("/cg/a/b")]
    for bad in ("0::/a/../../etc\n", "3:memory:/a/b\n", "0::relative\n"):
        with pytest.raises(SlapnodeError):
            cgroup_dirs(bad, root, (hybrid | v2).__contains__)
