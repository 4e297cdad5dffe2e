"""A migration's progress and changes of state, published to the channel layer for browsers.

Group ``migration-<id>`` gets every update of one migration:
``{"type": "migration.update", "migration": {...}}``, which its consumer
forwards as JSON with the same shape. Whoever shows migrations as part of
something larger (the dashboard, an evacuation's page) listens to
``migration_published`` and tells its own watchers: this app imports none of them.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from django.dispatch import Signal

from core.publishing import send_to_groups

from .models import FINISHED, AuditEntry, Migration, migration_changed, migration_ended

log = logging.getLogger(__name__)


# Sent after each publish of a migration's state: ``migration``; ``dashboard``
# (False: a change the dashboards need not hear of), ``counts`` (False: the
# change cannot alter the hosts' counts: a note, a phase) and ``sent_at`` (when
# the state was read). Receivers must be quick and must not raise.
migration_published = Signal()


def migration_group(pk: int) -> str:
    return f"migration-{pk}"


def publish_migration(migration: Migration, dashboard: bool = True, counts: bool = True) -> None:
    """Send a migration's full state to its watchers, then tell the receivers
    of ``migration_published`` (the dashboard, an evacuation's page). Never
    raises: a migration must not fail because nobody could be told about it.

    Its own watchers are told first: the dashboard's message waits for the
    hosts' counts (a query of ~10 ms), and a user waiting for `succeeded` on
    the migration's page need not wait for them."""
    payload = migration.as_event()
    payload["sent_at"] = time.time()
    try:
        send_to_groups((migration_group(migration.pk), {"type": "migration.update", "migration": payload}))
    except Exception as e:
        log.warning("could not publish migration %s: %s", migration.pk, e)
    # Robust: one receiver that fails leaves the others told.
    answers = migration_published.send_robust(
        sender=type(migration), migration=migration, dashboard=dashboard, counts=counts, sent_at=payload["sent_at"]
    )
    for receiver, answer in answers:
        if isinstance(answer, Exception):
            log.error("%r failed on migration %s's news: %r", receiver, migration.pk, answer, exc_info=answer)


def on_migration_changed(
    sender: type[Migration],
    migration: Migration,
    audit: tuple[str, str] | None,
    user: Any,
    dashboard: bool,
    counts: bool,
    data: dict[str, Any],
    **kwargs: Any,
) -> None:
    """The lifecycle hook of every migration (``models.migration_changed``): the
    audit entry, if the change is one an auditor wants, then the new state to
    every watcher, then, once it has ended, ``migration_ended``."""
    if audit is not None:
        action, message = audit
        AuditEntry.record(action, message, user=user, migration=migration, **data)
    publish_migration(migration, dashboard=dashboard, counts=counts)
    if migration.status in FINISHED:
        migration_ended.send(sender=Migration, migration=migration)


migration_changed.connect(on_migration_changed, sender=Migration, dispatch_uid="migration-lifecycle")
