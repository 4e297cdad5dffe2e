"""The lifecycle hook: a migration's and an evacuation's model send one signal
per change of state; its one receiver (the app's events module) writes the
audit entry and tells the browsers. The models import no publisher
(pyproject.toml, contract models-publish-nothing), so without the receiver a
change is recorded in its row and nowhere else."""

import uuid

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.layers import channel_layers

from maintenance import events as evacuation_events
from maintenance.models import Evacuation, Item, evacuation_changed
from maintenance.models import Status as EvacuationStatus
from migrations_app import events
from migrations_app.models import AuditAction, AuditEntry, Migration, Status, migration_changed, migration_ended

pytestmark = pytest.mark.django_db


def new_migration():
    return Migration.objects.create(
        domain_name="web01", domain_uuid=uuid.uuid4(), source_name="kvm01", target_name="kvm02", mode="live"
    )


def test_each_change_of_a_migration_is_sent_once_and_its_hook_audits_and_publishes(monkeypatch):
    sent, published, ended = [], [], []

    def spy(sender, migration, audit, **kwargs):
        sent.append((migration.status, audit[0] if audit else None))

    monkeypatch.setattr(events, "publish_migration", lambda m, **kw: published.append(m.status))
    migration_changed.connect(spy, dispatch_uid="test-spy")
    migration_ended.connect(lambda sender, migration, **kw: ended.append(migration.pk), weak=False, dispatch_uid="t")
    try:
        migration = new_migration()
        migration.start_checking()
        migration.start(worker="w1")
        migration.save_progress({"percent": 50})
        migration.succeed({"time_ms": 1200})
    finally:
        migration_changed.disconnect(dispatch_uid="test-spy")
        migration_ended.disconnect(dispatch_uid="t")

    assert sent == [
        (Status.CHECKING, None),
        (Status.RUNNING, AuditAction.START),
        (Status.RUNNING, None),
        (Status.SUCCEEDED, AuditAction.SUCCEEDED),
    ]
    assert published == [Status.CHECKING, Status.RUNNING, Status.RUNNING, Status.SUCCEEDED]
    assert ended == [migration.pk]
    entries = AuditEntry.objects.filter(migration=migration).order_by("at", "id")
    assert [(e.action, e.data.get("worker")) for e in entries] == [
        (AuditAction.START, "w1"),
        (AuditAction.SUCCEEDED, None),
    ]


def test_without_its_hook_a_migration_s_change_is_only_in_its_row(monkeypatch):
    published = []
    monkeypatch.setattr(events, "publish_migration", lambda m, **kw: published.append(m.status))
    assert migration_changed.disconnect(
        events.on_migration_changed, sender=Migration, dispatch_uid="migration-lifecycle"
    )
    try:
        migration = new_migration()
        migration.start_checking()
        migration.start()
        migration.fail("It broke.")
    finally:
        migration_changed.connect(events.on_migration_changed, sender=Migration, dispatch_uid="migration-lifecycle")
    migration.refresh_from_db()
    assert migration.status == Status.FAILED and migration.error == "It broke."
    assert published == [] and not AuditEntry.objects.filter(migration=migration).exists()


@pytest.mark.django_db(transaction=True)
def test_an_evacuation_s_end_is_audited_under_its_host_and_told_to_its_page(operator):
    item = {"domain": 1, "domain_name": "web01", "target": 2, "target_name": "kvm02", "state": Item.MOVED}
    evacuation = Evacuation.objects.create(
        host_name="kvm01", requested_by=operator, plan=[{**item, "migrations": [], "error": ""}]
    )
    received = []

    async def scenario():
        # A layer of its own to listen with, in one event loop (as test_publishing.py).
        layer = channel_layers.make_backend("default")
        channel = await layer.new_channel()
        await layer.group_add(evacuation_events.group(evacuation.pk), channel)
        await database_sync_to_async(evacuation.start)()
        received.append(await layer.receive(channel))
        await database_sync_to_async(evacuation.finish)(
            EvacuationStatus.SUCCEEDED, "", (AuditAction.EVACUATION, "Evacuation #1 of kvm01 succeeded."), outcome="ok"
        )
        received.append(await layer.receive(channel))
        await layer.group_discard(evacuation_events.group(evacuation.pk), channel)

    async_to_sync(scenario)()
    started, finished = received
    assert started["evacuation"]["status"] == "running"
    assert finished["type"] == "evacuation.update" and finished["evacuation"]["status"] == "succeeded"
    entry = AuditEntry.objects.get(action=AuditAction.EVACUATION)
    assert (entry.source_name, entry.username, entry.outcome) == ("kvm01", operator.username, "ok")
    assert entry.data == {"evacuation": evacuation.pk}


def test_without_its_hook_an_evacuation_s_change_is_only_in_its_row(operator):
    hook = evacuation_events.on_evacuation_changed
    assert evacuation_changed.disconnect(hook, sender=Evacuation, dispatch_uid="evacuation-lifecycle")
    try:
        evacuation = Evacuation.objects.create(host_name="kvm01", plan=[])
        evacuation.request_cancel(operator)
    finally:
        evacuation_changed.connect(hook, sender=Evacuation, dispatch_uid="evacuation-lifecycle")
    evacuation.refresh_from_db()
    assert evacuation.cancel_requested
    assert not AuditEntry.objects.exists()
