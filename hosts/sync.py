"""Inventory sync: make the database say what libvirt says, one host at a time."""

import logging
import uuid as uuidlib
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass

from django.db import transaction
from django.utils import timezone

from .libvirt import HostError, open_host
from .models import Domain, Host, Network, StoragePool

log = logging.getLogger(__name__)

DOMAIN_FIELDS = (
    "name",
    "host_id",
    "state",
    "memory",
    "max_memory",
    "hugepage_kib",
    "vcpus",
    "persistent",
    "autostart",
    "disks",
    "interfaces",
    "last_seen",
)


@dataclass
class SyncResult:
    host: str
    online: bool
    domains: int = 0
    created: int = 0
    moved: int = 0
    removed: int = 0
    error: str = ""

    def __str__(self):
        if not self.online:
            return f"{self.host}: unreachable — {self.error}"
        return f"{self.host}: {self.domains} domains ({self.created} new, {self.moved} moved here, {self.removed} gone)"


def read_inventory(uri, timeout=None):
    """What libvirt says of one host: an Inventory, or the HostError that stopped it."""
    try:
        with open_host(uri, timeout=timeout) as conn:
            return conn.inventory()
    except HostError as e:
        return e


def sync_host(host, timeout=None):
    """Read one host's inventory from libvirt and store it."""
    return store(host, read_inventory(host.uri, timeout))


def store(host, inventory):
    """Store what was read. A host that could not be read is marked offline
    with the reason, and what was last known of it is kept, not deleted: an
    administrator at 3 a.m. wants to see which VMs *were* on the host that
    just went away."""
    if isinstance(inventory, HostError):
        host.mark_unreachable(inventory)
        host.save(update_fields=["status", "status_reason", "status_detail", "last_sync"])
        log.warning("sync %s: %s (%s)", host.name, inventory.plain, inventory.detail)
        return SyncResult(host=host.name, online=False, error=inventory.plain)
    return store_inventory(host, inventory)


@transaction.atomic
def store_inventory(host, inventory):
    host.mark_online(inventory.host)
    # update_fields: a host deleted while its inventory was being read must
    # not be brought back by this save.
    host.save(update_fields=Host.STATUS_FIELDS + Host.LIBVIRT_FACTS)
    _store_pools(host, inventory.pools)
    _store_networks(host, inventory.networks)
    return _store_domains(host, inventory.domains)


def _replace_children(model, host, items, fields):
    """Upsert a host's pools or networks by name; delete the ones gone."""
    existing = {obj.name: obj for obj in model.objects.filter(host=host)}
    create, update = [], []
    for item in items:
        values = {f: getattr(item, f) for f in fields}
        obj = existing.pop(item.name, None)
        if obj is None:
            create.append(model(host=host, name=item.name, **values))
        else:
            for f, v in values.items():
                setattr(obj, f, v)
            update.append(obj)
    model.objects.bulk_create(create)
    if update:
        model.objects.bulk_update(update, fields)
    if existing:
        model.objects.filter(pk__in=[o.pk for o in existing.values()]).delete()


def _store_pools(host, pools):
    _replace_children(
        StoragePool,
        host,
        pools,
        ("uuid", "type", "target_path", "capacity", "allocation", "available", "active", "shared"),
    )


def _store_networks(host, networks):
    _replace_children(Network, host, networks, ("uuid", "bridge", "forward_mode", "active"))


def _store_domains(host, domains):
    now = timezone.now()
    seen = {uuidlib.UUID(d.uuid): d for d in domains}
    # Rows for these UUIDs wherever they are: a domain that moved to this host
    # keeps its row (and its migration history) instead of getting a new one.
    existing = {d.uuid: d for d in Domain.objects.filter(uuid__in=seen.keys())}
    create, update = [], []
    moved = 0
    for uuid, info in seen.items():
        values = {
            "name": info.name,
            "host_id": host.pk,
            "state": info.state,
            "memory": info.memory,
            "max_memory": info.max_memory,
            "hugepage_kib": info.hugepage_kib,
            "vcpus": info.vcpus,
            "persistent": info.persistent,
            "autostart": info.autostart,
            "disks": [asdict(d) for d in info.disks],
            "interfaces": [asdict(i) for i in info.interfaces],
            "last_seen": now,
        }
        row = existing.get(uuid)
        if row is None:
            create.append(Domain(uuid=uuid, **values))
            continue
        if row.host_id != host.pk:
            moved += 1
            log.info("domain %s moved from host %s to %s", info.name, row.host_id, host.name)
        # Most refreshes change nothing: write only the rows that did change.
        if any(getattr(row, f) != v for f, v in values.items() if f != "last_seen"):
            for f, v in values.items():
                setattr(row, f, v)
            update.append(row)
    Domain.objects.bulk_create(create, batch_size=500)
    if update:
        Domain.objects.bulk_update(update, DOMAIN_FIELDS, batch_size=500)
    removed, _ = Domain.objects.filter(host=host).exclude(uuid__in=seen.keys()).delete()
    Domain.objects.filter(host=host).update(last_seen=now)
    return SyncResult(
        host=host.name,
        online=True,
        domains=len(seen),
        created=len(create),
        moved=moved,
        removed=removed,
    )


def sync_hosts(names=None, timeout=None, readers=4):
    """Sync several hosts: libvirt is read in parallel, the database written in
    this thread, one transaction per host as each read completes.

    In parallel, one host that does not answer costs its timeout once rather
    than delaying every host after it, and hosts far away overlap their round
    trips. libvirt releases the GIL while it waits or parses.
    """
    hosts = list(Host.objects.all() if not names else Host.objects.filter(name__in=names))
    if not hosts:
        return []
    results = {}
    with ThreadPoolExecutor(max_workers=min(readers, len(hosts)), thread_name_prefix="sync") as pool:
        futures = {pool.submit(read_inventory, host.uri, timeout): host for host in hosts}
        for future in as_completed(futures):
            host = futures[future]
            results[host.pk] = store(host, future.result())
    return [results[host.pk] for host in hosts]


def sync_all_job():
    """RQ job: the periodic refresh of every host."""
    results = sync_hosts()
    return [str(r) for r in results]
