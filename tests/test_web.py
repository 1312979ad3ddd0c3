"""My Space over HTTP against a real master (SQLite and PostgreSQL): sign-in with a
password or a token, sessions, CSRF, throttling, invitation links, every page's
authorization (another user gets 404), escaping, headers, and the request form
(fields from the schema, XML either way, errors beside the field)."""

import html
import re

import pytest
import requests

from .conftest import unique_name

CSRF = re.compile(r'name="csrf" value="([^"]+)"')
PAGES = ["/software", "/services", "/servers", "/networks", "/groups", "/invoices",
         "/invoices/draft", "/account"]


class Browser:
    """A cookie-keeping HTTP client that reads each page's CSRF token, as a browser would."""

    def __init__(self, master):
        self.base = master.url
        self.http = requests.Session()
        self.http.trust_env = False
        self.csrf = None

    def get(self, path, **kwargs):
        answer = self.http.get(self.base + path, timeout=10, **kwargs)
        found = CSRF.search(answer.text)
        if found:
            self.csrf = found.group(1)
        return answer

    def post(self, path, data=None, csrf=True, **kwargs):
        data = dict(data or {})
        if csrf:
            data.setdefault("csrf", self.csrf)
        return self.http.post(self.base + path, data=data, timeout=10, **kwargs)

    def sign_in(self, token=None, name=None, password=None):
        self.get("/login")
        if token:
            return self.post("/login", {"method": "token", "token": token})
        return self.post("/login", {"method": "password", "name": name, "password": password})


def alert(answer):
    found = re.search(r'role="alert"[^>]*>([^<]*)<', answer.text)
    return html.unescape(found.group(1)) if found else ""


def field_errors(answer):
    return [html.unescape(m) for m in re.findall(r'class="field-error"[^>]*>([^<]+)<', answer.text)]


@pytest.fixture
def person(master):
    """A new user, signed in with a token in a browser of their own."""
    name, token = master.new_user()
    browser = Browser(master)
    assert browser.sign_in(token=token).status_code == 200
    browser.name, browser.token = name, token
    return browser


def test_pages_need_a_session_and_answer_with_the_usual_headers(master):
    browser = Browser(master)
    for path in PAGES + ["/admin/users"]:
        answer = browser.get(path, allow_redirects=False)
        assert answer.status_code == 303 and answer.headers["location"].startswith("/login?next=")
    page = browser.get("/login")
    assert page.status_code == 200
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy
    assert "frame-ancestors 'none'" in policy
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["x-frame-options"] == "DENY"
    # the API keeps answering JSON errors
    assert browser.get("/api/v1/instances").json()["detail"].startswith("no token")


def test_sign_in_with_password_and_token_sign_out_and_revoke(master):
    name, token = master.new_user()
    master.client().set_password(name, "correct horse battery")
    browser = Browser(master)
    wrong = browser.sign_in(name=name, password="not the one at all")
    assert wrong.status_code == 401 and alert(wrong) == "wrong user name or password"
    assert browser.sign_in(name="nobody-" + name, password="whatever-long").status_code == 401
    good = browser.sign_in(name=name, password="correct horse battery")
    assert good.status_code == 200 and good.url.endswith("/services")
    cookie = next(c for c in browser.http.cookies if c.name == "slapnode_session")
    assert cookie.has_nonstandard_attr("HttpOnly") and not cookie.secure
    assert "samesite=lax" in good.history[0].headers["set-cookie"].lower()
    assert browser.get("/account").status_code == 200
    # sign out: the same cookie no longer works
    stolen = cookie.value
    assert browser.post("/logout").status_code == 200
    again = requests.get(master.url + "/account", cookies={"slapnode_session": stolen},
                         allow_redirects=False, timeout=5)
    assert again.status_code == 303
    # a session opened with a token ends when the token is revoked
    other = Browser(master)
    assert other.sign_in(token=token).status_code == 200
    master.client(token).create_token("spare")
    assert other.get("/account").status_code == 200
    master.client(token).revoke_token("default")
    assert other.get("/account", allow_redirects=False).status_code == 303


def test_failed_sign_ins_are_throttled(master):
    name, _token = master.new_user()
    master.client().set_password(name, "the right password")
    browser = Browser(master)
    for _ in range(5):
        assert browser.sign_in(name=name, password="wrong password!").status_code == 401
    refused = browser.sign_in(name=name, password="the right password")
    assert refused.status_code == 429 and "too many failed sign-ins" in alert(refused)


def test_forms_refuse_a_missing_or_foreign_csrf_token(master, person):
    assert person.post("/account/tokens", {"name": "x"}, csrf=False).status_code == 403
    refused = person.post("/account/tokens", {"name": "x", "csrf": "forged"})
    assert refused.status_code == 403 and "reload the page" in alert(refused)
    # sign-in without the double-submit cookie
    fresh = requests.post(master.url + "/login", data={"method": "token", "token": person.token,
                                                      "csrf": "guess"}, timeout=5)
    assert fresh.status_code == 403
    person.get("/account")
    made = person.post("/account/tokens", {"name": "laptop", "days": "30"})
    assert made.status_code == 201 and re.search(r"snu_[\w-]+", made.text)


def test_invitation_link_sets_the_password_once(master):
    name, _token = master.new_user()
    made = master.cli("user", "invite", name)
    assert made.exit_code == 0, made.stderr
    link = made.stdout.strip().splitlines()[-1]
    assert link.startswith(master.url + "/invite/")
    path = link[len(master.url):]
    browser = Browser(master)
    assert name in browser.get(path).text
    short = browser.post(path, {"password": "short", "repeat": "short"})
    assert short.status_code == 400 and "at least 10 characters" in alert(short)
    done = browser.post(path, {"password": "a fine long password", "repeat": "a fine long password"})
    assert done.status_code == 200 and "/services?notice=Your+password+is+set" in done.url
    assert browser.get(path).status_code == 404         # used up
    assert Browser(master).sign_in(name=name, password="a fine long password").status_code == 200
    assert master.cli("user", "invite", "nobody-" + name).exit_code == 1


def test_another_user_gets_404_on_every_page_of_someone_else(master, make_node, catalog_hello):
    owner_name, owner_token = master.new_user()
    owner = Browser(master)
    owner.sign_in(token=owner_token)
    node = make_node(1, owner=owner_token, scope="personal")
    master.client(owner_token).request_instance(title="private-one", software=catalog_hello)
    intruder = Browser(master)
    intruder_name, intruder_token = master.new_user()
    intruder.sign_in(token=intruder_token)
    for path in (f"/services/private-one", f"/services/private-one?owner={owner_name}",
                 f"/servers/{node.name}", "/invoices/INV-000001", "/admin/users", "/admin/catalog",
                 "/admin/supplies", "/admin/computers"):
        answer = intruder.get(path)
        assert answer.status_code == 404, path
    # nor does the live stream tell anything about it
    with intruder.http.get(f"{master.url}/web/events?title=private-one&owner={owner_name}",
                           stream=True, timeout=10) as stream:
        lines = stream.iter_lines(decode_unicode=True)
        assert [next(lines) for _ in range(4)][2:] == ["event: gone", "data: {}"]
    assert owner.get("/services/private-one").status_code == 200
    assert owner.get(f"/servers/{node.name}").status_code == 200
    # changing it is refused the same way
    intruder.get("/services")
    assert intruder.post("/services/private-one/state", {"state": "stopped",
                                                         "owner": owner_name}).status_code == 404
    assert master.client(owner_token).show_instance("private-one")["state"] == "started"


def test_html_in_titles_and_connection_values_is_shown_as_text(master, make_node, catalog_hello, person):
    node = make_node(1, owner=person.token, scope="personal")
    title = '<script>alert(1)</script>"x'
    master.client(person.token).request_instance(title=title, software=catalog_hello,
                                                 node={"computer": node.name})
    item = node.desired()["partitions"][0]
    node.report_instance(item["reference"], item["instance"]["id"], "ready",
                         connection={"url": "javascript:alert(2)", "note": "<img src=x onerror=alert(3)>",
                                     "password": "s3cret<b>"})
    listing = person.get("/services").text
    assert "<script>alert(1)" not in listing and "&lt;script&gt;alert(1)&lt;/script&gt;" in listing
    page = person.get("/services/" + requests.utils.quote(title, safe="")).text
    assert "<img src=x" not in page and "&lt;img src=x onerror=alert(3)&gt;" in page
    assert 'href="javascript:' not in page          # only http(s) values become links
    assert "<details><summary>Reveal</summary>" in page and "s3cret&lt;b&gt;" in page


def test_request_form_from_the_schema_with_xml_both_ways(master, make_node, catalog_hello, person):
    node = make_node(3, owner=person.token, scope="personal")
    title = master.client().show_software(catalog_hello)["title"]
    page = person.get(f"/software/{title}")
    assert page.status_code == 200
    assert 'name="p:name"' in page.text and "Who the instance says hello to." in page.text
    assert re.search(r"There is space! \d+ free partitions? fit this choice", page.text)
    assert f'<option value="{node.name}">{node.name} (3 free)</option>' in page.text
    assert person.get(f"/web/space?computer={node.name}").json() == {"free": 3}
    # the master's message beside the field it names
    bad = person.post(f"/software/{title}", {"title": "too-long", "p:name": "x" * 300,
                                             "xml": "<instance></instance>",
                                             "xml_shown": "<instance></instance>"})
    assert bad.status_code == 422
    assert field_errors(bad) == ["name: the value (300 characters) is too long"]
    # a pasted SlapOS file (JSON-in-XML form) wins over the untouched form
    pasted = '<?xml version="1.0"?><instance><parameter id="_">{"name": "Grace"}</parameter></instance>'
    made = person.post(f"/software/{title}", {"title": "from-xml", "p:name": "", "xml": pasted,
                                              "xml_shown": "<instance></instance>"})
    assert made.status_code == 200 and made.url.endswith("/services/from-xml?notice="
                                                         "Requested.+It+becomes+ready+without+reloading+this+page.")
    assert master.client(person.token).show_instance("from-xml")["parameters"] == {"name": "Grace"}
    # three at once from the form, with a computer chosen
    person.get(f"/software/{title}")
    many = person.post(f"/software/{title}", {"title": "w", "count": "2", "p:name": "Ada",
                                              "computer": node.name, "xml": "<instance></instance>",
                                              "xml_shown": "<instance></instance>"})
    assert many.status_code == 200
    shown = {i["title"]: i for i in master.client(person.token).list_instances()}
    assert shown["w-1"]["parameters"] == {"name": "Ada"} and "w-2" in shown
    # the sync helper: XML -> values (unknown parameters listed) and values -> XML
    sync = person.http.post(master.url + "/web/parameters", timeout=5,
                            headers={"X-CSRF-Token": person.csrf},
                            json={"release": title, "xml": '<instance><parameter id="name">Bo</parameter>'
                                                           '<parameter id="extra">1</parameter></instance>'})
    assert sync.json() == {"values": {"name": "Bo"}, "extras": ["extra"]}
    sync = person.http.post(master.url + "/web/parameters", timeout=5,
                            headers={"X-CSRF-Token": person.csrf},
                            json={"release": title, "values": {"name": "Cy"}})
    assert sync.json()["xml"] == '<instance>\n  <parameter id="name">Cy</parameter>\n</instance>'
    broken = person.http.post(master.url + "/web/parameters", timeout=5,
                              headers={"X-CSRF-Token": person.csrf},
                              json={"release": title, "xml": "<instance><parameter>"})
    assert "malformed XML" in broken.json()["error"]
    assert person.http.post(master.url + "/web/parameters", json={"release": title, "values": {}},
                            timeout=5).status_code == 403


def test_destroy_needs_the_title_typed(master, make_node, catalog_hello, person):
    make_node(1, owner=person.token, scope="personal")
    master.client(person.token).request_instance(title="keep-me", software=catalog_hello)
    person.get("/services/keep-me")
    refused = person.post("/services/keep-me/state", {"state": "destroyed", "confirm": "keep"})
    assert refused.status_code == 400 and "type its title" in alert(refused)
    assert master.client(person.token).show_instance("keep-me")["state"] == "started"
    stopped = person.post("/services/keep-me/state", {"state": "stopped"})
    assert stopped.status_code == 200 and "Stopping." in stopped.text
    person.post("/services/keep-me/state", {"state": "destroyed", "confirm": "keep-me"})
    assert master.client(person.token).show_instance("keep-me")["state"] == "destroyed"


def test_servers_networks_groups_and_enrollment_command(master, person):
    name = unique_name("box")
    person.get("/servers")
    made = person.post("/servers", {"name": name, "partitions": "4", "scope": "friends"})
    assert made.status_code == 201
    command = html.unescape(re.search(r'id="enroll-command">([^<]+)<', made.text).group(1))
    assert command.startswith(f"slapnode node register --master {master.url} --token sne_")
    assert f"--name {name} --partitions 4" in command
    person.get("/networks")
    assert person.post("/networks", {"name": "lab"}).status_code == 200
    assert "lab" in person.get("/networks").text
    person.get("/groups")
    person.post("/groups", {"name": unique_name("g")})
    taken = person.post("/groups", {"name": "bad name!"})
    assert taken.status_code == 400 and "group name" in alert(taken)


def test_admin_adds_a_release_from_its_url_with_the_schema_beside_it(master):
    browser = Browser(master)
    browser.sign_in(token=master.admin_token)
    browser.get("/admin/catalog")
    title = unique_name("web-hello")
    url = f"{master.url}/software-releases/hello/software.cfg?{title}"
    added = browser.post("/admin/catalog", {"url": url, "title": title, "price": "2.50"})
    assert added.status_code == 200 and "with its parameter schema" in added.text
    shown = master.client().show_software(title)
    assert shown["has_schema"] and shown["price_per_month"] == "2.50"
    refused = browser.post("/admin/catalog", {"url": "file:///etc/passwd", "title": "x"})
    assert refused.status_code == 400 and "http(s) URL" in alert(refused)


def test_api_docs_are_served_without_any_other_host(master):
    page = requests.get(master.url + "/api/v1/docs", timeout=5)
    assert page.status_code == 200
    sources = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert sources and all(s.startswith("/") for s in sources)
    for source in sources:
        assert requests.get(master.url + source, timeout=5).status_code == 200, source
