"""RQ jobs. They take primary keys, never model instances."""

import logging
from datetime import timedelta

import django_rq

from . import engine
from .models import Migration, Status

log = logging.getLogger(__name__)

# How long a migration waits before asking again for a free slot on its hosts.
SLOT_RETRY_SECONDS = 5


def run_migration(pk):
    migration = Migration.objects.select_related("source", "target").filter(pk=pk).first()
    if migration is None or migration.status != Status.QUEUED:
        return f"migration {pk} is not queued; nothing to do"
    if migration.source is None or migration.target is None:
        engine.finish_failed(migration, "A host of this migration was removed from kvmweb.", code="host_gone")
        return "failed"
    if not engine.claim(migration):
        if migration.status != Status.QUEUED:
            return migration.status  # the target cannot hold the guest: failed, and why
        migration.wait_for_slot()
        django_rq.get_queue("migrations").enqueue_in(
            timedelta(seconds=SLOT_RETRY_SECONDS), run_migration, pk, job_id=f"migration-{pk}-retry"
        )
        return "waiting for a slot"
    engine.run(migration)
    migration.refresh_from_db()
    return migration.status
