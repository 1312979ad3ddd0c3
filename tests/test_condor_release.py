"""The condor release's rendering: configuration, credentials script and published
values for a manager, a worker and a personal pool, from parameters (no daemons:
the release's packages are replaced by an empty directory). The pools themselves
run in tests/test_releases_system.py and tests/test_network_system.py."""

import json
from pathlib import Path

import pytest

from slapnode.software import engine

ROOT = Path(__file__).resolve().parent.parent
CONDOR = ROOT / "software-releases" / "condor" / "software.cfg"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The release built with the daemons' packages replaced by an empty directory."""
    base = tmp_path_factory.mktemp("condor")
    profile = base / "software.cfg"
    profile.write_text(f"[buildout]\nextends = {CONDOR}\n\n[condor]\nrecipe = slapnode:mkdir\n"
                       "environment =\n  OPENSSL_MODULES=/x/ossl-modules\n  LANG=C.UTF-8\n")
    directory = base / "sr"
    engine.build(str(profile), directory)
    return directory


def deploy(built, tmp_path, software_type, parameters, hostname="t.alice.grid.test"):
    """Expand and build the instance profile as the node would, but run no command
    (the credentials script and the launchers need the daemons)."""
    profile = built / ("instance.cfg" if software_type == "default" else f"instance-{software_type}.cfg")
    root = tmp_path / "slappart3"
    for sub in ("etc", "srv", "var/log", "tmp"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    given = {
        "slap-configuration": {"computer": "n1", "partition": "slappart3", "instance-title": "t",
                               "root-instance-title": "t", "software-type": software_type,
                               "ipv4": "10.221.0.5", "ipv6": "fd00::5", "partition-root": str(root),
                               "software-root": str(built), "user": "slapuser3", "uid": "990",
                               "gid": "991", "hostname": hostname,
                               "parameters": json.dumps(parameters), "shared-instances": "[]"},
        "slap-parameter": {k: v if isinstance(v, str) else json.dumps(v) for k, v in parameters.items()},
    }
    text = profile.read_text()
    quiet = tmp_path / "instance.cfg"
    quiet.write_text(text + "\n[pool]\nrecipe = slapnode:mkdir\npaths = ${buildout:directory}/tmp\n"
                     "[launchers]\nrecipe = slapnode:mkdir\npaths = ${buildout:directory}/tmp\n")
    engine.build(str(quiet), root, tmp_path / "cache", overrides=given)
    config = (root / "etc" / "condor_config").read_text()
    published = json.loads((root / "etc" / "publish" / "condor.json").read_text())["values"]
    return config, published, root


def settings(config):
    pairs = (line.split("=", 1) for line in config.splitlines()
             if "=" in line and not line.startswith(("#", "use ")))
    return {key.strip(): value.strip() for key, value in pairs}


def test_the_manager_runs_collector_negotiator_schedd_as_the_partition_user(built, tmp_path):
    config, published, root = deploy(built, tmp_path, "manager",
                                     {"condor-collector-name": "pool-a",
                                      "condor-admin-email": "ops@example.org"})
    s = settings(config)
    assert s["DAEMON_LIST"] == "MASTER, COLLECTOR, NEGOTIATOR, SCHEDD"
    assert "CONDOR_IDS" not in s                        # no root: everything runs as the user
    assert s["CONDOR_HOST"] == "t.alice.grid.test" and s["NETWORK_INTERFACE"] == "fd00::5"
    assert s["COLLECTOR_HOST"] == "$(CONDOR_HOST):9618" and s["USE_SHARED_PORT"] == "False"
    assert s["COLLECTOR_NAME"] == "pool-a" and s["TRUST_DOMAIN"] == "pool-a"
    assert s["CONDOR_ADMIN"] == "ops@example.org"
    assert s["LOCAL_DIR"] == f"{root}/srv/condor" and s["LOCAL_CONFIG_FILE"] == ""
    assert s["RELEASE_DIR"].endswith("/parts/condor/usr") and s["JAVA"] == ""
    assert s["SEC_DEFAULT_AUTHENTICATION_METHODS"] == "IDTOKENS, FS"
    assert s["SEC_CLIENT_AUTHENTICATION_METHODS"] == "FS"        # never a token minted here
    assert s["ALLOW_WRITE"] == "slapuser3@* condor_pool@pool-a"
    assert published == {"condor_host": "t.alice.grid.test", "condor_ipv6_address": "fd00::5",
                         "condor_instance_type": "manager",
                         "condor_submit": f"{root}/bin/condor_submit", "condor_bin": f"{root}/bin"}
    service = (root / "etc" / "supervisor.d" / "condor.conf").read_text()
    assert "condor_master -f" in service and "CONDOR_CONFIG" in service
    assert "OPENSSL_MODULES" in service and "LD_LIBRARY_PATH" not in service
    env = (root / "etc" / "condor.env").read_text()
    assert f"export CONDOR_CONFIG={root}/etc/condor_config" in env and "export LANG=C.UTF-8" in env


def test_without_dns_the_manager_is_its_ipv6_address(built, tmp_path):
    config, published, _ = deploy(built, tmp_path, "manager", {}, hostname="slappart3")
    assert settings(config)["CONDOR_HOST"] == "[fd00::5]"
    assert published["condor_host"] == "fd00::5"


def test_a_worker_joins_the_manager_it_is_given(built, tmp_path):
    apps = {"blast": {"executable": "/srv/blast/bin/blastn", "description-file": "blast.sub",
                      "files": ["db.fa"]}}
    config, published, root = deploy(built, tmp_path, "worker",
                                     {"condor-host": "fd00::2", "condor-diskspace": "512",
                                      "condor-token": "abc.def.ghi",
                                      "condor-allowed-write": "bob@other",
                                      "condor-app-list": json.dumps(apps)})
    s = settings(config)
    assert s["DAEMON_LIST"] == "MASTER, STARTD"
    assert s["CONDOR_HOST"] == "[fd00::2]" and s["RESERVED_DISK"] == "512"
    assert s["CCB_ADDRESS"] == "$(COLLECTOR_HOST)"
    assert s["SEC_CLIENT_AUTHENTICATION_METHODS"] == "IDTOKENS, FS"
    assert s["ALLOW_WRITE"] == "slapuser3@* condor_pool@slapnode-condor bob@other"
    assert s["SlapnodePartition"] == '"slapuser3@n1"'
    assert s["SLAPNODE_APP_BLAST"] == "/srv/blast/bin/blastn"
    assert published["condor_host"] == "fd00::2"
    assert published["condor_instance_type"] == "worker"
    token = root / "etc" / ".condor-token"
    assert token.read_text() == "abc.def.ghi" and token.stat().st_mode & 0o077 == 0


def test_the_default_type_follows_condor_role(built, tmp_path):
    config, published, _ = deploy(built, tmp_path, "default",
                                  {"condor-role": "worker", "condor-host": "m.alice.grid.test"})
    assert settings(config)["DAEMON_LIST"] == "MASTER, STARTD"
    assert published["condor_instance_type"] == "worker"
    config, published, _ = deploy(built, tmp_path, "default", {"condor-role": "personal"})
    assert settings(config)["DAEMON_LIST"] == "MASTER, COLLECTOR, NEGOTIATOR, SCHEDD, STARTD"
    assert published["condor_host"] == "t.alice.grid.test"


def test_parameters_never_become_configuration_lines_or_script_text(built, tmp_path):
    """A newline in a parameter cannot add a line to condor_config; no parameter is
    written into the credentials script (it reads the rendered configuration)."""
    config, _, root = deploy(built, tmp_path, "worker",
                             {"condor-host": "m.grid.test", "condor-token": "t",
                              "condor-admin-email": "a@b\nALLOW_WRITE = *",
                              "condor-collector-name": "p\nSTART = FALSE"})
    s = settings(config)
    assert s["CONDOR_ADMIN"] == "a@b ALLOW_WRITE = *" and s["START"] == "TRUE"
    assert "ALLOW_WRITE = *" not in config.splitlines()
    script = (root / "bin" / "pool.sh").read_text()
    assert "m.grid.test" not in script and "START" not in script


def test_bad_parameters_are_refused_by_the_schema():
    import jsonschema

    schema = json.loads((CONDOR.parent / "software.cfg.json").read_text())
    for bad in ({"condor-role": "boss"}, {"condor-host": "m; rm -rf /"},
                {"condor-token": "a b"}, {"condor-collector-name": "p\nX = 1"},
                {"condor-allowed-write": "$(FOO)"}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)
    jsonschema.validate({"condor-role": "personal", "condor-host": "[2001:db8::1]",
                         "condor-token": "eyJh.eyJp.sig-_"}, schema)
