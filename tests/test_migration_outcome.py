"""A migration's page after the fact: the outcome's figures, never the live ones;
a cold migration's own figures; a chart for any migration; every event kept."""

import re
from datetime import UTC, timedelta

import pytest
from django.utils import timezone

from migrations_app.models import Migration
from tests.migration_helpers import migration_for

pytestmark = pytest.mark.django_db

MIB = 2**20

# The last sample of a live transfer: what the page showed while it ran.
LAST_SAMPLE = {
    "percent": 97.0,
    "data_total": 400 * MIB,
    "data_processed": 1200 * MIB,
    "data_remaining": 196 * MIB,
    "memory_total": 400 * MIB,
    "memory_remaining": 196 * MIB,
    "speed_bps": 8 * MIB,
    "dirty_rate_bps": 7 * MIB,
    "iteration": 9,
    "downtime_ms": 300,
    "eta_seconds": 1,
    "convergence": "converging",
    "elapsed": 47.0,
}


@pytest.fixture
def hosts(testdriver_hosts):
    return testdriver_hosts


@pytest.fixture
def domain(hosts):
    return hosts[0].domains.get(name="kvm01-vm001")


def ended(domain, target, status, *, seconds=48, samples=(), **fields):
    """A migration that ran ``seconds`` and ended with ``status``, its samples kept."""
    started = timezone.now() - timedelta(seconds=seconds + 5)
    migration = migration_for(
        domain,
        target,
        status="running",
        phase=fields.pop("phase", "transferring_memory"),
        started_at=started,
        **{k: v for k, v in fields.items() if k in ("mode", "storage")},
    )
    t0 = started.timestamp()
    for offset, progress in samples:
        migration.save_progress({**progress, "sampled_at": t0 + offset})
    Migration.objects.filter(pk=migration.pk).update(
        status=status,
        finished_at=started + timedelta(seconds=seconds),
        **{k: v for k, v in fields.items() if k not in ("mode", "storage")},
    )
    migration.refresh_from_db()
    return migration


def page_of(client, user, migration):
    client.force_login(user)
    return client.get(f"/migrations/{migration.pk}/").content.decode()


def figures(html):
    """The progress card's figures, its text above the chart, and the chart."""
    card = html[html.index('id="progress"') : html.index("</section>", html.index('id="progress"'))]
    text, chart = card.split("<figure", 1)
    return dict(re.findall(r"<dt>(.*?)</dt><dd[^>]*>(.*?)</dd>", text)), text, chart


def test_a_succeeded_live_migration_shows_its_outcome_and_no_live_figure(client, viewer, hosts, domain):
    migration = ended(
        domain,
        hosts[1],
        "succeeded",
        seconds=12,
        phase="done",
        samples=[(6, LAST_SAMPLE)],  # a short one: a single sample
        stats={"time_ms": 11800, "downtime_ms": 84, "data_transferred": 1300 * MIB, "iterations": 9},
    )
    shown, card, chart = figures(page_of(client, viewer, migration))
    assert shown == {
        "Total time": "12 s",
        "Downtime (guest paused)": "84 ms",
        "Data sent": "1.3 GiB",
        "Passes over memory": "9",
    }
    for live in ("Time left", "Remaining", "left to send", "Phase", "Converging", "converging", "Speed"):
        assert live not in card, live
    assert re.search(r'data-bind="bar" hidden', card)
    assert "Moved to kvm02 in 12 s." in card
    # One sample still draws a chart: from nothing sent at the start to all of it at the end.
    sent = re.search(r'points="([^"]*)" class="series" data-series="sent"', chart).group(1)
    assert len(sent.split()) == 3 and sent.split()[0] == "4.0,156.0" and sent.split()[-1].startswith("596.0,")


def test_a_failed_migration_shows_no_bar_no_phase_no_convergence_no_time_left(client, viewer, hosts, domain):
    migration = ended(
        domain,
        hosts[1],
        "failed",
        samples=[(n, {**LAST_SAMPLE, "data_processed": n * 25 * MIB}) for n in range(1, 48)],
        error="The migration did not converge within the policy's 45 s and was aborted.",
        stats={"data_transferred": 1200 * MIB, "iterations": 9, "speed_bps": 8 * MIB},
    )
    display = migration.as_event()["display"]
    assert display["bar"] is None and display["phase"] == "" and display["progress"] == []
    shown, card, chart = figures(page_of(client, viewer, migration))
    assert shown == {"Total time": "48 s", "Data sent": "1.2 GiB", "Passes over memory": "9"}
    for live in ("97", "Time left", "Converging", "converging", "Phase", "Transferring memory"):
        assert live not in card, live
    assert "Failed during “transferring memory”, after 48 s." in card
    assert re.search(r'data-bind="bar" hidden', card)


def test_a_cold_migration_shows_its_copy_while_it_runs_and_no_downtime_after(client, viewer, hosts, domain):
    started = timezone.now() - timedelta(seconds=20)
    migration = migration_for(
        domain, hosts[1], mode="cold", storage="copy", status="running", phase="copying_disk", started_at=started
    )
    for n in range(1, 5):
        migration.save_progress(
            {
                "percent": n * 20.0,
                "data_total": 1000 * MIB,
                "data_processed": n * 200 * MIB,
                "data_remaining": 1000 * MIB - n * 200 * MIB,
                "speed_bps": 50 * MIB,
                "eta_seconds": 5 - n,
                "elapsed": n * 4.0,
                "sampled_at": started.timestamp() + n * 4,
            }
        )
    shown, card, chart = figures(page_of(client, viewer, migration))
    assert shown == {
        "Copied": "800.0 MiB",
        "To copy": "1000.0 MiB",
        "Speed": "50.0 MiB/s",
        "Time left (estimate)": "1 s",
        "Elapsed": "16 s",
    }
    assert "800.0 MiB of 1000.0 MiB copied" in card
    # A copy only grows: its bar is the one bar that never goes backwards.
    assert re.search(r'data-bind="bar"><span data-percent="80">', card)

    Migration.objects.filter(pk=migration.pk).update(
        status="succeeded",
        phase="done",
        finished_at=started + timedelta(seconds=25),
        stats={"time_ms": 25000, "data_transferred": 1000 * MIB, "disk_total": 1000 * MIB, "downtime_ms": None},
    )
    shown, card, chart = figures(page_of(client, viewer, migration))
    assert shown == {"Total time": "25 s", "Disk data copied": "1000.0 MiB"}
    assert "Downtime" not in card and "—" not in card
    sent = re.search(r'points="([^"]*)" class="series" data-series="sent"', chart).group(1).split()
    assert len(sent) == 6 and sent[-1] == "596.0,4.0"
    # Only bytes copied: what is left of a copy would mirror it.
    assert re.search(r'points="" class="series remaining"', chart)


def test_a_cancelled_migration_that_sent_little_scales_its_chart_to_what_it_sent(client, viewer, hosts, domain):
    migration = ended(
        domain,
        hosts[1],
        "cancelled",
        seconds=10,
        samples=[(n, {**LAST_SAMPLE, "data_processed": n * 4 * MIB, "memory_remaining": 1}) for n in range(1, 9)],
        error="Cancelled.",
    )
    html = page_of(client, viewer, migration)
    assert "top: 1 B" not in html
    assert re.search(r"top: (\d+\.\d) MiB, 10 s shown", html).group(1) == "32.0"
    assert "Cancelled during “transferring memory”, after 10 s." in html


def test_every_event_is_kept_and_the_page_links_to_them_all(client, viewer, hosts, domain):
    migration = migration_for(domain, hosts[1], status="running", phase="transferring_memory")
    for n in range(130):
        migration.note(f"Step {n}.")
    migration.refresh_from_db()
    assert len(migration.events) == 130

    client.force_login(viewer)
    html = client.get(f"/migrations/{migration.pk}/").content.decode()
    assert 'The newest <span data-bind="events-shown">50</span> of <span data-bind="events-total">130</span>' in html
    assert "Step 129." in html and "Step 79." not in html
    assert f'href="/migrations/{migration.pk}/events/"' in html

    first = client.get(f"/migrations/{migration.pk}/events/").content.decode()
    assert re.findall(r"</time> (Step \d+\.)</li>", first) == [f"Step {n}." for n in range(100)]
    assert "Page 1 of 2" in first
    second = client.get(f"/migrations/{migration.pk}/events/?page=2").content.decode()
    assert re.findall(r"</time> (Step \d+\.)</li>", second) == [f"Step {n}." for n in range(100, 130)]


def test_a_move_shorter_than_a_second_still_spans_the_whole_chart():
    from datetime import datetime, timedelta

    from migrations_app.display import CHART_PAD, CHART_WIDTH, chart
    from migrations_app.models import Migration

    started = datetime(2026, 12, 6, 1, 0, tzinfo=UTC)
    move = Migration(
        mode="live",
        status="succeeded",
        started_at=started,
        finished_at=started + timedelta(seconds=0.6),
        samples=[[started.timestamp() + 0.3, 50_000_000, 100_000_000]],
        stats={"data_transferred": 96_000_000},
    )
    last_x = float(chart(move)["points"].split()[-1].split(",")[0])
    assert last_x == pytest.approx(CHART_WIDTH - CHART_PAD)  # not 0.6 of it, as with a floor of one second
