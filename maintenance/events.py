"""An evacuation's state, told to its page: the lifecycle hook of every
evacuation (``models.evacuation_changed``: the audit entry, then the publish)
and its moves' progress, passed on from their migrations."""

import logging
import time
from typing import Any

from core.publishing import send_to_groups
from migrations_app.models import FINISHED as MIGRATION_FINISHED
from migrations_app.models import AuditEntry, Migration
from migrations_app.models import Status as MigrationStatus

from .models import ACTIVE, Evacuation, evacuation_changed

log = logging.getLogger(__name__)


def group(pk: int) -> str:
    return f"evacuation-{pk}"


def state(evacuation: Evacuation) -> dict[str, Any]:
    migrations = {m.pk: m for m in evacuation.migrations.all()}
    return evacuation.as_event(migrations)


# How often, at most, a move's progress is passed on to its evacuation's page
# (per move and process): each time sends the whole plan. Checked before the
# database is asked which evacuation the move belongs to: every migration's
# progress samples come here, twice a second each, most of them no evacuation's.
PROGRESS_EVERY_SECONDS = 1.0
_progress_sent: dict[int, float] = {}


def on_migration_published(sender: Any, migration: Migration, **kwargs: Any) -> None:
    """A move's news, passed on to its evacuation's page: its state at once,
    its progress at most once a PROGRESS_EVERY_SECONDS."""
    if migration.status == MigrationStatus.RUNNING:  # a progress sample, or a phase or note while it runs
        now = time.monotonic()
        if now - _progress_sent.get(migration.pk, 0.0) < PROGRESS_EVERY_SECONDS:
            return
        _progress_sent[migration.pk] = now
    elif migration.status in MIGRATION_FINISHED:
        _progress_sent.pop(migration.pk, None)
    for evacuation in Evacuation.objects.filter(migrations=migration.pk, status__in=ACTIVE):
        publish(evacuation)


def publish(evacuation: Evacuation, unless: dict[str, Any] | None = None) -> dict[str, Any]:
    """Send the evacuation's full state to its page, unless it is ``unless`` (what
    was sent last); returns the state. Never raises."""
    current = state(evacuation)
    if current == unless:
        return current
    try:
        send_to_groups((group(evacuation.pk), {"type": "evacuation.update", "evacuation": current}))
    except Exception as e:
        log.warning("could not publish evacuation %s: %s", evacuation.pk, e)
    return current


def on_evacuation_changed(
    sender: type[Evacuation],
    evacuation: Evacuation,
    audit: tuple[str, str] | None,
    user: Any,
    data: dict[str, Any],
    **kwargs: Any,
) -> None:
    """The lifecycle hook of every evacuation: the audit entry, found under its
    host's name, if the change is one an auditor wants; then its page is told."""
    if audit is not None:
        action, message = audit
        AuditEntry.record(action, message, user=user, host=evacuation.host_name, evacuation=evacuation.pk, **data)
    publish(evacuation)


evacuation_changed.connect(on_evacuation_changed, sender=Evacuation, dispatch_uid="evacuation-lifecycle")
