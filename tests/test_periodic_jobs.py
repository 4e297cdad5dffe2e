"""The worker keeps the inventory fresh and looks for orphaned migrations on its own."""

import django_rq
import pytest
from rq.registry import ScheduledJobRegistry

from hosts.models import Host
from kvmweb import worker
from tests.testdriver import write_host

pytestmark = pytest.mark.django_db


def test_the_refresh_is_scheduled_once_however_many_workers_start(settings):
    settings.KVMWEB_SYNC_INTERVAL = 60
    queue = django_rq.get_queue("default")
    queue.connection.flushdb()

    first = worker.schedule_refresh(queue)
    second = worker.schedule_refresh(queue)

    assert first.id == second.id
    assert ScheduledJobRegistry(queue=queue).get_job_ids() == [first.id]


def test_the_refresh_job_syncs_every_host_and_schedules_the_next(settings, tmp_path):
    settings.KVMWEB_SYNC_INTERVAL = 60
    queue = django_rq.get_queue("default")
    queue.connection.flushdb()
    Host.objects.create(name="kvm01", uri=write_host(tmp_path, "kvm01", count=4))
    Host.objects.create(name="kvm02", uri="qemu+tcp://127.0.0.1:1/system")

    results = worker.refresh_inventory()

    assert results[0].startswith("kvm01: 4 domains") and results[1].startswith("kvm02: unreachable")
    assert Host.objects.get(name="kvm01").domains.count() == 4
    assert Host.objects.get(name="kvm02").status == "offline"
    [next_run] = ScheduledJobRegistry(queue=queue).get_job_ids()
    assert queue.fetch_job(next_run).func_name == "kvmweb.worker.refresh_inventory"


def test_no_refresh_is_scheduled_when_the_interval_is_zero(settings):
    settings.KVMWEB_SYNC_INTERVAL = 0
    queue = django_rq.get_queue("default")
    queue.connection.flushdb()
    assert worker.schedule_refresh(queue) is None
    assert ScheduledJobRegistry(queue=queue).get_job_ids() == []


def test_the_admin_sync_action_reads_the_hosts(client, owner, tmp_path):
    host = Host.objects.create(name="kvm01", uri=write_host(tmp_path, "kvm01", count=2))
    client.force_login(owner)
    response = client.post(
        "/admin/hosts/host/",
        {"action": "sync_now", "_selected_action": [str(host.pk)], "index": "0", "select_across": "0"},
        follow=True,
    )
    assert "Kvm01: 2 domains (2 new" in response.content.decode()  # the admin capitalises messages
    assert host.domains.count() == 2


def test_each_periodic_job_keeps_exactly_one_next_run_scheduled(settings, tmp_path):
    from rq import Queue, SimpleWorker

    settings.KVMWEB_SYNC_INTERVAL = 60
    # Plain rq: django-rq's queue would wait for the test's transaction to commit.
    configured = django_rq.get_queue("default")
    queue = Queue("default", connection=configured.connection, serializer=configured.serializer)
    queue.connection.flushdb()
    Host.objects.create(name="kvm01", uri=write_host(tmp_path, "kvm01", count=1))
    # As the worker does at start; then two runs, the second one started by
    # the scheduler from what the first scheduled.
    worker.start_periodic_jobs(queue)
    for _ in range(2):
        for job_id in ScheduledJobRegistry(queue=queue).get_job_ids():
            # What the scheduler does when the time comes, without the wait.
            queue.enqueue_job(queue.fetch_job(job_id))
            ScheduledJobRegistry(queue=queue).remove(job_id)
        SimpleWorker([queue], connection=queue.connection, serializer=queue.serializer).work(burst=True)

    assert queue.failed_job_registry.count == 0
    scheduled = ScheduledJobRegistry(queue=queue).get_job_ids()
    names = sorted(queue.fetch_job(job_id).func_name for job_id in scheduled)
    assert names == ["kvmweb.worker.reconcile_periodically", "kvmweb.worker.refresh_inventory"], (
        "a chain of periodic runs broke, or doubled"
    )
