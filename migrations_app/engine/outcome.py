"""How a migration records what happens to it: notes, audit entries, and the
three endings (succeeded, failed, cancelled), each published to the browser."""

from __future__ import annotations

import logging
from typing import Any

from django.utils import timezone

from hosts.sync import sync_hosts

from .. import events
from ..models import AuditAction, AuditEntry, InvalidTransition, Migration

log = logging.getLogger(__name__)


class Cancelled(Exception):
    """The operator cancelled the migration; undo and stop."""


class Abort(Exception):
    """Stop the migration with this plain message, leaving the VM where it was."""

    def __init__(self, message: str, detail: str = "", code: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail
        self.code = code


def audit(migration: Migration, action: str, message: str, **data: Any) -> None:
    AuditEntry.record(action, message, migration=migration, **data)


def note(migration: Migration, message: str, audit_action: str | None = None, **data: Any) -> None:
    """A step or decision: in the migration's log, live in the browser, and
    (for decisions) in the audit log."""
    migration.add_event(message, **data)
    if audit_action:
        audit(migration, audit_action, message, **data)
    events.publish_migration(migration)


def cancel_requested(migration: Migration) -> bool:
    return Migration.objects.filter(pk=migration.pk, cancel_requested=True).exists()


def heartbeat(migration: Migration) -> None:
    Migration.objects.filter(pk=migration.pk).update(updated_at=timezone.now())


def finish_failed(
    migration: Migration, message: str, detail: str = "", code: str = "", stats: dict[str, Any] | None = None
) -> None:
    try:
        migration.fail(message, detail, code, stats)
    except InvalidTransition:
        return
    audit(migration, AuditAction.FAILED, message, outcome="failed", detail=detail, code=code)
    events.publish_migration(migration)


def finish_cancelled(migration: Migration, message: str) -> None:
    try:
        migration.cancel(message)
    except InvalidTransition:
        return
    audit(migration, AuditAction.CANCELLED, message, outcome="cancelled")
    events.publish_migration(migration)


def finish_succeeded(migration: Migration, stats: dict[str, Any]) -> None:
    try:
        migration.succeed(stats)
    except InvalidTransition:
        return
    audit(
        migration,
        AuditAction.SUCCEEDED,
        f"{migration.domain_name} now runs on {migration.target_name} ({_summary(stats)}).",
        outcome="succeeded",
        stats=stats,
    )
    events.publish_migration(migration)


def _summary(stats: dict[str, Any]) -> str:
    parts = []
    if stats.get("time_ms") is not None:
        parts.append(f"{stats['time_ms'] / 1000:.1f} s")
    if stats.get("downtime_ms") is not None:
        parts.append(f"{stats['downtime_ms']} ms downtime")
    if stats.get("data_transferred") is not None:
        parts.append(f"{stats['data_transferred'] / 1048576:.0f} MiB sent")
    return ", ".join(parts) or "done"


def refresh_inventory(migration: Migration) -> None:
    """Both hosts' inventory as it is now, read side by side."""
    names = [h.name for h in (migration.source, migration.target) if h is not None]
    try:
        sync_hosts(names)
    except Exception:
        log.warning("inventory refresh of %s failed", ", ".join(names), exc_info=True)
    events.publish_dashboard("inventory", {"hosts": [migration.source_name, migration.target_name]})
