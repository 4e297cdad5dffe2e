"""Inventory sync: make the database say what libvirt says, one host at a time."""

import logging
import uuid as uuidlib
from dataclasses import asdict, dataclass

from django.db import transaction
from django.utils import timezone

from . import libvirt_client
from .models import Domain, Host, Network, StoragePool

log = logging.getLogger(__name__)

HOST_FACTS = (
    "status", "status_reason", "status_detail", "last_seen", "last_sync", "hostname", "host_uuid",
    "libvirt_version", "hypervisor_type", "hypervisor_version", "cpu_vendor", "cpu_model",
    "cpu_arch", "cpu_count", "cpu_xml", "memory_total", "memory_free",
)
DOMAIN_FIELDS = ("name", "host_id", "state", "memory", "vcpus", "persistent", "autostart",
                 "disks", "interfaces", "last_seen")


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
        return (
            f"{self.host}: {self.domains} domains ({self.created} new, {self.moved} moved here, "
            f"{self.removed} gone)"
        )


def sync_host(host, timeout=None):
    """Read one host's inventory from libvirt and store it.

    A host that cannot be reached is marked offline with the reason, and what
    was last known of it is kept, not deleted: an administrator at 3 a.m.
    wants to see which VMs *were* on the host that just went away.
    """
    try:
        with libvirt_client.open_host(host.uri, timeout=timeout) as conn:
            inventory = conn.inventory()
    except libvirt_client.HostError as e:
        host.mark_unreachable(e)
        host.save(update_fields=["status", "status_reason", "status_detail", "last_sync"])
        log.warning("sync %s: %s (%s)", host.name, e.plain, e.detail)
        return SyncResult(host=host.name, online=False, error=e.plain)
    return store_inventory(host, inventory)


@transaction.atomic
def store_inventory(host, inventory):
    host.mark_online(inventory.host)
    # update_fields: a host deleted while its inventory was being read must
    # not be brought back by this save.
    host.save(update_fields=HOST_FACTS)
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
        StoragePool, host, pools,
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
        for f, v in values.items():
            setattr(row, f, v)
        update.append(row)
    Domain.objects.bulk_create(create, batch_size=500)
    if update:
        Domain.objects.bulk_update(update, DOMAIN_FIELDS, batch_size=500)
    removed, _ = Domain.objects.filter(host=host).exclude(uuid__in=seen.keys()).delete()
    return SyncResult(
        host=host.name,
        online=True,
        domains=len(seen),
        created=len(create),
        moved=moved,
        removed=removed,
    )


def sync_hosts(names=None, timeout=None):
    hosts = Host.objects.all()
    if names:
        hosts = hosts.filter(name__in=names)
    return [sync_host(h, timeout=timeout) for h in hosts]


def sync_all_job():
    """RQ job: the periodic refresh of every host."""
    results = sync_hosts()
    return [str(r) for r in results]
