"""The rolling maintenance pages in Chromium: started from the form in the
order chosen, the done button asks first (declined: nothing happens), and a
running one's page follows its state without a click."""

import pytest

from hosts.models import Host
from hosts.sync import sync_host
from maintenance import rolling
from maintenance.models import Evacuation, HostStep, RollingHost, RollingMaintenance
from tests.test_browser_pages import browser, open_as, sideways  # noqa: F401 - browser: the fixture, found by name
from tests.testdriver import write_host

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _orm_beside_playwright(monkeypatch):
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


@pytest.fixture
def hosts(tmp_path):
    made = {}
    for name, count in (("kvm01", 3), ("kvm02", 0), ("kvm03", 0)):
        made[name] = Host.objects.create(name=name, uri=write_host(tmp_path, name, count=count))
        assert sync_host(made[name]).online
    return made


def test_an_operator_starts_one_and_marks_the_host_done_after_confirming(
    live_server,
    operator,
    hosts,
    browser,  # noqa: F811 - the fixture imported above
):
    page = open_as(browser, live_server, "oscar")
    page.click("header.top nav a:text-is('Rolling maintenance')")
    page.select_option('select[aria-label="Host number 1"]', label="kvm02")
    page.select_option('select[aria-label="Host number 2"]', label="kvm01")
    page.check('input[name=wait][value="timeout"]')
    page.fill('input[name="wait_minutes"]', "45")
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#start-rolling button[type=submit]")
    page.wait_for_url(f"{live_server.url}/rolling/*/")

    started = RollingMaintenance.objects.get()
    assert started.wait_seconds == 45 * 60
    assert [e.host_name for e in started.entries.all()] == ["kvm02", "kvm01"]
    assert sideways(page)[0] <= sideways(page)[1]
    # No worker runs here: this test takes the steps a worker would, and the page follows.
    rolling.advance(started.pk)
    evacuation = RollingHost.objects.get(rolling=started, host_name="kvm02").evacuation
    Evacuation.objects.filter(pk=evacuation.pk).update(status="succeeded")
    rolling.advance(started.pk)
    page.locator("#host-done button").wait_for(timeout=15_000)  # the page loaded itself again
    assert (
        "Waiting for an operator to mark it done, or 45 min more."
        in page.locator('#rolling-hosts tr[data-host="kvm02"]').inner_text()
    )

    page.once("dialog", lambda dialog: dialog.dismiss())
    page.click("#host-done button")
    page.wait_for_timeout(500)
    assert RollingHost.objects.get(rolling=started, host_name="kvm02").done_at is None

    questions = []

    def accept(dialog):
        questions.append(dialog.message)
        dialog.accept()

    page.once("dialog", accept)
    page.click("#host-done button")
    page.locator("ul.messages").wait_for()
    assert questions == ["Is kvm02 done? Its VMs move back onto it now, then the next host is emptied."]
    assert RollingHost.objects.get(rolling=started, host_name="kvm02").done_by_name == "oscar"
    assert RollingHost.objects.get(rolling=started, host_name="kvm02").state == HostStep.IN_MAINTENANCE
