"""My Space in a real browser (Playwright driving Debian's chromium) against a real
master and a real node (`slapnode standalone`): the journey of the issue, a
screenshot of every page, and axe-core on every page (no serious violation).

Screenshots go to ``$SLAPNODE_TEST_OUTPUT/web`` (default: ``test-output/web`` in
the checkout); docs/web.md shows some of them.
"""

import json
import os
from pathlib import Path

import pytest
import requests

from slapnode.master.web import assets

from .conftest import run_cli
from .standalone import standalone

ROOT = Path(__file__).resolve().parent.parent
OUT = Path(os.environ.get("SLAPNODE_TEST_OUTPUT", ROOT / "test-output")) / "web"
CHROMIUM = "/usr/bin/chromium"
REQUIRE = os.environ.get("SLAPNODE_REQUIRE_BROWSER") == "1"
TIMEOUT_MS = 60_000

playwright_api = pytest.importorskip("playwright.sync_api") if not REQUIRE else \
    __import__("playwright.sync_api", fromlist=["sync_playwright"])
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the journey runs a node: root")


def _axe_source():
    version = assets.wanted(dev=True)["axe-core"][0]
    if not assets.installed("axe-core", version):
        if REQUIRE:
            pytest.fail("axe-core is not installed: python -m slapnode.master.web.assets --dev")
        pytest.skip("axe-core is not installed (python -m slapnode.master.web.assets --dev)")
    return assets.path_of("axe-core", "axe.min.js").read_text()


class Pages:
    """Every page visited: a screenshot, axe-core's verdict, no CSP violation."""

    def __init__(self, page, axe):
        self.page, self.axe = page, axe
        self.violations, self.csp = {}, []
        page.on("console", lambda message: self.csp.append(message.text)
                if "Content Security Policy" in message.text else None)

    def visit(self, url, name):
        answer = self.page.goto(url)
        assert answer.ok, f"{url}: HTTP {answer.status}"
        self.check(name)

    def check(self, name):
        self.page.screenshot(path=str(OUT / f"{name}.png"), full_page=True)
        self.page.evaluate(self.axe + "\n;0")       # (evaluated over CDP: the page's CSP holds)
        result = self.page.evaluate(
            "async () => (await axe.run(document, {resultTypes: ['violations']})).violations"
            ".map(v => ({id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.length}))")
        serious = [v for v in result if v["impact"] in ("serious", "critical")]
        if serious:
            self.violations[name] = serious


def wait_text(page, selector, text):
    page.wait_for_function("([s, t]) => { const n = document.querySelector(s); "
                           "return n && n.textContent.trim() === t; }", arg=[selector, text],
                           timeout=TIMEOUT_MS)


def test_journey_in_a_real_browser(reachable_dir):
    if not Path(CHROMIUM).exists():
        if REQUIRE:
            pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (install.sh test does)")
        pytest.skip(f"{CHROMIUM} is missing")
    axe = _axe_source()
    OUT.mkdir(parents=True, exist_ok=True)
    with standalone(reachable_dir) as running, playwright_api.sync_playwright() as driver:
        running.wait_running()
        base = running.url
        browser = driver.chromium.launch(executable_path=CHROMIUM,
                                         args=["--no-proxy-server"])   # only the test's own hosts
        try:
            context = browser.new_context(viewport={"width": 1100, "height": 800})
            context.set_default_timeout(TIMEOUT_MS)
            page = context.new_page()
            pages = Pages(page, axe)

            # sign in with the admin's token
            page.goto(base + "/services")
            assert "/login" in page.url
            pages.check("login")
            page.fill("#token", running.token)
            page.click("form:has(#token) button[type=submit]")
            page.wait_for_url(base + "/services")
            pages.check("services-empty")

            # the catalog, and hello's request form
            pages.visit(base + "/software", "software")
            page.click("a[aria-label='Request hello']")
            page.wait_for_selector("#request-form")
            pages.check("release-form")

            # a pasted SlapOS XML file: the form follows
            page.fill("#xml", '<?xml version="1.0" encoding="utf-8"?>\n<instance>\n'
                              '  <parameter id="name">Grace</parameter>\n</instance>')
            page.wait_for_function("() => document.querySelector('#p-name').value === 'Grace'")
            # a bad value: the master's message beside the field
            page.fill("#title", "journey-hello")
            page.fill("#xml", '<instance><parameter id="name">' + "x" * 300 + "</parameter></instance>")
            page.wait_for_function("() => document.querySelector('#p-name').value.length === 300")
            page.click("button.primary")
            page.wait_for_selector(".field-error[data-error-for=name]")
            message = page.inner_text(".field-error[data-error-for=name]")
            assert "name: the value (300 characters) is too long" in message
            assert page.get_attribute("#p-name", "aria-invalid") == "true"
            pages.check("release-form-error")

            # request it through the form with a name; the XML view follows the form
            page.fill("#p-name", "Ada")
            page.wait_for_function("() => document.querySelector('#xml').value.includes('>Ada<')")
            page.click("button.primary")
            page.wait_for_url("**/services/journey-hello?**")
            page.evaluate("window.stillThisPage = true")
            wait_text(page, "#status", "ready")           # live: no reload
            assert page.evaluate("window.stillThisPage") is True
            link = page.wait_for_selector("#connection a[href^='http']")
            url = link.get_attribute("href")
            pages.check("instance-ready")

            # open its URL
            site = context.new_page()
            site.goto(url)
            assert site.inner_text("body").strip() == "Hello, Ada!"
            site.close()

            # stop, start
            page.click("form:has(input[value=stopped]) button")
            wait_text(page, "#status", "stopped")
            page.click("form:has(input[value=started]) button")
            wait_text(page, "#status", "ready")

            # the invoice draft: the instance's prorated line
            page.goto(base + "/invoices/draft")
            line = page.locator("table.lines tbody tr", has_text="journey-hello").first
            assert "month" in line.inner_text()
            pages.check("invoice-draft")
            page.emulate_media(media="print")           # it prints to a clean A4
            hidden = page.evaluate("() => ['header.top', 'footer.bottom', '.no-print'].map("
                                   "s => getComputedStyle(document.querySelector(s)).display)")
            assert hidden == ["none", "none", "none"]
            pdf = page.pdf(format="A4")
            assert pdf.startswith(b"%PDF") and pdf.count(b"/Type /Page\n") + pdf.count(b"/Type /Page>>") <= 1
            (OUT / "invoice-draft.pdf").write_bytes(pdf)
            page.emulate_media(media="screen")
            pages.visit(base + "/invoices", "invoices")

            # destroy: asks for the title
            page.goto(base + "/services/journey-hello")
            page.fill("#confirm", "journey-hello")
            page.click("form.destroy button")
            wait_text(page, "#status", "destroyed")
            pages.visit(base + "/services", "services")

            for path, name in (("/networks", "networks"), ("/groups", "groups"),
                               ("/account", "account")):
                pages.visit(base + path, name)

            # the admin: a one-time link from the CLI sets their password, then signs them in
            page.click("header button:has-text('Sign out')")
            page.wait_for_url("**/login?**")
            made = run_cli(["user", "invite", "admin"], base, running.admin_token)
            assert made.exit_code == 0, made.stderr
            pages.visit(made.last_line, "invite")
            page.fill("#password", "a long admin password")
            page.fill("#repeat", "a long admin password")
            page.click("button[type=submit]")
            page.wait_for_url("**/services?**")
            # an admin adds a server: the enrollment command
            page.goto(base + "/servers")
            page.fill("#sname", "journey-box")
            page.click("form[action='/servers'] button")
            command = page.inner_text("#enroll-command")
            assert command.startswith(f"slapnode node register --master {base} --token sne_")
            pages.check("servers-add")
            node = running.config.name
            pages.visit(f"{base}/servers/{node}?range=hour", "server")
            for section in ("users", "catalog", "supplies", "computers"):
                pages.visit(f"{base}/admin/{section}", f"admin-{section}")
            assert node in page.inner_text("main")

            # the API docs, from the master itself
            page.goto(base + "/api/v1/docs")
            page.wait_for_selector(".swagger-ui .opblock")
            page.screenshot(path=str(OUT / "api-docs.png"))

            # 360 px wide: nothing wider than the screen
            phone = browser.new_context(viewport={"width": 360, "height": 740},
                                        storage_state=context.storage_state())
            small = phone.new_page()
            for path in ("/services", "/software/hello", "/invoices/draft"):
                small.goto(base + path)
                width = small.evaluate("document.documentElement.scrollWidth")
                assert width <= 360, f"{path} is {width} px wide at 360 px"
            small.goto(base + "/software/hello")
            small.screenshot(path=str(OUT / "release-form-360.png"), full_page=True)
            phone.close()

            # keyboard: the skip link comes first and takes you to the content
            page.goto(base + "/services")
            page.keyboard.press("Tab")
            assert page.evaluate("document.activeElement.textContent") == "Skip to content"

            assert pages.violations == {}, json.dumps(pages.violations, indent=1)
            assert pages.csp == [], pages.csp
        finally:
            browser.close()
        # the master answered the API the whole time
        assert requests.get(base + "/api/v1/health", timeout=5,
                            proxies={"http": None}).json()["ok"] is True
