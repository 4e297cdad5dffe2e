"""The migration form, a migration's page, the cancel fallback and the list."""

import re
from datetime import timedelta

import pytest
from django.utils import timezone

from hosts.models import Host
from hosts.sync import sync_host
from migrations_app import checks
from migrations_app.models import AuditEntry, Migration
from tests.migration_helpers import migration_for
from tests.testdriver import domain_uuid, domain_xml, write_host

pytestmark = pytest.mark.django_db

EVIL = "<script>alert(1)</script>"
EVIL_NAME = "<img src=x onerror=alert(1)>"


@pytest.fixture
def hosts(testdriver_hosts):
    return testdriver_hosts


@pytest.fixture
def domain(hosts):
    return hosts[0].domains.get(name="kvm01-vm001")  # running


@pytest.fixture
def fake_checks(monkeypatch):
    """Pre-flight checks without asking libvirt: one of each result."""
    results = [
        checks.CheckResult("cpu_vendor", "pass", "Both hosts have GenuineIntel CPUs."),
        checks.CheckResult("memory", "warn", "kvm02 would have less than 10 % of its memory left."),
        checks.CheckResult("networks", "fail", f"kvm02 has no bridge {EVIL}.", detail=f"libvirt: {EVIL}"),
    ]
    monkeypatch.setattr(checks, "run_checks", lambda req, *a, **kw: results)
    return results


def form_data(domain, target, **extra):
    data = {
        "domain": domain.pk,
        "target_host": target.pk,
        "mode": "live",
        "storage": "shared",
        "policy": "default",
        "shutdown_timeout": "120",
        "force_off": "",
        "bandwidth_mib": "",
    }
    data.update(extra)
    return data


def new_url(domain):
    return f"/migrations/new/?domain={domain.uuid}"


# -- who sees the form -------------------------------------------------------------


def test_operators_are_offered_the_form_on_the_domain_page_and_the_dashboard(client, operator, domain):
    client.force_login(operator)
    page = client.get(domain.get_absolute_url()).content.decode()
    assert 'id="migrate"' in page and "fragment=1" in page
    assert "migrate-form.js" in page
    dashboard = client.get("/").content.decode()
    assert 'id="migrate"' in dashboard and 'id="live-migrations"' in dashboard


def test_viewers_see_the_domain_page_without_the_form(client, viewer, domain):
    client.force_login(viewer)
    page = client.get(domain.get_absolute_url()).content.decode()
    assert domain.name in page
    assert 'id="migrate"' not in page and "/migrations/new/" not in page
    assert 'id="migrate"' not in client.get("/").content.decode()


def test_viewers_may_not_open_or_post_the_form(client, viewer, hosts, domain):
    client.force_login(viewer)
    assert client.get(new_url(domain)).status_code == 403
    response = client.post(new_url(domain), form_data(domain, hosts[1], confirmed="1"))
    assert response.status_code == 403
    assert not Migration.objects.exists()


def test_the_form_page_and_its_fragment(client, operator, hosts, domain):
    client.force_login(operator)
    page = client.get(new_url(domain)).content.decode()
    assert "<html" in page and "data-migrate-form" in page
    for words in (
        "Target host",
        "Live (the VM keeps running)",
        "Cold (shut down, copy, start)",
        "Copy the disks to the target",
        "Bandwidth limit (MiB/s)",
        "Make it converge",
        "Give up and leave it running on the source",
        "Power it off",
        "Keep the copy on the source",
        "Check first",
    ):
        assert words in page, words
    # The policies' descriptions, and the target's pools grouped by host.
    assert "give up after 5 minutes" in page
    assert '<optgroup label="kvm02">' in page
    fragment = client.get(new_url(domain) + "&fragment=1").content.decode()
    assert "<html" not in fragment and "{#" not in fragment
    assert "data-migrate-form" in fragment
    # The fragment posts to the full page, so errors come back as a whole page.
    assert 'action="/migrations/new/?domain=' in fragment and "fragment" not in re.search(
        r'action="([^"]*)"', fragment
    ).group(1)


def test_force_off_is_a_clear_choice_and_off_by_default(client, operator, domain):
    client.force_login(operator)
    page = client.get(new_url(domain)).content.decode()
    checked = re.search(r'<input type="radio" name="force_off" value="([^"]*)"[^>]*checked', page)
    assert checked and checked.group(1) == ""


# -- errors, checks, confirmation --------------------------------------------------


def test_the_same_host_as_the_source_is_refused_in_words(client, operator, hosts, domain):
    client.force_login(operator)
    response = client.post(new_url(domain), form_data(domain, hosts[0], confirmed="1"))
    assert response.status_code == 200
    page = response.content.decode()
    assert f"{domain.name} is already on kvm01. Choose another target host." in page
    assert not Migration.objects.exists()


def test_copy_storage_without_a_pool_takes_the_target_pool_of_the_same_name(client, operator, hosts, domain):
    client.force_login(operator)
    page = client.post(new_url(domain), form_data(domain, hosts[1], storage="copy")).content.decode()
    assert (
        "Its disks are copied into pool local on kvm02. Once the move is verified, the copy on kvm01 is removed."
        in page
    )


def test_a_pool_of_another_host_is_refused(client, operator, hosts, domain, tmp_path):
    kvm03 = Host.objects.create(name="kvm03", uri=write_host(tmp_path, "kvm03"))
    sync_host(kvm03)
    kvm03.pools.update(name="only-on-kvm03")
    client.force_login(operator)
    page = client.post(
        new_url(domain), form_data(domain, hosts[1], storage="copy", target_pool="only-on-kvm03")
    ).content.decode()
    assert "kvm02 has no storage pool named only-on-kvm03." in page


def test_check_first_lists_the_checks_in_words(client, operator, hosts, domain, fake_checks):
    client.force_login(operator)
    page = client.post(new_url(domain), form_data(domain, hosts[1], check="1")).content.decode()
    assert "Both hosts have GenuineIntel CPUs." in page
    assert "less than 10 % of its memory left" in page
    assert "kvm02 has no bridge &lt;script&gt;" in page and EVIL not in page
    assert "A check failed" in page
    assert not Migration.objects.exists()
    assert AuditEntry.objects.filter(action="check").count() == 1


def test_a_live_migration_is_confirmed_before_it_starts(client, operator, hosts, domain):
    client.force_login(operator)
    page = client.post(new_url(domain), form_data(domain, hosts[1])).content.decode()
    assert "Start this migration?" in page
    assert "while it keeps running" in page
    assert 'name="confirmed" value="1"' in page
    assert not Migration.objects.exists()


def test_a_cold_migration_says_it_shuts_the_vm_down(client, operator, hosts, domain):
    client.force_login(operator)
    page = client.post(
        new_url(domain),
        form_data(domain, hosts[1], mode="cold", force_off="1", storage="copy", keep_source_volumes="on"),
    ).content.decode()
    assert "will be shut down on kvm01" in page
    assert "powered off" in page and "The copy on kvm01 is kept" in page
    assert "shut it down and migrate" in page


def test_a_confirmed_migration_is_queued_and_opens_its_page(client, operator, hosts, domain):
    client.force_login(operator)
    response = client.post(new_url(domain), form_data(domain, hosts[1], mode="cold", bandwidth_mib="8", confirmed="1"))
    migration = Migration.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/migrations/{migration.pk}/"
    assert (migration.mode, migration.target_name, migration.bandwidth_mib) == ("cold", "kvm02", 8)
    assert migration.force_off is False and migration.requested_by == operator
    page = client.get(response["Location"]).content.decode()
    assert "queued" in page.lower()


def test_a_second_migration_of_the_same_vm_is_refused_in_words(client, operator, hosts, domain):
    migration_for(domain, hosts[1], status="running")
    client.force_login(operator)
    page = client.post(new_url(domain), form_data(domain, hosts[1], confirmed="1")).content.decode()
    assert f"{domain.name} is already being migrated" in page


def test_the_dashboard_form_lets_the_operator_choose_the_vm(client, operator, hosts, domain):
    client.force_login(operator)
    page = client.get("/migrations/new/?fragment=1").content.decode()
    assert f"{domain.name} (on kvm01, running)" in page
    response = client.post("/migrations/new/", form_data(domain, hosts[1], confirmed="1"))
    assert response.status_code == 302


# -- a migration's page ---------------------------------------------------------------


def test_the_migration_page_shows_the_progress_figures(client, viewer, hosts, domain):
    migration = migration_for(
        domain,
        hosts[1],
        status="running",
        phase="transferring_memory",
        progress={
            "percent": 42.4,
            "data_total": 400 * 2**20,
            "data_processed": 168 * 2**20,
            "data_remaining": 232 * 2**20,
            "memory_total": 400 * 2**20,
            "memory_remaining": 232 * 2**20,
            "speed_bps": 8 * 2**20,
            "dirty_rate_bps": 2**20,
            "iteration": 3,
            "downtime_ms": 300,
            "eta_seconds": 29,
            "convergence": "converging_slowly",
            "elapsed": 21.5,
            "sampled_at": 1.0,
        },
        events=[{"at": "2026-01-01T10:00:05+00:00", "message": "Allowed downtime raised to 300 ms."}],
        checks=[{"name": "arch", "result": "pass", "message": "Both are x86_64.", "detail": ""}],
    )
    client.force_login(viewer)
    page = client.get(f"/migrations/{migration.pk}/").content.decode()
    for text in (
        "Transferring memory",
        "Pass 3 over memory · 232.0 MiB of 400.0 MiB left to send",
        "168.0 MiB",
        "8.0 MiB/s",
        "1.0 MiB/s",
        ">3<",
        "converging slowly",
        "300 ms",
        "29 s",
        "22 s",
        "Allowed downtime raised to 300 ms.",
        "Both are x86_64.",
        'id="migration-state"',
        "migration.js",
    ):
        assert text in page, text
    # The percentage of the current pass is no progress bar: it goes back at each pass.
    assert re.search(r'<div class="bar big"[^>]* data-bind="bar" hidden>', page)
    # A viewer may not cancel.
    assert "Cancel migration" not in page


def test_the_live_payload_carries_the_text_the_page_shows(client, viewer, hosts, domain):
    migration = migration_for(
        domain,
        hosts[1],
        status="running",
        phase="transferring_memory",
        progress={
            "percent": 42.4,
            "data_total": 400 * 2**20,
            "data_remaining": 232 * 2**20,
            "memory_remaining": 232 * 2**20,
            "speed_bps": 8 * 2**20,
            "iteration": 2,
        },
        checks=[{"name": "arch", "label": "Architecture", "result": "warn", "message": f"x86_64 {EVIL}"}],
        events=[{"at": "2026-01-01T10:00:05+00:00", "message": "Started."}],
    )
    shown = migration.as_event()["display"]

    assert (shown["status_colour"], shown["bar"], shown["finished"]) == ("blue", None, False)
    assert shown["summary"] == "pass 2 · 232.0 MiB left · 8.0 MiB/s"
    figures = {row["label"]: row["text"] for row in shown["progress"]}
    assert figures["Memory left to send"] == "232.0 MiB" and figures["Speed"] == "8.0 MiB/s"
    assert figures["Pass over memory"] == "2"
    assert "—" not in figures.values(), "a figure without a value is left out, not shown as a dash"
    other = hosts[0].domains.get(name="kvm01-vm000")
    first_pass = migration_for(other, hosts[1], status="running", progress={"iteration": 1, "dirty_rate_bps": 0})
    assert "The guest dirties" not in {row["label"] for row in first_pass.as_event()["display"]["progress"]}
    assert shown["outcome"] == [] and shown["stats"] == []
    assert shown["events"] == [{"at": "2026-01-01T10:00:05+00:00", "time": "10:00:05", "message": "Started."}]
    assert shown["events_total"] == 1
    # The check list is the page's own fragment, escaped, with the result's colour.
    assert '<span class="status orange">warn</span>' in shown["checks_html"] and EVIL not in shown["checks_html"]
    client.force_login(viewer)
    page = client.get(f"/migrations/{migration.pk}/").content.decode()
    assert shown["checks_html"] in page
    assert all(f'data-field="{row["key"]}">{row["text"]}<' in page for row in shown["progress"])


def test_a_page_opened_after_the_end_draws_the_chart_from_the_kept_samples(client, viewer, hosts, domain):
    started = timezone.now() - timedelta(seconds=10)
    migration = migration_for(domain, hosts[1], status="running", phase="transferring_memory", started_at=started)
    total = 400 * 2**20
    t0 = started.timestamp()
    migration.save_progress({"memory_total": 0, "memory_remaining": 0, "sampled_at": t0})  # size not known yet
    for second in range(5):
        remaining = total - second * 100 * 2**20
        migration.save_progress(
            {
                "memory_total": total,
                "memory_remaining": remaining,
                "data_processed": second * 100 * 2**20,
                "sampled_at": t0 + 1 + second,
            }
        )
    migration.succeed({"time_ms": 5000, "data_transferred": total})
    # The chart's end: the migration's, five seconds after its last sample.
    Migration.objects.filter(pk=migration.pk).update(finished_at=started + timedelta(seconds=10))

    client.force_login(viewer)
    page = client.get(f"/migrations/{migration.pk}/").content.decode()
    sent = re.search(r'<polyline points="([^"]*)" class="series" data-series="sent"', page).group(1).split()
    left = re.search(r'<polyline points="([^"]*)" class="series remaining"', page).group(1).split()
    # Bytes sent: from nothing at the start to all of it at the end, across the whole width.
    assert sent[0] == "4.0,156.0" and sent[-1] == "596.0,4.0", sent
    assert [float(p.split(",")[1]) for p in sent] == sorted((float(p.split(",")[1]) for p in sent), reverse=True)
    assert left == ["63.2,4.0", "122.4,42.0", "181.6,80.0", "240.8,118.0", "300.0,156.0"]
    assert "(top: 400.0 MiB, 10 s shown)" in page


def test_a_long_migration_keeps_a_thinned_chart(hosts, domain):
    migration = migration_for(domain, hosts[1], status="running", phase="transferring_memory")
    for n in range(700):
        migration.save_progress(
            {"data_total": 700, "data_processed": n, "data_remaining": 700 - n, "sampled_at": 1000.0 + n}
        )
    migration.refresh_from_db()
    assert 150 <= len(migration.samples) <= 300
    assert migration.samples[0] == [1000.0, 0, 700] and migration.samples[-1][0] > 1600


def test_the_migration_page_escapes_the_name_and_libvirt_text(client, viewer, operator, tmp_path):
    uuid = domain_uuid("kvm01", 9)
    kvm01 = Host.objects.create(name="kvm01", uri=write_host(tmp_path, "kvm01", domains=[domain_xml(EVIL_NAME, uuid)]))
    kvm02 = Host.objects.create(name="kvm02", uri=write_host(tmp_path, "kvm02"))
    sync_host(kvm01), sync_host(kvm02)
    domain = kvm01.domains.get()
    migration = migration_for(
        domain,
        kvm02,
        status="failed",
        error=f"The target refused the domain {EVIL}.",
        error_detail=f"internal error: {EVIL} qemu said no",
        events=[{"at": "2026-01-01T10:00:00+00:00", "message": f"step {EVIL}"}],
        stats={"downtime_ms": 90, "note": EVIL},
    )
    client.force_login(viewer)
    page = client.get(f"/migrations/{migration.pk}/").content.decode()
    assert "The target refused the domain &lt;script&gt;alert(1)&lt;/script&gt;." in page
    assert "qemu said no" not in page, "viewers get the plain words only, not libvirt's text"
    client.force_login(operator)
    page = client.get(f"/migrations/{migration.pk}/").content.decode()
    assert EVIL not in page and EVIL_NAME not in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "The target refused the domain &lt;script&gt;alert(1)&lt;/script&gt;." in page
    # The libvirt text is folded beneath the plain words, for operators.
    assert re.search(
        r"<details[^>]*>\s*<summary>What libvirt said</summary>\s*<pre[^>]*>internal error: &lt;script&gt;", page
    )
    assert "Final statistics" in page and "Note" in page
    assert "90 ms" not in page, "a failed migration never paused the guest for a switch-over"
    # The JSON for the script is escaped too (json_script turns < into \u003C).
    state = re.search(r'<script id="migration-state" type="application/json">(.*?)</script>', page, re.S).group(1)
    assert "<" not in state


def test_a_finished_migration_shows_no_cancel_button(client, operator, hosts, domain):
    migration = migration_for(
        domain,
        hosts[1],
        status="succeeded",
        phase="done",
        stats={"downtime_ms": 81, "data_total": 300 * 2**20, "duration": 12.3},
    )
    client.force_login(operator)
    page = client.get(f"/migrations/{migration.pk}/").content.decode()
    assert "Cancel migration" not in page
    assert "81 ms" in page and "300.0 MiB" in page and "12 s" in page


# -- cancelling without JavaScript --------------------------------------------------


def test_an_operator_cancels_through_the_fallback_form(client, operator, hosts, domain):
    migration = migration_for(domain, hosts[1])  # queued: cancelled at once
    client.force_login(operator)
    page = client.get(f"/migrations/{migration.pk}/").content.decode()
    assert "Cancel migration" in page and f'action="/migrations/{migration.pk}/cancel/"' in page
    confirm = client.get(f"/migrations/{migration.pk}/cancel/").content.decode()
    assert "Yes, cancel it" in confirm and "stays on kvm01" in confirm
    response = client.post(f"/migrations/{migration.pk}/cancel/")
    assert response.status_code == 302
    migration.refresh_from_db()
    assert migration.status == "cancelled"
    assert AuditEntry.objects.filter(action="cancel", migration=migration).exists()
    page = client.get(response["Location"]).content.decode()
    assert "Cancelled before it started." in page


def test_cancelling_a_finished_migration_says_why_not(client, operator, hosts, domain):
    migration = migration_for(domain, hosts[1], status="succeeded")
    client.force_login(operator)
    page = client.post(f"/migrations/{migration.pk}/cancel/", follow=True).content.decode()
    assert "has already succeeded" in page


def test_viewers_may_not_cancel(client, viewer, hosts, domain):
    migration = migration_for(domain, hosts[1])
    client.force_login(viewer)
    assert client.get(f"/migrations/{migration.pk}/cancel/").status_code == 403
    assert client.post(f"/migrations/{migration.pk}/cancel/").status_code == 403
    migration.refresh_from_db()
    assert migration.status == "queued"


# -- the list ------------------------------------------------------------------------


def test_the_list_shows_recent_migrations_first_and_filters_by_status(client, viewer, hosts, domain):
    other = hosts[0].domains.get(name="kvm01-vm000")
    old = migration_for(other, hosts[1], status="failed", error="It broke.")
    new = migration_for(domain, hosts[1], status="running", progress={"percent": 50})
    client.force_login(viewer)
    page = client.get("/migrations/").content.decode()
    assert page.index(f'data-migration="{new.pk}"') < page.index(f'data-migration="{old.pk}"')
    assert "It broke." in page
    page = client.get("/migrations/?status=failed").content.decode()
    assert f'data-migration="{old.pk}"' in page and f'data-migration="{new.pk}"' not in page


def test_the_pages_need_a_role(client, outsider, hosts, domain):
    migration = migration_for(domain, hosts[1])
    client.force_login(outsider)
    for url in ("/migrations/", f"/migrations/{migration.pk}/", "/migrations/new/", "/audit/"):
        assert client.get(url).status_code == 403, url
    client.logout()
    for url in ("/migrations/", f"/migrations/{migration.pk}/", "/audit/", "/audit/export.csv"):
        assert client.get(url).status_code == 302, url
