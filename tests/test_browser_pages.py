"""Every page in a real browser, at a phone's width and on a desktop, against
Django's live server (no lab: the hosts are libvirt's test driver).

Playwright drives Debian's Chromium. Its sync API runs an event loop in this
thread, so the ORM calls of the test itself are allowed explicitly."""

import os
import re
from pathlib import Path

import pytest

from hosts.models import Host
from hosts.sync import sync_host
from maintenance.models import Evacuation
from migrations_app.models import AuditAction, AuditEntry, Migration
from tests.testdriver import write_host

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CHROMIUM = os.environ.get("KVMWEB_CHROMIUM", "/usr/bin/chromium")
PHONE = {"width": 390, "height": 844}
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


@pytest.fixture(autouse=True)
def _orm_beside_playwright(monkeypatch):
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


@pytest.fixture
def browser():
    """Started after the data (ask for it last): the ORM's async_to_sync in fixtures refuses to run beside its loop."""
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"no Chromium at {CHROMIUM}: apt-get install -y chromium")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"], headless=True
        )
        yield b
        b.close()


def open_as(browser, live_server, username, viewport=PHONE):
    context = browser.new_context(viewport=viewport)
    page = context.new_page()
    page.set_default_timeout(15_000)
    page.goto(live_server.url + "/accounts/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", "pw-" + username)
    page.click("button[type=submit]")
    page.wait_for_url(live_server.url + "/")
    return page


@pytest.fixture
def inventory(tmp_path, operator):
    """Two read hosts with VMs, one never read, a migration, an evacuation, audit entries."""
    hosts = []
    for name in ("kvm01", "kvm02"):
        host = Host.objects.create(name=name, uri=write_host(tmp_path, name, count=4))
        sync_host(host)
        hosts.append(host)
    Host.objects.create(
        name="kvm03-with-a-long-name",
        uri="qemu+ssh://root@kvm03-with-a-long-name.example.com/system",
        status="offline",
        status_reason="Cannot reach kvm03-with-a-long-name.example.com over SSH.",
    )
    domain = hosts[0].domains.order_by("name").first()
    migration = Migration.objects.create(
        domain=domain,
        domain_name=domain.name,
        domain_uuid=domain.uuid,
        source=hosts[0],
        source_name="kvm01",
        target=hosts[1],
        target_name="kvm02",
        mode="live",
        requested_by=operator,
        requested_by_name=operator.username,
        status="succeeded",
    )
    evacuation = Evacuation.objects.create(host=hosts[0], host_name="kvm01", requested_by=operator, plan=[])
    for i in range(30):
        AuditEntry.record(
            AuditAction.REQUEST,
            f"Requested a live migration of {domain.name} from kvm01 to kvm02 with a long message number {i}",
            user=operator,
            migration=migration,
        )
    return {"domain": domain, "migration": migration, "evacuation": evacuation}


def every_page(inventory):
    return [
        "/",
        "/hosts/",
        "/hosts/kvm01/",
        "/hosts/kvm03-with-a-long-name/",
        "/domains/",
        inventory["domain"].get_absolute_url(),
        "/migrations/",
        inventory["migration"].get_absolute_url(),
        "/migrations/new/",
        f"/migrations/new/?domain={inventory['domain'].uuid}",
        "/hosts/kvm01/maintenance/",
        "/cluster/balance/",
        inventory["evacuation"].get_absolute_url(),
        "/audit/",
        f"{inventory['migration'].get_absolute_url()}cancel/",
        f"/domains/{inventory['domain'].uuid}/definitions/kvm02/remove/",
        "/hosts/?add=1",
        "/no-such-page/",
    ]


HEADER_PROBLEMS = """() => {
  const width = document.documentElement.clientWidth;
  const bad = [];
  for (const el of document.querySelectorAll("header.top a, header.top button, header.top .user")) {
    const box = el.getBoundingClientRect();
    if (box.width === 0 || box.left < 0 || box.right > width) {
      bad.push(el.textContent.trim() + " " + box.left + "-" + box.right);
    }
  }
  return bad;
}"""


def sideways(page):
    return page.evaluate("() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]")


def test_every_page_fits_a_phone_without_scrolling_sideways(live_server, inventory, operator, browser):
    page = open_as(browser, live_server, "oscar")
    problems = []
    for url in every_page(inventory):
        response = page.goto(live_server.url + url)
        if response.status != (404 if url == "/no-such-page/" else 200):
            problems.append(f"{url}: HTTP {response.status}")
            continue
        scroll, client = sideways(page)
        if scroll > client:
            problems.append(f"{url}: {scroll} px wide on a {client} px screen")
        bad = page.evaluate(HEADER_PROBLEMS)
        if bad:
            problems.append(f"{url}: header items off screen: {bad}")
        if os.environ.get("KVMWEB_SCREENSHOTS"):
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / ("phone" + re.sub(r"\W+", "-", url) + ".png")), full_page=True)
    # The login page, logged out.
    page.context.clear_cookies()
    page.goto(live_server.url + "/accounts/login/")
    scroll, client = sideways(page)
    if scroll > client:
        problems.append(f"login: {scroll} px wide on a {client} px screen")
    assert not problems, "\n".join(problems)


def test_a_viewer_opening_an_operator_page_gets_a_styled_403_with_navigation(live_server, viewer, tmp_path, browser):
    Host.objects.create(name="kvm01", uri=write_host(tmp_path, "kvm01"))
    page = open_as(browser, live_server, "vera", viewport={"width": 1280, "height": 900})
    response = page.goto(live_server.url + "/migrations/new/")
    assert response.status == 403
    assert page.locator("#error-reason").inner_text() == (
        "Only operators may migrate. Ask an administrator to add you to the 'operators' group."
    )
    assert page.title() == "Not allowed · kvmweb"
    # The site's header with its links, in the site's style (not a bare serif page).
    nav = page.locator("header.top nav a")
    assert [nav.nth(i).inner_text() for i in range(nav.count())][:2] == ["Dashboard", "Hosts"]
    assert "vera" in page.locator("header.top .user").inner_text()
    assert "serif" not in page.evaluate("getComputedStyle(document.body).fontFamily").replace("sans-serif", "")
    page.click("header.top nav a:text-is('Hosts')")
    page.wait_for_url(live_server.url + "/hosts/")
    assert page.locator('#host-list tr[data-host="kvm01"]').is_visible()

    response = page.goto(live_server.url + "/hosts/no-such-host/")
    assert response.status == 404
    assert "Nothing is at /hosts/no-such-host/" in page.locator("#error-reason").inner_text()
    assert page.locator("header.top nav a").count() >= 5


@pytest.mark.lab
def test_an_operator_registers_an_ssh_lab_host_from_the_page_and_confirms_its_key(
    live_server, lab, operator, settings, tmp_path, browser
):
    settings.VAR_DIR = tmp_path / "var"  # kvmweb makes a key of its own, which no lab host knows yet
    page = open_as(browser, live_server, "oscar", viewport={"width": 1280, "height": 900})
    page.click("header.top nav a:text-is('Hosts')")
    page.click("#add-host-button")
    form = page.locator("#add-host form")
    form.wait_for()
    # The administrator pastes the line the page shows into root's authorized_keys on the host.
    line = page.locator("#register-ssh-line").inner_text()
    public_key = re.fullmatch(r"echo '(ssh-ed25519 [^']+)' >> /root/\.ssh/authorized_keys", line.strip()).group(1)
    lab.authorize_key("kvm02", public_key)

    form.locator("input[name=name]").fill("kvm02")
    form.locator("input[name=uri]").fill(lab.ssh_uri("kvm02"))
    form.locator("button[type=submit]").click()
    page.wait_for_url(live_server.url + "/hosts/kvm02/")
    assert "Compare the SSH host key" in page.locator("ul.messages").inner_text()
    # Not trusted yet, so not read: the fingerprint it offers is shown to compare.
    assert page.locator("#offered-fingerprint").inner_text() == lab.ssh_fingerprint("kvm02")
    assert Host.objects.get(name="kvm02").status != "online"

    page.click("#host-key button:text-is('Confirm this host key')")
    page.wait_for_url(live_server.url + "/hosts/kvm02/")
    assert "SSH host key of kvm02 confirmed" in page.locator("ul.messages").inner_text()
    host = Host.objects.get(name="kvm02")
    assert host.host_key_state == "trusted" and host.ssh_fingerprint == lab.ssh_fingerprint("kvm02")
    assert host.status == "online", host.status_reason
    assert page.locator("#host-key").count() == 0
    assert AuditEntry.objects.filter(source_name="kvm02", message__startswith="Registered host kvm02").exists()


def test_login_dark_mode_favicon_zone_and_titles(live_server, inventory, operator, browser):
    context = browser.new_context(
        viewport={"width": 1280, "height": 900}, color_scheme="dark", timezone_id="Europe/Berlin"
    )
    page = context.new_page()
    page.goto(live_server.url + "/accounts/login/")
    # The two inputs line up.
    boxes = [page.locator(f"input[name={n}]").bounding_box() for n in ("username", "password")]
    assert boxes[0]["x"] == boxes[1]["x"] and boxes[0]["width"] == boxes[1]["width"], boxes
    # Dark mode follows the browser's preference.
    assert page.evaluate("getComputedStyle(document.body).backgroundColor") == "rgb(16, 20, 28)"
    icon = page.evaluate("document.querySelector('link[rel=icon]').href")
    assert page.request.get(icon).status == 200
    page.fill("input[name=username]", "oscar")
    page.fill("input[name=password]", "pw-oscar")
    page.click("button[type=submit]")
    page.wait_for_url(live_server.url + "/")

    # The browser named its zone on the first page: later pages show dates in it, with the zone.
    page.goto(live_server.url + "/audit/")
    first = page.locator("#audit tbody tr td time").first
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d CET", first.inner_text()), first.inner_text()

    # Titles carry the status, kept up to date by the page.
    page.goto(live_server.url + inventory["evacuation"].get_absolute_url())
    assert page.title().startswith("Queued · Evacuation #")
    page.goto(live_server.url + inventory["migration"].get_absolute_url())
    assert page.title().startswith("Succeeded · Migration #"), page.title()
    page.locator("h1 [data-bind=status]").evaluate("el => { el.textContent = 'Failed'; }")
    page.wait_for_function("document.title.startsWith('Failed · Migration #')")
    page.goto(live_server.url + "/hosts/kvm03-with-a-long-name/")
    assert page.title() == "Offline · kvm03-with-a-long-name · kvmweb"
    if os.environ.get("KVMWEB_SCREENSHOTS"):
        ARTIFACTS.mkdir(exist_ok=True)
        page.goto(live_server.url + "/hosts/kvm01/")
        page.screenshot(path=str(ARTIFACTS / "dark-host.png"), full_page=True)
    context.close()
