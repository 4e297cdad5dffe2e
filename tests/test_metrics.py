"""/metrics: refused without the token or an allowed address; figures follow the database and the queues."""

import shutil
import subprocess
import uuid
from datetime import timedelta

import django_rq
import pytest
from django.core.exceptions import ImproperlyConfigured
from prometheus_client.parser import text_string_to_metric_families

from hosts.models import Domain, Host
from hosts.sync import sync_host
from kvmweb.settings import env_networks
from migrations_app.models import Migration
from tests.migration_helpers import domain, migration_for, register_lab, request, run
from tests.testdriver import write_host

pytestmark = pytest.mark.django_db

TOKEN = "s3cret-metrics-token"


@pytest.fixture
def open_to_token(settings):
    settings.KVMWEB_METRICS_TOKEN = TOKEN
    settings.KVMWEB_METRICS_ALLOW = []


def scrape(client):
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=")
    samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples, name, **labels):
    return samples[(name, tuple(sorted(labels.items())))]


def test_nobody_gets_the_metrics_when_neither_token_nor_addresses_are_configured(client, owner, settings):
    settings.KVMWEB_METRICS_TOKEN = ""
    settings.KVMWEB_METRICS_ALLOW = []
    assert client.get("/metrics").status_code == 403
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer ").status_code == 403
    # Not even a logged-in superuser: the endpoint is for the monitoring system.
    client.force_login(owner)
    assert client.get("/metrics").status_code == 403


def test_a_scrape_needs_the_exact_bearer_token(client, open_to_token):
    assert client.get("/metrics").status_code == 403
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}x").status_code == 403
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Token {TOKEN}").status_code == 403
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 200


def test_an_allowed_address_needs_no_token_and_others_are_refused(client, settings, monkeypatch):
    monkeypatch.setenv("KVMWEB_METRICS_ALLOW", "10.1.2.0/24,::1")
    settings.KVMWEB_METRICS_TOKEN = ""
    settings.KVMWEB_METRICS_ALLOW = env_networks("KVMWEB_METRICS_ALLOW")
    assert client.get("/metrics", REMOTE_ADDR="10.1.2.77").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="::1").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="10.1.3.1").status_code == 403
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 403
    assert client.post("/metrics", REMOTE_ADDR="10.1.2.77").status_code == 405


def test_a_malformed_allowlist_stops_the_program_with_a_message(monkeypatch):
    monkeypatch.setenv("KVMWEB_METRICS_ALLOW", "10.0.0.0/24,not-an-address")
    with pytest.raises(ImproperlyConfigured, match="KVMWEB_METRICS_ALLOW must list addresses or CIDRs"):
        env_networks("KVMWEB_METRICS_ALLOW")


def test_hosts_online_and_offline_follow_a_sync(client, open_to_token, tmp_path):
    uri = write_host(tmp_path, "kvm01", count=2)
    host = Host.objects.create(name="kvm01", uri=uri)
    before = scrape(client)
    assert value(before, "kvmweb_hosts", status="online") == 0
    assert value(before, "kvmweb_host_online", host="kvm01") == 0

    assert sync_host(host).online
    online = scrape(client)
    assert value(online, "kvmweb_hosts", status="online") == 1
    assert value(online, "kvmweb_host_online", host="kvm01") == 1

    (tmp_path / "kvm01.xml").unlink()  # the host's definition is gone: it cannot be reached
    assert not sync_host(host).online
    gone = scrape(client)
    assert value(gone, "kvmweb_hosts", status="online") == 0
    assert value(gone, "kvmweb_host_online", host="kvm01") == 0


def test_queue_depth_counts_jobs_waiting_for_a_worker(client, open_to_token):
    # At once, not at the end of the test's transaction.
    queue = django_rq.get_queue("migrations", commit_mode="auto")
    queue.empty()
    assert value(scrape(client), "kvmweb_queue_jobs", queue="migrations", state="queued") == 0
    jobs = [queue.enqueue("migrations_app.jobs.run_migration", 10**9 + i) for i in range(3)]
    try:
        samples = scrape(client)
        assert value(samples, "kvmweb_queue_jobs", queue="migrations", state="queued") == 3
        assert value(samples, "kvmweb_redis_up") == 1
    finally:
        for job in jobs:
            job.delete()


@pytest.mark.django_db(transaction=True)
def test_a_real_live_migration_shows_in_the_counts_durations_downtime_and_bytes(
    client, api, operator, open_to_token, lab, lab_guest
):
    hosts = register_lab(lab)
    name = lab_guest("kvm01", disk="shared")
    before = scrape(client)
    assert value(before, "kvmweb_migrations_finished_total", mode="live", outcome="succeeded") == 0

    response = request(api, operator, domain(name), hosts["kvm02"])
    assert response.status_code == 201, response.content
    migration = run(response.json()["id"])
    assert migration.status == "succeeded", migration.error

    after = scrape(client)
    assert value(after, "kvmweb_migrations_finished_total", mode="live", outcome="succeeded") == 1
    assert value(after, "kvmweb_migrations_active", status="queued", mode="live") == 0
    assert value(after, "kvmweb_migration_duration_seconds_count", mode="live") == 1
    seconds = (migration.finished_at - migration.started_at).total_seconds()
    assert value(after, "kvmweb_migration_duration_seconds_sum", mode="live") == pytest.approx(seconds, abs=0.01)
    assert value(after, "kvmweb_migration_duration_seconds_bucket", mode="live", le="+Inf") == 1
    assert value(after, "kvmweb_migration_downtime_seconds_count", mode="live") == 1
    downtime = migration.stats["downtime_ms"] / 1000
    assert value(after, "kvmweb_migration_downtime_seconds_sum", mode="live") == pytest.approx(downtime)
    assert value(after, "kvmweb_migration_moved_bytes_total", mode="live") == migration.stats["data_transferred"] > 0
    assert value(after, "kvmweb_hosts", status="online") == len(lab.hosts)


@pytest.fixture
def two_hosts():
    kvm01 = Host.objects.create(name="kvm01", uri="test:///default", status="online")
    kvm02 = Host.objects.create(name="kvm02", uri="test:///kvm02", status="online")
    return kvm01, kvm02


def ended(source, target, name, mode="live", outcome="succeeded", seconds=12.0, stats=None):
    """A migration taken through its real states to ``outcome``, as the worker takes it."""
    dom = Domain.objects.create(uuid=uuid.uuid4(), name=name, host=source, state="running")
    migration = migration_for(dom, target, mode=mode)
    migration.start_checking()
    migration.start()
    # As if it had started ``seconds`` ago.
    Migration.objects.filter(pk=migration.pk).update(started_at=migration.started_at - timedelta(seconds=seconds))
    migration.refresh_from_db()
    if outcome == "succeeded":
        migration.succeed(stats)
    elif outcome == "failed":
        migration.fail("The target refused the guest.")
    else:
        migration.cancel("Cancelled by the operator.")
    return migration


def test_an_ended_migration_is_counted_once_when_it_ends_not_recomputed_from_rows(client, open_to_token, two_hosts):
    kvm01, kvm02 = two_hosts
    stats = {"downtime_ms": 80, "data_transferred": 300 * 2**20}
    fast = ended(kvm01, kvm02, "web01", seconds=12, stats=stats)
    ended(kvm01, kvm02, "db01", mode="cold", outcome="failed")
    ended(kvm01, kvm02, "app01", outcome="cancelled")
    migration_for(Domain.objects.create(uuid=uuid.uuid4(), name="new01", host=kvm01), kvm02)  # still queued

    samples = scrape(client)
    assert value(samples, "kvmweb_migrations_finished_total", mode="live", outcome="succeeded") == 1
    assert value(samples, "kvmweb_migrations_finished_total", mode="cold", outcome="failed") == 1
    assert value(samples, "kvmweb_migrations_finished_total", mode="live", outcome="cancelled") == 1
    assert value(samples, "kvmweb_migrations_active", status="queued", mode="live") == 1
    seconds = (fast.finished_at - fast.started_at).total_seconds()
    assert 12 <= seconds < 13
    assert value(samples, "kvmweb_migration_duration_seconds_sum", mode="live") == pytest.approx(seconds)
    assert value(samples, "kvmweb_migration_duration_seconds_bucket", mode="live", le="10.0") == 0
    assert value(samples, "kvmweb_migration_duration_seconds_bucket", mode="live", le="30.0") == 1
    assert value(samples, "kvmweb_migration_duration_seconds_count", mode="cold") == 0  # a failure has no duration
    assert value(samples, "kvmweb_migration_downtime_seconds_sum", mode="live") == pytest.approx(0.08)
    assert value(samples, "kvmweb_migration_downtime_seconds_bucket", mode="live", le="0.05") == 0
    assert value(samples, "kvmweb_migration_downtime_seconds_bucket", mode="live", le="0.1") == 1
    assert value(samples, "kvmweb_migration_moved_bytes_total", mode="live") == 300 * 2**20

    # A note after the end (the signal an evacuation listens to fires again)
    # counts nothing twice; the counts outlive the rows they came from.
    fast.note("Source volumes removed.")
    Migration.objects.all().delete()
    again = scrape(client)
    assert value(again, "kvmweb_migrations_finished_total", mode="live", outcome="succeeded") == 1
    assert value(again, "kvmweb_migration_duration_seconds_count", mode="live") == 1
    assert value(again, "kvmweb_migrations_active", status="queued", mode="live") == 0


def test_a_queued_migration_cancelled_before_it_started_is_counted(client, open_to_token, two_hosts, operator):
    kvm01, kvm02 = two_hosts
    migration = migration_for(Domain.objects.create(uuid=uuid.uuid4(), name="web01", host=kvm01), kvm02)
    assert migration.request_cancel(operator) == "cancelled"
    assert value(scrape(client), "kvmweb_migrations_finished_total", mode="live", outcome="cancelled") == 1


def test_promtool_finds_nothing_wrong_in_a_real_scrape(client, open_to_token, two_hosts):
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not installed: `make test` installs it (Debian's prometheus package).")
    kvm01, kvm02 = two_hosts
    ended(kvm01, kvm02, "web01", stats={"downtime_ms": 80, "data_transferred": 2**20})
    ended(kvm01, kvm02, "db01", mode="cold", outcome="failed")
    predicted = migration_for(Domain.objects.create(uuid=uuid.uuid4(), name="app01", host=kvm01), kvm02)
    predicted.start_checking()
    predicted.record_prediction({"seconds": 9.0, "downtime_ms": 70, "passes": 2})
    predicted.start()
    predicted.succeed({"time_ms": 10000, "downtime_ms": 80})
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200
    exposition = response.content.decode()
    assert "kvmweb_migration_downtime_seconds_bucket" in exposition and "kvmweb_host_online" in exposition

    checked = subprocess.run([promtool, "check", "metrics"], input=exposition, capture_output=True, text=True)
    assert checked.returncode == 0 and not (checked.stdout + checked.stderr).strip(), checked.stdout + checked.stderr


def test_the_prediction_error_of_a_succeeded_live_migration_is_a_histogram(client, open_to_token, two_hosts):
    kvm01, kvm02 = two_hosts
    before = scrape(client)
    assert value(before, "kvmweb_migration_prediction_error_ratio_count", mode="live") == 0
    # Predicted 15 s, libvirt measured 12 s: 25 % off. One without a prediction is not counted.
    dom = Domain.objects.create(uuid=uuid.uuid4(), name="web01", host=kvm01, state="running")
    migration = migration_for(dom, kvm02)
    migration.start_checking()
    migration.record_prediction({"seconds": 15.0, "downtime_ms": 90, "passes": 3})
    migration.start()
    migration.succeed({"time_ms": 12000, "downtime_ms": 80, "iterations": 3})
    ended(kvm01, kvm02, "db01", stats={"time_ms": 5000})

    samples = scrape(client)
    assert value(samples, "kvmweb_migration_prediction_error_ratio_count", mode="live") == 1
    assert value(samples, "kvmweb_migration_prediction_error_ratio_sum", mode="live") == pytest.approx(0.25)
    assert value(samples, "kvmweb_migration_prediction_error_ratio_bucket", mode="live", le="0.1") == 0
    assert value(samples, "kvmweb_migration_prediction_error_ratio_bucket", mode="live", le="0.25") == 1
    assert migration.prediction_outcome() == {
        "seconds": (15.0, 12.0),
        "downtime_ms": (90, 80),
        "passes": (3, 3),
        "seconds_error": pytest.approx(0.25),
    }
