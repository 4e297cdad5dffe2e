"""Progress and state changes, published to the channel layer for browsers.

Group ``migration-<id>`` gets every update of one migration; group
``dashboard`` gets every state change of any migration and of the inventory.
Messages are ``{"type": "migration.update", "migration": {...}}`` (and
``dashboard.update``); consumers forward them as JSON with the same shape.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from django.dispatch import Signal

from core.publishing import send_to_groups
from hosts import capacity
from hosts.models import Domain

from .models import FINISHED, AuditEntry, Migration, migration_changed, migration_ended

log = logging.getLogger(__name__)

DASHBOARD_GROUP = "dashboard"
# Beyond this many VMs changed at once, an inventory message names none of them.
INVENTORY_DETAIL_LIMIT = 200


# Sent after each publish of a migration's state (``migration``): whoever shows
# it as part of something larger (an evacuation's page) tells its own watchers.
# Receivers must be quick and must not raise.
migration_published = Signal()


def migration_group(pk: int) -> str:
    return f"migration-{pk}"


def host_counts() -> list[dict[str, Any]]:
    """Every host's domain counts and committed memory, as the dashboard shows them: one query."""
    hosts = capacity.with_counts()
    return [
        {
            "name": h.name,
            "status": h.status,
            "domain_count": h.domain_count,
            "running_count": h.running_count,
            "capacity": h.capacity.as_bar(),
            "maintenance": h.maintenance,
        }
        for h in hosts
    ]


def _host_counts() -> list[dict[str, Any]] | None:
    """The hosts' counts the dashboard shows, read once here for every socket
    that shows them (each would otherwise read them itself, one after another
    in its web process)."""
    try:
        return host_counts()
    except Exception as e:
        log.warning("could not count the hosts for the dashboard: %s", e)
        return None


def publish_migration(migration: Migration, dashboard: bool = True, counts: bool = True) -> None:
    """Send a migration's full state to its watchers, and its dashboard row
    (``as_line``) to the dashboards. Never raises: a migration must not fail
    because nobody could be told about it.

    Its own watchers are told first: the dashboard's message waits for the
    hosts' counts (a query of ~10 ms), and a user waiting for `succeeded` on
    the migration's page need not wait for them. ``counts=False`` for a change
    that leaves the counts as they were (a note, a phase): the message then
    carries none, and the rare dashboard that needs them reads them itself."""
    payload = migration.as_event()
    payload["sent_at"] = time.time()
    try:
        send_to_groups((migration_group(migration.pk), {"type": "migration.update", "migration": payload}))
    except Exception as e:
        log.warning("could not publish migration %s: %s", migration.pk, e)
    try:
        migration_published.send(sender=type(migration), migration=migration)
    except Exception:
        log.exception("a receiver of migration %s's news failed", migration.pk)
    if not dashboard:
        return
    hosts = _host_counts() if counts else None
    line = migration.as_line()
    line["sent_at"] = payload["sent_at"]
    try:
        send_to_groups((DASHBOARD_GROUP, {"type": "dashboard.update", "migration": line, "hosts": hosts}))
    except Exception as e:
        log.warning("could not publish migration %s to the dashboard: %s", migration.pk, e)


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


def publish_dashboard(kind: str, data: Any) -> None:
    try:
        send_to_groups((DASHBOARD_GROUP, {"type": "dashboard.update", kind: data, "hosts": _host_counts()}))
    except Exception as e:
        log.warning("could not publish %s to the dashboard: %s", kind, e)


def publish_inventory(hosts: list[str], domain_ids: list[int]) -> None:
    """Tell the dashboard (and the VMs' pages, which listen to it) what changed
    in the inventory: the VMs' new state, and which ones are gone."""
    if len(domain_ids) > INVENTORY_DETAIL_LIMIT:
        # A host's first sync: the pages reload what they show; only the counts go out.
        domain_ids = list(Domain.objects.filter(pk__in=domain_ids, split_brain=True).values_list("pk", flat=True))
        gone: list[int] | None = []
    else:
        gone = None
    domains = [d.as_event() for d in Domain.objects.filter(pk__in=domain_ids).with_definitions()]
    if gone is None:
        gone = sorted(set(domain_ids) - {d["id"] for d in domains})
    publish_dashboard("inventory", {"hosts": hosts, "domains": domains, "removed": gone, "sent_at": time.time()})
