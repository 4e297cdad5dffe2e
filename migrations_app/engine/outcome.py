"""What the engine says happened: notes, and the three endings (succeeded,
failed, cancelled). The Migration model writes, audits and publishes them."""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from core.records import InvalidTransition
from hosts.libvirt import HostError
from hosts.models import Host
from hosts.signals import hosts_changed
from hosts.sync import sync_hosts

from ..models import AuditEntry, Migration
from ..policies import AUTOMATIC, Policy, automatic_policy, get_policy

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
    """An audit entry about a migration that is not a change of its state
    (reconciliation); the model audits its own changes."""
    AuditEntry.record(action, message, migration=migration, **data)


# The three endings. Each is a no-op when the migration has already ended
# (another path, such as a cancel, got there first); the model audits and
# publishes the change.


def finish_failed(
    migration: Migration, message: str, detail: str = "", code: str = "", stats: dict[str, Any] | None = None
) -> None:
    with contextlib.suppress(InvalidTransition):
        migration.fail(message, detail, code, stats)


def finish_cancelled(migration: Migration, message: str) -> None:
    with contextlib.suppress(InvalidTransition):
        migration.cancel(message)


def finish_succeeded(migration: Migration, stats: dict[str, Any]) -> None:
    with contextlib.suppress(InvalidTransition):
        migration.succeed(stats)


def hosts_of(migration: Migration) -> tuple[Host, Host]:
    """The source and target of a migration; a HostError if one was removed from kvmweb."""
    if migration.source is None or migration.target is None:
        raise HostError("A host of this migration was removed from kvmweb.", code="host_gone")
    return migration.source, migration.target


def policy_of(migration: Migration) -> Policy:
    """The policy a migration was requested with (checked when it was requested)."""
    if migration.policy == AUTOMATIC:
        return automatic_policy((migration.prediction or {}).get("method"))
    policy = get_policy(migration.policy)
    if policy is None:
        raise ValueError(f"migration {migration.pk} names an unknown policy {migration.policy!r}")
    return policy


def refresh_inventory(migration: Migration) -> None:
    """Both hosts' inventory as it is now, read side by side."""
    names = [h.name for h in (migration.source, migration.target) if h is not None]
    try:
        sync_hosts(names)
    except Exception:
        log.warning("inventory refresh of %s failed", ", ".join(names), exc_info=True)
    # Sent even when the read found nothing new (the event watcher stored the
    # move first): the counts the dashboard showed at `succeeded` may predate it.
    hosts_changed([migration.source_name, migration.target_name])
