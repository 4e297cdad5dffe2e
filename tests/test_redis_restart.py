"""After Redis restarts without its data, queued migrations and the periodic jobs are not lost for good."""

from datetime import timedelta

import django_rq
import pytest
from django.utils import timezone
from rq.registry import ScheduledJobRegistry

from hosts.models import Domain, Host
from kvmweb import worker
from migrations_app.services import requeue_lost
from tests.migration_helpers import migration_for

# Transactional: the worker queues jobs in autocommit, not at the end of a test's transaction.
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def hosts():
    kvm01 = Host.objects.create(name="kvm01", uri="test:///default", status="online")
    kvm02 = Host.objects.create(name="kvm02", uri="test:///kvm02", status="online")
    return kvm01, kvm02


def domain(host, name):
    import uuid

    return Domain.objects.create(uuid=uuid.uuid4(), name=name, host=host, state="running")


def test_a_queued_migration_whose_job_redis_lost_is_queued_again(hosts):
    kvm01, kvm02 = hosts
    queue = django_rq.get_queue("migrations", commit_mode="auto")
    queue.connection.flushdb()
    an_hour_ago = timezone.now() - timedelta(hours=1)
    lost = migration_for(domain(kvm01, "lost"), kvm02, created_at=an_hour_ago)
    still_queued = migration_for(domain(kvm01, "waiting"), kvm02, created_at=an_hour_ago)
    just_asked = migration_for(domain(kvm01, "new"), kvm02)  # its commit is about to queue it
    running = migration_for(domain(kvm01, "busy"), kvm02, created_at=an_hour_ago, status="running")
    queue.enqueue("migrations_app.jobs.run_migration", still_queued.pk, job_id=f"migration-{still_queued.pk}")
    # Waiting for a slot: its retry is scheduled, though the retry that
    # scheduled it under the same id has marked that id finished.
    waiting = migration_for(domain(kvm01, "slot"), kvm02, created_at=an_hour_ago, phase="waiting")
    retry = queue.enqueue_in(
        timedelta(seconds=60), "migrations_app.jobs.run_migration", waiting.pk, job_id=f"migration-{waiting.pk}-retry"
    )
    retry.set_status("finished")

    assert requeue_lost() == [lost.pk]

    job = queue.fetch_job(f"migration-{lost.pk}")
    assert job is not None and job.get_status() == "queued" and list(job.args) == [lost.pk]  # JSON jobs: a list
    assert queue.fetch_job(f"migration-{just_asked.pk}") is None
    assert queue.fetch_job(f"migration-{waiting.pk}") is None
    assert queue.fetch_job(f"migration-{running.pk}") is None
    assert requeue_lost() == []  # now it has its job


def test_the_worker_schedules_the_periodic_jobs_again_when_redis_lost_them(settings):
    settings.KVMWEB_SYNC_INTERVAL = 60
    queue = django_rq.get_queue("default")
    queue.connection.flushdb()  # as after a restart without persistence
    rq_worker = worker.Worker([queue], connection=queue.connection)

    rq_worker.run_maintenance_tasks()

    scheduled = [queue.fetch_job(i).func_name for i in ScheduledJobRegistry(queue=queue).get_job_ids()]
    assert sorted(scheduled) == ["kvmweb.worker.reconcile_periodically", "kvmweb.worker.refresh_inventory"]
    rq_worker.run_maintenance_tasks()  # and only once, however often it looks
    assert len(ScheduledJobRegistry(queue=queue).get_job_ids()) == 2
