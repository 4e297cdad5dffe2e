"""A real browser against a real stack: daphne, an RQ worker, Redis, the lab's hosts.

The stack runs in its own processes with its own SQLite file and its own Redis
database, exactly as `make demo` runs it; the test only talks HTTP to it and
libvirt to the lab. Playwright drives Debian's Chromium (never a downloaded one).
"""

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.localservers import free_port, wait_port

pytestmark = [pytest.mark.browser, pytest.mark.lab]

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = os.environ.get("KVMWEB_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PASSWORD = "pw-browser-operator"


class Stack:
    """kvmweb's processes, on a database and Redis database of their own."""

    def __init__(self, redis_url):
        self.dir = Path(tempfile.mkdtemp(prefix="kvmweb-browser-"))
        # Database 1 of the session's Redis: its queues and groups are this stack's alone.
        redis_url = re.sub(r"/\d+$", "", redis_url) + "/1"
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "kvmweb.settings",
            "DATABASE_URL": f"sqlite:///{self.dir / 'db.sqlite3'}",
            "REDIS_URL": redis_url,
            "KVMWEB_SYNC_INTERVAL": "0",
            "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
            "PYTHONUNBUFFERED": "1",
        }
        self.procs = []
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"

    def manage(self, *args, timeout=120):
        proc = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if proc.returncode:
            raise RuntimeError(f"manage.py {' '.join(args)} failed: {proc.stderr or proc.stdout}")
        return proc.stdout

    def spawn(self, name, cmd):
        log = open(self.dir / f"{name}.log", "w")
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs.append((name, proc))
        return proc

    def start(self, lab):
        self.manage("migrate", "--noinput")
        self.manage(
            "shell",
            "-c",
            (
                "from django.contrib.auth.models import Group, User;"
                f"u = User.objects.create_user('oscar', 'oscar@example.com', '{PASSWORD}');"
                "u.groups.add(Group.objects.get(name='operators'))"
            ),
        )
        for host in lab.hosts:
            self.manage("register_host", host, lab.uri(host))
        daphne = self.spawn(
            "daphne",
            [
                str(Path(sys.executable).parent / "daphne"),
                "-b",
                "127.0.0.1",
                "-p",
                str(self.port),
                "kvmweb.asgi:application",
            ],
        )
        self.spawn("worker", [sys.executable, "manage.py", "rqworker", "migrations", "default"])
        wait_port(self.port, daphne, "daphne", timeout=60)

    def sync(self):
        self.manage("sync_inventory")
        # The lab's share is a FUSE mount in a dir pool: marked shared, as make demo
        # and register_lab do (else the form takes its guests' disks for local ones).
        self.manage(
            "shell",
            "-c",
            "from hosts.models import StoragePool as P; P.objects.filter(name='shared').update(marked_shared=True)",
        )

    def logs(self):
        return "\n".join(f"--- {name}\n{(self.dir / f'{name}.log').read_text()[-4000:]}" for name, _ in self.procs)

    def stop(self):
        for _, proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for _, proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def stack(lab, redis_url):
    the_stack = Stack(redis_url)
    try:
        the_stack.start(lab)
        yield the_stack
    finally:
        the_stack.stop()


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"no Chromium at {CHROMIUM}: apt-get install -y chromium")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser, stack, request):
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    pg = context.new_page()
    pg.set_default_timeout(30_000)
    pg.on("dialog", lambda dialog: dialog.accept())  # the confirmations
    failed_before = request.session.testsfailed
    yield pg
    if request.session.testsfailed > failed_before:
        print(stack.logs())  # shown with the failure
    context.close()


def log_in(page, stack):
    page.goto(stack.url + "/accounts/login/")
    page.fill("input[name=username]", "oscar")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(stack.url + "/")


def open_domain(page, stack, name):
    stack.sync()
    page.goto(stack.url + "/domains/?q=" + name)
    page.click(f"#domains a:text-is('{name}')")
    page.wait_for_url(re.compile(r"/domains/[0-9a-f-]+/$"))


def start_live_migration(page, target, bandwidth):
    page.click("#migrate summary")
    form = page.locator("#migrate form[data-migrate-form]")
    form.wait_for()
    form.locator("select[name=target_host]").select_option(label=target)
    # The pre-flight checks for the target appear before anything starts.
    checks = form.locator("ul.checklist li.check")
    checks.first.wait_for(timeout=60_000)
    assert form.locator("[data-checks-summary]").inner_text() == "Nothing stands in the way."
    assert checks.count() >= 3
    form.locator("input[name=bandwidth_mib]").fill(str(bandwidth))
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "migration-form.png"), full_page=True)
    form.locator("button[data-start]").click()  # confirm() is accepted by the page fixture
    page.wait_for_url(re.compile(r"/migrations/\d+/$"))
    page.evaluate("window.__sameDocument = true")


UNITS = {"B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30}


def sent(page):
    """Bytes sent so far, as the page shows them while it runs (0 before the first sample)."""
    # Read in one step in the page: between a count and a read the figure may go
    # (the page drops it when the migration ends), and the read would wait for it.
    text = page.evaluate(
        "() => { const e = document.querySelector('#progress [data-field=\"data_processed\"]');"
        " return e ? e.innerText : ''; }"
    )
    if not text.strip():
        return 0
    number, unit = text.split()
    return float(number) * UNITS[unit]


def watch(page, until, timeout=180):
    """Read the bytes sent and the status as the page shows them until the status is ``until``."""
    seen, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        moved = sent(page)
        status = page.locator("[data-bind=status]").inner_text()
        if not seen or seen[-1] != (moved, status):
            seen.append((moved, status))
        if status.lower() == until:
            return seen
        if status.lower() in ("failed", "cancelled", "succeeded"):
            break
        time.sleep(0.2)
    error = page.locator("[data-bind=error]").inner_text()
    raise AssertionError(f"the page did not reach {until}: {seen[-5:]} {error}")


def test_a_live_migration_started_from_the_form_shows_progress_until_it_succeeds(page, stack, lab, lab_guest):
    name = lab_guest("kvm01", disk="shared", memory_mib=256)
    log_in(page, stack)
    open_domain(page, stack, name)
    # The dashboard, open beside it, follows the migration without a reload.
    dashboard = page.context.new_page()
    dashboard.goto(stack.url + "/")
    dashboard.locator("#live-migrations [data-bind=live]:not([hidden])").wait_for()
    kvm02_vms = dashboard.locator('#hosts tr[data-host="kvm02"] td.vms')
    kvm02_before = kvm02_vms.inner_text()
    dashboard.evaluate("window.__sameDocument = true")

    start_live_migration(page, "kvm02", bandwidth=16)  # 256 MiB at 16 MiB/s: ~16 s
    dashboard.locator("#running-migrations tr[data-migration]").first.wait_for()
    # kvm02's committed-memory bar counts the guest on its way in, without a reload.
    kvm02_capacity = dashboard.locator('#hosts tr[data-host="kvm02"] [data-bind=capacity]')
    kvm02_capacity.filter(has_text="on 1 migration on the way in").wait_for(timeout=15000)

    seen = []
    screenshot_taken = False
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        moved = sent(page)
        status = page.locator("[data-bind=status]").inner_text().lower()
        seen.append((moved, status))
        if not screenshot_taken and status == "running" and 64 * 2**20 <= moved < 200 * 2**20:
            ARTIFACTS.mkdir(exist_ok=True)
            page.bring_to_front()
            page.screenshot(path=str(ARTIFACTS / "migration-page.png"), full_page=True)
            screenshot_taken = True
        if status in ("succeeded", "failed", "cancelled"):
            break
        time.sleep(0.2)

    assert seen[-1][1] == "succeeded", (seen[-5:], page.locator("[data-bind=error]").inner_text())
    running = [moved for moved, s in seen if s == "running"]
    assert len(set(running)) >= 2, f"the figures never moved: {seen}"
    assert running == sorted(running), f"progress went backwards: {seen}"
    assert page.evaluate("window.__sameDocument") is True, "the page was reloaded"
    # The outcome replaced the live figures, without a reload.
    assert page.locator("[data-bind=headline]").inner_text().startswith("Moved to kvm02 in")
    card = page.locator("#progress dl").inner_text()
    assert "Total time" in card and "Time left" not in card, card
    assert page.locator("[data-section=phase]").is_hidden()
    assert page.locator('#chart [data-series="sent"]').get_attribute("points").count(",") >= 2
    # Headless Chromium paints only the tab in front; the dashboard may be.
    page.bring_to_front()
    page.screenshot(path=str(ARTIFACTS / "migration-page-succeeded.png"), full_page=True)
    assert lab.where(name) == ["kvm02"]

    dashboard.locator("#live-migrations [data-bind=moved] li", has_text=f"{name} now runs on kvm02").wait_for()
    dashboard.wait_for_function(
        "([el, before]) => el.textContent !== before", arg=[kvm02_vms.element_handle(), kvm02_before]
    )
    assert "Succeeded" in dashboard.locator("#running-migrations").inner_text()
    assert dashboard.evaluate("window.__sameDocument") is True
    dashboard.bring_to_front()
    dashboard.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)


def test_a_live_migration_cancelled_midway_stays_on_the_source(page, stack, lab, lab_guest):
    name = lab_guest("kvm01", disk="shared", memory_mib=256)
    log_in(page, stack)
    open_domain(page, stack, name)
    start_live_migration(page, "kvm02", bandwidth=4)  # ~64 s: time enough to cancel

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if page.locator("[data-bind=status]").inner_text().lower() == "running" and sent(page) > 0:
            break
        time.sleep(0.2)
    else:
        raise AssertionError("the migration never started moving data")
    page.click("[data-cancel-form] button")  # confirm() accepted
    seen = watch(page, "cancelled", timeout=90)
    assert seen[-1][1] == "Cancelled"
    assert page.evaluate("window.__sameDocument") is True
    assert page.locator("[data-cancel-form]").is_hidden()
    assert lab.where(name) == ["kvm01"]


def test_the_dashboard_s_counts_follow_the_inventory_without_a_reload(page, stack, lab, lab_guest):
    stack.sync()
    log_in(page, stack)
    page.locator("#live-migrations [data-bind=live]").wait_for()  # the live feed is open
    page.evaluate("window.__sameDocument = true")
    summary = page.locator("[data-bind=summary]")
    hosts, vms, running = map(
        int, re.fullmatch(r"(\d+) hosts? · (\d+) virtual machines?, (\d+) running", summary.inner_text()).groups()
    )

    lab_guest("kvm01")
    stack.sync()  # the inventory changes: the feed sends the hosts' counts, and the line in words

    expected = f"{hosts} host{'s' * (hosts != 1)} · {vms + 1} virtual machine{'s' * (vms != 0)}, {running + 1} running"
    page.locator("[data-bind=summary]", has_text=expected).wait_for(timeout=30_000)
    assert page.evaluate("window.__sameDocument") is True, "the page was reloaded"


def test_a_vm_page_follows_its_own_vm_without_a_reload(page, stack, lab, lab_guest):
    name = lab_guest("kvm01")
    log_in(page, stack)
    # What its own VM's socket receives (the dashboard, where the login lands, opens one of its own).
    frames = []

    def listen(ws):
        if re.search(r"/ws/domains/\d+/$", ws.url):
            ws.on("framereceived", lambda payload: frames.append(payload))

    page.on("websocket", listen)
    open_domain(page, stack, name)
    deadline = time.monotonic() + 30
    while not frames and time.monotonic() < deadline:
        page.wait_for_timeout(100)
    assert frames and '"domain.state"' in frames[0]  # the socket listens before the VM changes
    page.evaluate("window.__sameDocument = true")
    assert page.locator("[data-bind=state]").inner_text() == "Running"

    with lab.connection("kvm01") as conn:
        conn.lookupByName(name).destroy()
    stack.sync()  # the inventory changes: the VM's own group hears of it

    page.locator("[data-bind=state]", has_text="Shut off").wait_for(timeout=30_000)
    assert page.evaluate("window.__sameDocument") is True, "the page was reloaded"


def test_maintenance_from_the_host_page_evacuates_and_brings_the_guest_back(page, stack, lab, lab_guest):
    name = lab_guest("kvm01", disk="shared", memory_mib=256)
    stack.sync()
    # The lab's share is a FUSE mount in a dir pool: marked shared, as make demo does.
    stack.manage(
        "shell",
        "-c",
        "from hosts.models import StoragePool as P; P.objects.filter(name='shared').update(marked_shared=True)",
    )
    log_in(page, stack)
    page.goto(stack.url + "/hosts/kvm01/")
    page.click("#enter-maintenance")
    page.wait_for_url(stack.url + "/hosts/kvm01/maintenance/")
    row = page.locator(f'#plan tr[data-domain="{name}"]')
    assert re.search(r"kvm0[23]", row.inner_text()), row.inner_text()
    assert "shared storage" in row.inner_text()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "maintenance-plan.png"), full_page=True)

    page.click("#confirm button[type=submit]")
    page.wait_for_url(re.compile(r"/evacuations/\d+/$"))
    page.evaluate("window.__sameDocument = true")
    page.locator("[data-bind=status]", has_text="Succeeded").wait_for(timeout=120_000)
    assert page.evaluate("window.__sameDocument") is True, "the page was reloaded"
    assert "Moved" in page.locator(f'#moves tr[data-domain="{name}"]').inner_text()
    assert page.locator("[data-bind=progress]").inner_text() == "1 of 1"
    page.screenshot(path=str(ARTIFACTS / "evacuation-page.png"), full_page=True)
    [where] = lab.where(name)
    assert where in ("kvm02", "kvm03")

    page.goto(stack.url + "/hosts/kvm01/")
    assert page.locator("#maintenance-badge").is_visible()
    assert page.locator("#leave-maintenance input[name=return_vms]").is_checked()
    page.click("#leave-maintenance button[type=submit]")
    page.wait_for_url(re.compile(r"/evacuations/\d+/$"))
    assert "Return" in page.locator("h1").inner_text()
    page.locator("[data-bind=status]", has_text="Succeeded").wait_for(timeout=120_000)
    assert lab.where(name) == ["kvm01"]
    page.goto(stack.url + "/hosts/kvm01/")
    assert page.locator("#maintenance-badge").count() == 0


def test_copying_disks_pre_selects_the_target_pool_of_the_source_pools_name(page, stack, lab, lab_guest):
    name = lab_guest("kvm01", disk="local", start=False)
    log_in(page, stack)
    open_domain(page, stack, name)
    page.click("#migrate summary")
    form = page.locator("#migrate form[data-migrate-form]")
    form.wait_for()
    form.locator("input[name=storage][value=copy]").check()
    pool = form.locator("select[name=target_pool]")
    chosen = "s => [s.value, s.options[s.selectedIndex].parentNode.label || '']"
    for target in ("kvm02", "kvm03"):
        form.locator("select[name=target_host]").select_option(label=target)
        # The guest's disk is in pool ``local`` on kvm01: the chosen host's ``local``.
        assert pool.evaluate(chosen) == ["local", target]
    # A pool chosen by hand stays chosen.
    form.locator("select[name=target_host]").select_option(label="kvm02")
    picked = pool.evaluate(
        """s => {
            const o = [...s.querySelectorAll("optgroup[label=kvm02] option")].find(o => o.value !== "local");
            if (!o) return null;
            o.selected = true;
            s.dispatchEvent(new Event("change", {bubbles: true}));
            return o.value;
        }"""
    )
    assert picked, "kvm02 has only its pool local"
    assert pool.evaluate(chosen) == [picked, "kvm02"]


def chart_width(page):
    """How much of the chart's width the bytes-sent line spans, as drawn (0 to 1)."""
    return page.evaluate(
        """() => {
            const line = document.querySelector('#chart [data-series="sent"]');
            const box = document.querySelector("#chart").getBoundingClientRect();
            return line.getBoundingClientRect().width / box.width;
        }"""
    )


def test_a_finished_migration_page_shows_no_live_figure_and_draws_its_chart(page, stack, lab, lab_guest):
    # A short migration (no bandwidth limit: a few seconds, one or two samples):
    # the walk's web01, whose page kept "Remaining" and "Time left" and drew no chart.
    name = lab_guest("kvm01", disk="shared", memory_mib=256)
    log_in(page, stack)
    open_domain(page, stack, name)
    start_live_migration(page, "kvm02", bandwidth=1000)
    page.locator("[data-bind=status]", has_text="Succeeded").wait_for(timeout=120_000)

    page.reload()  # opened afterwards, as from the list of migrations
    card = page.locator("#progress")
    # Its words and figures, the chart's caption aside.
    text = card.evaluate("c => [...c.children].filter(n => n.tagName !== 'FIGURE').map(n => n.innerText).join(' ')")
    for live in ("Time left", "Remaining", "left to send", "Phase", "onverging", "Elapsed"):
        assert live not in text, (live, text)
    assert page.locator("#progress [data-bind=bar]").is_hidden()
    figures = card.locator("dt").all_inner_texts()
    assert figures[:2] == ["Total time", "Downtime (guest paused)"] and "Data sent" in figures, figures
    assert page.locator("#chart").is_visible()
    assert chart_width(page) > 0.95, "the chart runs from the start of the move to its end"
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "migration-finished.png"), full_page=True)
    assert lab.where(name) == ["kvm02"]


def test_the_form_offers_only_targets_that_can_take_the_vm(page, stack, lab, lab_guest):
    name = lab_guest("kvm01", disk="shared", memory_mib=256, start=False)
    stack.sync()
    # kvm03 in maintenance; the lab's share (a FUSE mount in a dir pool) marked shared, as make demo does.
    stack.manage(
        "shell",
        "-c",
        "from hosts.models import Host, StoragePool as P; Host.objects.filter(name='kvm03').update(maintenance=True);"
        "P.objects.filter(name='shared').update(marked_shared=True)",
    )
    try:
        log_in(page, stack)
        open_domain(page, stack, name)
        page.click("#migrate summary")
        form = page.locator("#migrate form[data-migrate-form]")
        form.wait_for()
        options = form.locator("select[name=target_host] option:not([value=''])")
        offered = options.evaluate_all("os => os.map(o => [o.textContent, o.disabled])")
        assert offered == [
            ["kvm01: " + name + " runs here now", True],
            ["kvm02", False],
            ["kvm03: in maintenance", True],
        ], offered
        start = form.locator("button[data-start]")
        assert start.is_disabled(), "nothing to migrate to yet"
        # A live migration of a shut-off VM: the checks fail, "Migrate…" stays disabled.
        form.locator("select[name=target_host]").select_option(label="kvm02")
        summary = form.locator("[data-checks-summary]")
        summary.wait_for(timeout=60_000)
        assert summary.inner_text() == "A check failed: this migration would not start."
        assert start.is_disabled()
        # A cold one can go: once its checks pass, "Migrate…" is enabled.
        form.locator("input[name=mode][value=cold]").check()
        form.locator("[data-checks-summary]", has_text="Nothing stands in the way.").wait_for(timeout=60_000)
        assert start.is_enabled()
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "migration-form-targets.png"), full_page=True)
    finally:
        stack.manage(
            "shell", "-c", "from hosts.models import Host; Host.objects.filter(name='kvm03').update(maintenance=False)"
        )
