"""Invoices over HTTP, on SQLite and PostgreSQL (issue 14): the current month's draft,
months closed with sequential numbers, lives that cross a month boundary, metered lines,
credit notes, CSV, the currency. The tests control the clock by writing the periods
and the monthly usage of an instance with the times they choose (the master's own
clock decides only what is "now")."""

import datetime as dt

import requests

from slapnode.master.core import Master
from slapnode.master.models import InstancePeriod, UsageMonthly

from .conftest import run_cli, unique_name
from .test_master_api import expect_error

UTC = dt.timezone.utc


def priced_release(master, price="31.00", cpu="0.01", disk="0"):
    title = unique_name("paid")
    url = f"http://releases.example/{title}/software.cfg"
    master.client().add_software(url, title, price, "priced", None, cpu, disk)
    return url


def backdate(master, instance_id, start, end, cpu_seconds=None, month=None):
    """Give the instance one period [start, end) and, optionally, a month's CPU time."""
    in_process = Master(master.db_url)
    try:
        def write(session):
            for row in session.query(InstancePeriod).filter_by(instance_id=instance_id):
                row.started_at, row.ended_at = start, end
            if cpu_seconds is not None:
                session.add(UsageMonthly(instance_id=instance_id, computer_id=None, month=month,
                                         cpu_seconds=cpu_seconds, memory_mb_seconds=0,
                                         disk_mb_seconds=0))
        in_process.write(write)
    finally:
        in_process.dispose()


def test_the_current_month_is_a_draft_that_grows(master, make_node):
    url = priced_release(master)
    name, token = master.new_user()
    alice = master.client(token)
    node = make_node(partitions=1, owner=token, scope="personal")
    alice.request_instance(title="draft-me", software=url, node={"computer": node.name})
    first = alice.show_invoice("draft")
    assert first["kind"] == "draft" and first["number"] is None and first["user"] == name
    assert [line["title"] for line in first["lines"]] == ["draft-me"]
    listed = alice.list_invoices()
    assert listed[0]["number"] == "draft" and listed[0]["month"] == first["month"]
    # a second later the draft counts more of the month (31.00 a month is 1 cent every
    # ~86 s: compare the seconds it counts, which move every second)
    import re
    import time

    def seconds(view):
        return int(re.search(r"\((\d+) s of the month", view["lines"][0]["description"]).group(1))
    time.sleep(1.1)
    assert seconds(alice.show_invoice("draft")) > seconds(first)
    assert "is not over yet" in expect_error(409, master.client().close_invoices, first["month"])


def test_closing_months_issues_numbered_immutable_invoices_split_at_the_boundary(master, make_node):
    url = priced_release(master, price="31.00", cpu="0.01")
    name, token = master.new_user()
    alice = master.client(token)
    node = make_node(partitions=1, owner=token, scope="personal")
    made = alice.request_instance(title="crosses", software=url, node={"computer": node.name})
    instance_id = node.instance_on("slappart0")["id"]
    assert made["title"] == "crosses"
    backdate(master, instance_id, dt.datetime(2025, 1, 21, tzinfo=UTC),
             dt.datetime(2025, 2, 15, tzinfo=UTC), cpu_seconds=7200.0, month="2025-01")
    draft = alice.show_invoice("draft", month="2025-01")
    assert draft["total"] == "11.02"                          # 11 of 31 days + 2 CPU-hours
    admin = master.client()
    january = admin.close_invoices("2025-01")["issued"]
    february = admin.close_invoices("2025-02")["issued"]
    mine_jan = [n for n in january if admin.show_invoice(n)["user"] == name]
    mine_feb = [n for n in february if admin.show_invoice(n)["user"] == name]
    assert len(mine_jan) == 1 and len(mine_feb) == 1
    jan, feb = alice.show_invoice(mine_jan[0]), alice.show_invoice(mine_feb[0])
    assert jan["number"].startswith("INV-") and int(feb["number"][4:]) > int(jan["number"][4:])
    assert (jan["total"], feb["total"]) == ("11.02", "15.50")
    assert [line["kind"] for line in jan["lines"]] == ["subscription", "cpu"]
    assert jan["lines"][0]["period_end"].startswith("2025-02-01T00:00:00")
    assert feb["lines"][0]["period_start"].startswith("2025-02-01T00:00:00")
    # closing again issues nothing new for her; the issued invoice does not change
    again = admin.close_invoices("2025-01")["issued"]
    assert not set(again) & set(mine_jan)
    assert alice.show_invoice(mine_jan[0]) == jan
    numbers = [row["number"] for row in alice.list_invoices()]
    assert numbers[0] == "draft" and mine_jan[0] in numbers and mine_feb[0] in numbers
    # a correction is a credit note that references the invoice, once
    note = admin.credit_invoice(jan["number"], "billed twice by mistake")
    assert note["kind"] == "credit" and note["number"].startswith("CN-")
    assert note["credits"] == jan["number"] and note["total"] == "-11.02"
    assert "already credited" in expect_error(409, admin.credit_invoice, jan["number"], "again")
    listed = {row["number"]: row for row in alice.list_invoices()}
    assert listed[note["number"]]["credits"] == jan["number"] and listed[note["number"]]["kind"] == "credit"
    assert alice.show_invoice(jan["number"])["total"] == "11.02"
    # only its owner and admins see an invoice; only admins close and credit
    _, other = master.new_user()
    assert "no invoice" in expect_error(404, master.client(other).show_invoice, jan["number"])
    expect_error(403, alice.close_invoices, "2025-03")
    expect_error(403, alice.credit_invoice, feb["number"], "please")
    expect_error(422, admin.close_invoices, "2025-13")
    history = [e["action"] for e in alice.instance_history("crosses")]
    assert "requested" in history


def test_an_invoice_downloads_as_csv(master, make_node):
    url = priced_release(master, price="10.00", cpu="0")
    _, token = master.new_user()
    alice = master.client(token)
    node = make_node(partitions=1, owner=token, scope="personal")
    alice.request_instance(title="csv, \"quoted\"", software=url, node={"computer": node.name})
    answer = requests.get(f"{master.url}/api/v1/invoices/draft", params={"format": "csv"},
                          headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/csv")
    rows = answer.text.splitlines()
    assert rows[0].startswith("number,kind,month,currency") and '"csv, ""quoted"""' in rows[1]
    assert rows[-1].split(",")[5] == "total"
    cli = run_cli(["invoice", "show", "draft", "--csv"], master=master.url, token=token)
    assert cli.exit_code == 0 and cli.stdout.splitlines()[0] == rows[0]


def test_the_currency_is_set_at_init_and_a_bad_one_is_refused(tmp_path):
    bad = run_cli(["master", "init", "--data-dir", str(tmp_path / "a"), "--currency", "EURO"])
    assert bad.exit_code == 2 and "ISO 4217" in bad.stderr
    assert not (tmp_path / "a").exists()
    good = run_cli(["master", "init", "--data-dir", str(tmp_path / "b"), "--currency", "chf"])
    assert good.exit_code == 0, good.stderr
    from slapnode.master import settings
    in_process = Master(f"sqlite:///{tmp_path / 'b' / 'master.db'}")
    try:
        with in_process.read() as session:
            assert settings.currency(session) == "CHF"
    finally:
        in_process.dispose()


def test_computers_earn_credit_for_other_users_work_only(master, make_node):
    from slapnode.client import Client

    url = priced_release(master, price="0", cpu="0")
    owner_name, owner_token = master.new_user()
    owner = master.client(owner_token)
    node = make_node(partitions=2, owner=owner_token, scope="public")
    _, guest_token = master.new_user()
    guest = master.client(guest_token)
    guest.request_instance(title="science", software=url, node={"computer": node.name})
    owner.request_instance(title="own", software=url, node={"computer": node.name})
    ids = {p["instance"]["title"]: (p["reference"], p["instance"]["id"])
           for p in node.desired()["partitions"] if p["instance"]}
    for title in ("science", "own"):          # each used 2 CPU-hours
        reference, instance_id = ids[title]
        for cpu in (0, 7200):
            node.client.report(instances=[{"partition": reference, "instance_id": instance_id,
                                           "status": "ready", "usage": {"cpu_seconds": cpu,
                                                                        "memory_mb": 0}}])
    (mine,) = owner.computer_credit()
    assert (mine["computer"], mine["cpu_hours"], mine["credit"]) == (node.name, 2.0, "2.00")
    assert owner.computer_credit(node.name)[0]["credit"] == "2.00"
    board = {row["owner"]: row for row in guest.credit_top(limit=1000)}
    assert board[owner_name]["credit"] == "2.00" and board[owner_name]["rank"] >= 1
    assert guest.computer_credit() == []                      # the guest owns no computer
    assert guest.computer_credit(node.name)[0]["credit"] == "2.00"   # public: she may see it
    _, stranger = master.new_user()
    private = make_node(partitions=1, owner=owner_token, scope="personal")
    assert "neither yours nor open" in expect_error(
        403, Client(master.url, stranger).computer_credit, private.name)


# -- the catalog: versions, and what a release says about itself -------------------------

def test_a_title_has_versions_and_new_instances_get_the_newest(master, make_node):
    admin = master.client()
    title = unique_name("vers")
    urls = {v: f"http://releases.example/{title}/{v}/software.cfg" for v in ("1.0", "1.10", "1.9")}
    for version, url in urls.items():
        admin.add_software(url, title, version=version)
    assert "already has" in expect_error(409, admin.add_software,
                                         "http://releases.example/other.cfg", title, version="1.9")
    shown = admin.show_software(title)
    assert shown["version"] == "1.10" and shown["versions"] == ["1.0", "1.9", "1.10"]
    assert admin.show_software(title, version="1.0")["url"] == urls["1.0"]
    _, token = master.new_user()
    alice = master.client(token)
    node = make_node(partitions=1, owner=token, scope="personal")
    made = alice.request_instance(title="v", software=title, node={"computer": node.name})
    assert made["software"] == urls["1.10"]
    assert alice.request_instance(title="v", software=title,
                                  node={"computer": node.name})["changed"] is False
    moved = alice.request_instance(title="v", software=title, version="1.9",
                                   node={"computer": node.name})
    assert moved["software"] == urls["1.9"] and moved["changed"] is True
    assert node.instance_on("slappart0")["software"] == urls["1.9"]
    assert urls["1.9"] in [s["url"] for s in node.desired()["software"]]      # supplied for the build
    assert "has no version '3'" in expect_error(404, alice.request_instance, title="w",
                                                software=title, version="3")
    draft = alice.show_invoice("draft")
    assert [line["title"] for line in draft["lines"]].count("v") == 2     # a period per version
