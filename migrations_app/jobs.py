"""RQ jobs. They take primary keys, never model instances.

Migrations run on the ``migrations`` queue (the pool's migration slots), one
job per migration; what waits for a host's slot is woken when a migration on
that host ends, and also looks again every SLOT_RETRY_SECONDS in case a wake
was lost. Whoever cares that a migration's job is over (an evacuation waiting
for its moves) listens to ``migration_job_done``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

import django_rq
from django.db.models import Q
from django.dispatch import Signal

from hosts.libvirt import HostError, open_host
from hosts.models import Domain

from . import engine, measure
from .engine.reconcile import is_orphaned
from .models import Migration, Phase, Status, migration_ended
from .waiting import retry_id

log = logging.getLogger(__name__)

# How long a migration waits before asking again for a free slot on its hosts,
# at the latest: one that ends on either host wakes it at once.
SLOT_RETRY_SECONDS = 5

# Sent in the worker when a migration's job is over and its record is final
# (not for a run that found no slot and waits again): the two hosts' inventory
# has been read again.
# ``migration`` is the Migration. Receivers must be quick and must not raise.
migration_job_done = Signal()


def run_migration(pk: int) -> str:
    migration = Migration.objects.select_related("source", "target").filter(pk=pk).first()
    if migration is None or migration.status != Status.QUEUED:
        return f"migration {pk} is not queued; nothing to do"
    try:
        return _run(migration)
    finally:
        if migration.status != Status.QUEUED:  # still waiting for a slot: nothing ended
            _done(migration)


def _run(migration: Migration) -> str:
    if migration.source is None or migration.target is None:
        engine.finish_failed(migration, "A host of this migration was removed from kvmweb.", code="host_gone")
        return "failed"
    if not engine.claim(migration):
        if migration.status != Status.QUEUED:
            return migration.status  # the target cannot hold the guest: failed, and why
        migration.wait_for_slot()
        django_rq.get_queue("migrations").enqueue_in(
            timedelta(seconds=SLOT_RETRY_SECONDS), run_migration, migration.pk, job_id=retry_id(migration.pk)
        )
        return "waiting for a slot"
    engine.run(migration)
    migration.refresh_from_db()
    return migration.status


def reconcile_migration(pk: int) -> str:
    """Settle or adopt one migration whose worker died (see engine.reconcile).

    A migration slot's job, not a short one: adopting a live migration that
    libvirtd still drives means governing it until it ends."""
    migration = Migration.objects.select_related("source", "target").filter(pk=pk).first()
    if migration is None or migration.status not in (Status.CHECKING, Status.RUNNING):
        return f"migration {pk} is not active; nothing to do"
    if not is_orphaned(migration):
        return f"migration {pk} has a worker again; nothing to do"
    try:
        return engine.reconcile(migration)
    finally:
        migration.refresh_from_db()
        _done(migration)


def _done(migration: Migration) -> None:
    try:
        migration_job_done.send(sender=Migration, migration=migration)
    except Exception:
        log.exception("a receiver of migration %s's end failed", migration.pk)


def on_migration_ended(sender: type[Migration], migration: Migration, **kwargs: Any) -> None:
    """A migration reached its final state: its hosts' slots are free now,
    before its job reads their inventory again."""
    if migration.source_id and migration.target_id:
        try:
            wake_waiting([migration.source_id, migration.target_id])
        except Exception:
            log.exception("could not wake the migrations waiting for %s's hosts", migration.pk)


migration_ended.connect(on_migration_ended, sender=Migration, dispatch_uid="wake-waiting-migrations")


def wake_waiting(host_ids: Iterable[int]) -> list[int]:
    """Queue at once the migrations waiting for a slot on these hosts, oldest
    first, instead of at their next look: a slot just freed there."""
    waiting = list(
        Migration.objects.filter(status=Status.QUEUED, phase=Phase.WAITING)
        .filter(Q(source_id__in=host_ids) | Q(target_id__in=host_ids))
        .order_by("-created_at", "-pk")
        .values_list("pk", flat=True)
    )
    if not waiting:
        return []
    queue = django_rq.get_queue("migrations")
    for pk in waiting:  # newest first, each to the front: the oldest ends up first
        queue.scheduled_job_registry.remove(retry_id(pk))
        queue.enqueue(run_migration, pk, job_id=retry_id(pk), at_front=True)
    return waiting[::-1]


def measure_domain(pk: int) -> dict[str, Any]:
    """A short job (the ``default`` queue): measure a running VM's dirty rate
    with libvirt's page sampling (about 7 s), kept for the checks (measure.py)."""
    domain = Domain.objects.select_related("host").filter(pk=pk).first()
    if domain is None or domain.host is None:
        return {"error": "This VM is gone."}
    try:
        with open_host(domain.host.connect_uri()) as conn:
            figure = measure.sample_now(conn, domain.uuid)
    except HostError as e:
        measure.remember_failure(domain.uuid, e.plain)
        return {"error": e.plain}
    return figure.as_dict()
