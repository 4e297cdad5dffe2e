"""What the dashboard and the VM pages are told, read once per change for every socket.

Group ``dashboard`` gets every change of a migration's state (its row,
``Migration.as_line()``) and of the inventory (the VMs that changed, those
that went away, the hosts' counts): ``{"type": "dashboard.update",
"migration" or "inventory": ..., "hosts": [...] or None}``. Group
``domain-<id>`` gets the changes of that one VM, for its page:
``{"type": "domain.update", "domain": {...}, "sent_at": ...}``, the domain
being ``Domain.as_event()`` or ``{"id", "removed": true}``.

The apps below never import this one: they send signals
(``hosts.signals.inventory_changed``, ``migrations_app.events.migration_published``),
connected to the receivers here in ``apps.py``.
"""

import logging
import time
from collections.abc import Sequence
from typing import Any

from core.publishing import send_to_groups
from hosts.models import Domain
from migrations_app.models import Migration

from .counts import HostCounts, host_counts

log = logging.getLogger(__name__)

DASHBOARD_GROUP = "dashboard"
# Beyond this many VMs changed at once, an inventory message names none of them.
INVENTORY_DETAIL_LIMIT = 200


def domain_group(pk: int) -> str:
    """The group of one VM's page."""
    return f"domain-{pk}"


def _host_counts() -> list[HostCounts] | None:
    """The hosts' counts, read once here for every socket that shows them
    (each would otherwise read them itself, one after another in its web process)."""
    try:
        return host_counts()
    except Exception as e:
        log.warning("could not count the hosts for the dashboard: %s", e)
        return None


def on_migration_published(
    sender: type[Migration],
    migration: Migration,
    dashboard: bool = True,
    counts: bool = True,
    sent_at: float | None = None,
    **kwargs: Any,
) -> None:
    """A migration's row to the dashboards; never raises. ``counts=False`` for a
    change that leaves the hosts' counts as they were (a note, a phase): the
    message then carries none, and the rare dashboard that needs them reads them itself."""
    if not dashboard:
        return
    hosts = _host_counts() if counts else None
    line = migration.as_line()
    line["sent_at"] = sent_at if sent_at is not None else time.time()
    try:
        send_to_groups((DASHBOARD_GROUP, {"type": "dashboard.update", "migration": line, "hosts": hosts}))
    except Exception as e:
        log.warning("could not publish migration %s to the dashboard: %s", migration.pk, e)


def on_inventory_changed(sender: Any, hosts: list[str], domains: Sequence[int], **kwargs: Any) -> None:
    publish_inventory(hosts, domains)


def publish_inventory(hosts: list[str], domain_ids: Sequence[int]) -> None:
    """Tell the dashboards what changed in the inventory of these hosts (the
    VMs' new state, which are gone, the hosts' counts) and each changed VM's
    page its own VM's news; never raises. With no ``domain_ids``, only the
    hosts' counts go out (a host went into maintenance, a migration ended)."""
    # Taken before the read: a VM page's socket drops news read before its own first read.
    sent_at = time.time()
    try:
        if len(domain_ids) > INVENTORY_DETAIL_LIMIT:
            # A host's first sync: the pages reload what they show; the counts
            # and the split-brain alarms go out.
            domain_ids = list(Domain.objects.filter(pk__in=domain_ids, split_brain=True).values_list("pk", flat=True))
            gone: list[int] | None = []
        else:
            gone = None
        domains = [d.as_event() for d in Domain.objects.filter(pk__in=domain_ids).with_definitions()]
    except Exception:
        log.warning("could not read the VMs that changed on %s", ", ".join(hosts), exc_info=True)
        return
    if gone is None:
        gone = sorted(set(domain_ids) - {d["id"] for d in domains})
    inventory = {"hosts": hosts, "domains": domains, "removed": gone, "sent_at": sent_at}
    messages: list[tuple[str, dict[str, Any]]] = [
        (DASHBOARD_GROUP, {"type": "dashboard.update", "inventory": inventory, "hosts": _host_counts()})
    ]
    messages += [(domain_group(d["id"]), {"type": "domain.update", "domain": d, "sent_at": sent_at}) for d in domains]
    messages += [
        (domain_group(pk), {"type": "domain.update", "domain": {"id": pk, "removed": True}, "sent_at": sent_at})
        for pk in gone
    ]
    try:
        send_to_groups(*messages)
    except Exception as e:
        log.warning("could not publish the inventory of %s: %s", ", ".join(hosts), e)
