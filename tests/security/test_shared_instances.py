"""A shared instance attaches to someone else's host only with the host owner's
consent, and sees only what the host publishes for it. On SQLite and PostgreSQL."""

import pytest

from ..conftest import unique_name
from .conftest import on


@pytest.fixture
def release(master):
    url = f"http://example.invalid/{unique_name('front')}.cfg"
    master.client().add_software(url, unique_name("front"))
    return url


def _shared_ids(node):
    instance = node.desired()["partitions"][0]["instance"]
    return {s["title"] for s in instance["shared_instances"]}


def test_a_host_takes_only_its_owners_shared_instances_by_default(master, make_node, release):
    node = make_node(partitions=1)
    _, alice = master.new_user()
    _, mallory = master.new_user()
    master.client(alice).request_instance(title="front", software=release, node=on(node))
    master.client(alice).request_instance(title="mine", software=release, node=on(node), shared=True,
                                          parameters={"path": "a"})
    master.client(mallory).request_instance(title="theirs", software=release, node=on(node), shared=True,
                                            parameters={"path": "{{ 7*7 }}"})
    assert _shared_ids(node) == {"mine"}                    # the stranger's parameters stay out
    assert master.client(mallory).show_instance("theirs")["status"] == "pending"


def test_a_host_opens_to_named_users_and_closes_again(master, make_node, release):
    node = make_node(partitions=1)
    alice_name, alice = master.new_user()
    bob_name, bob = master.new_user()
    _, carol = master.new_user()
    master.client(alice).request_instance(title="front", software=release, node=on(node), share_with=[bob_name])
    master.client(bob).request_instance(title="site", software=release, node=on(node), shared=True)
    master.client(carol).request_instance(title="site", software=release, node=on(node), shared=True)
    assert _shared_ids(node) == {"site"} and \
        master.client(carol).show_instance("site")["status"] == "pending"
    host = node.desired()["partitions"][0]["instance"]
    bob_site = next(s for s in host["shared_instances"])
    node.client.report(instances=[{"partition": "slappart0", "instance_id": host["id"],
                                   "status": "ready", "connection": {"admin": "secret"}}],
                       shared=[{"instance_id": bob_site["id"], "status": "ready",
                                "connection": {"url": "https://front/bob"}}])
    view = master.client(bob).show_instance("site")
    assert view["connection"] == {"url": "https://front/bob"}
    for hidden in ("host", "node", "partition", "ipv4", "ipv6"):
        assert view[hidden] is None, hidden            # nothing of alice's host shows
    assert "secret" not in str(view)
    # alice closes the host: bob waits again, and the node no longer carries his data
    master.client(alice).request_instance(title="front", software=release, node=on(node), share_with=[])
    assert _shared_ids(node) == set()
    assert master.client(bob).show_instance("site")["status"] == "pending"
    # and opens it to everyone
    master.client(alice).request_instance(title="front", software=release, node=on(node), share_with=["*"])
    assert len(node.desired()["partitions"][0]["instance"]["shared_instances"]) == 2


def test_share_with_is_checked(master, release):
    _, alice = master.new_user()
    client = master.client(alice)
    with pytest.raises(Exception) as info:
        client.request_instance(title="x", software=release, share_with=["not a name!"])
    assert getattr(info.value, "status", None) == 400
    with pytest.raises(Exception) as info:
        client.request_instance(title="y", software=release, shared=True, share_with=["*"])
    assert getattr(info.value, "status", None) == 400
