"""A queued migration says why it waits, with its place in line: on the API,
its page and the dashboard's row."""

import django_rq
import pytest
from rq import Worker

from hosts.models import Domain
from migrations_app.jobs import run_migration
from tests.migration_helpers import migration_for

pytestmark = pytest.mark.django_db


@pytest.fixture
def vms(testdriver_hosts):
    kvm01, kvm02 = testdriver_hosts
    first, second = Domain.objects.filter(host=kvm01).order_by("name")[:2]
    third = Domain.objects.create(uuid="11111111-2222-3333-4444-555555555555", name="third", host=kvm01)
    return kvm01, kvm02, first, second, third


def test_a_migration_behind_a_full_source_says_which_host_and_its_place(api, viewer, vms):
    kvm01, kvm02, first, second, third = vms
    kvm01.max_outgoing = 1
    kvm01.save(update_fields=["max_outgoing"])
    migration_for(first, kvm02, status="running")
    waiting = migration_for(second, kvm02)
    behind = migration_for(third, kvm02)

    assert waiting.waiting_reason() == "Waiting for a slot: kvm01 already sends 1 (limit 1); 1st in line"
    assert behind.waiting_reason().endswith("; 2nd in line")

    api.force_authenticate(viewer)
    body = api.get(f"/api/migrations/{waiting.pk}/").json()
    assert body["status"] == "queued"
    assert body["waiting_reason"] == "Waiting for a slot: kvm01 already sends 1 (limit 1); 1st in line"
    assert waiting.as_line()["waiting_reason"] == body["waiting_reason"]  # the dashboard's row


def test_a_migration_behind_a_full_target_says_so(vms):
    kvm01, kvm02, first, second, _ = vms
    kvm02.max_incoming = 1
    kvm02.save(update_fields=["max_incoming"])
    migration_for(first, kvm02, status="checking")

    assert migration_for(second, kvm02).waiting_reason() == (
        "Waiting for a slot: kvm02 already receives 1 (limit 1); 1st in line"
    )


def test_with_free_slots_it_waits_for_a_worker_and_says_how_many_are_busy(client, viewer, vms):
    kvm01, kvm02, first, second, _ = vms
    migration = migration_for(first, kvm02)
    assert "none is running" in migration.waiting_reason()

    queue = django_rq.get_queue("migrations", commit_mode="auto")  # now, not when the test's transaction ends
    busy = Worker([queue], connection=queue.connection, name="test-slot-1")
    busy.register_birth()
    try:
        busy.set_state("busy")
        queue.enqueue(run_migration, 0, job_id="someone-before")
        queue.enqueue(run_migration, migration.pk, job_id=f"migration-{migration.pk}")

        assert migration.waiting_reason() == "Waiting for a worker: 1 of 1 busy; 2nd in line"
        client.force_login(viewer)
        page = client.get(f"/migrations/{migration.pk}/").content.decode()
        assert "Waiting for a worker: 1 of 1 busy; 2nd in line" in page

        busy.set_state("idle")
        assert migration.waiting_reason() == "About to start: a worker is free."
    finally:
        busy.register_death()
        queue.empty()


def test_only_a_queued_migration_has_a_reason(vms):
    kvm01, kvm02, first, *_ = vms
    kvm01.max_outgoing = 0
    kvm01.save(update_fields=["max_outgoing"])
    assert migration_for(first, kvm02, status="running").waiting_reason() == ""
