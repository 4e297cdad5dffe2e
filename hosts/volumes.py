"""Leftover volumes: copies of a VM's disks that stayed on a host it left.

A copy-storage move removes the source's copy once the move is verified,
unless the request kept it (or the removal failed); copies made by hand or
before kvmweb did this stay too. Such a volume blocks the VM's way back (the
target pool already has a volume of that name). Here they are found, from
the inventory, and removed by an operator: only a leftover, and never while a
definition on its host (or, in a shared pool, on any host) uses it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from django.db import transaction

from . import (
    signals,
    sync,  # sync imports the libvirt seam and models only; late, as definitions does
)
from .libvirt import HostError, open_host
from .models import Domain, DomainDefinition, Host, PoolSharing, StoragePool

# Migration statuses (migrations_app.models; hosts does not import that app).
SUCCEEDED = "succeeded"
MIGRATING = ("queued", "checking", "running")


@dataclass
class Leftover:
    pool: str
    name: str
    path: str
    capacity: int
    allocation: int
    vm: str  # the VM elsewhere whose disk is named like it ("" when only a migration recorded it)
    vm_host: str
    migration: int | None  # the migration that recorded leaving it here
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class VolumeRefused(Exception):
    def __init__(self, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def _basename(path: str) -> str:
    return path.rsplit("/", 1)[-1]


def _disk_paths(rows: Iterable[list[dict[str, Any]] | None]) -> set[str]:
    return {str(d["path"]) for disks in rows for d in (disks or []) if d.get("path")}


def shared_pool_names(host: Host) -> set[str]:
    """The host's pools whose volumes other hosts see too (by type, by an
    operator's mark, or proved by a probe)."""
    names = {p.name for p in host.pools.all() if p.is_shared}
    names |= set(PoolSharing.objects.filter(host=host, shared=True).values_list("pool", flat=True))
    return names


def used_paths(host: Host, pool: str, shared: set[str]) -> set[str]:
    """The disk paths that definitions use where a volume of ``pool`` is seen:
    this host's, and in a shared pool every host's."""
    definitions = DomainDefinition.objects.all() if pool in shared else DomainDefinition.objects.filter(host=host)
    return _disk_paths(definitions.values_list("disks", flat=True))


def recorded_leftovers(host: Host) -> dict[str, int]:
    """{path: migration id}: the volumes succeeded migrations out of this host
    recorded leaving on it (kept as asked, or not removable), the latest first."""
    found: dict[str, int] = {}
    rows = host.outgoing_migrations.filter(status=SUCCEEDED, storage="copy").order_by("-finished_at", "-id")
    for pk, stats in rows.values_list("pk", "stats"):
        for path in (stats or {}).get("left_on_source") or []:
            found.setdefault(path, pk)
    return found


def leftovers(host: Host) -> list[Leftover]:
    """The volumes on ``host`` no definition here uses, named like a disk of a
    VM elsewhere or recorded as left here by a migration."""
    pools = list(StoragePool.objects.filter(host=host, active=True))
    if not pools:
        return []
    shared = shared_pool_names(host)
    recorded = recorded_leftovers(host)
    # Disk names of the VMs that are not here: a leftover is named like one of them.
    elsewhere: dict[str, tuple[str, str]] = {}
    for name, host_name, disks in Domain.objects.exclude(host=host).values_list("name", "host__name", "disks"):
        for disk in disks or []:
            if disk.get("path") and disk.get("device", "disk") == "disk":
                elsewhere.setdefault(_basename(disk["path"]), (name, host_name))
    result = []
    for pool in pools:
        used = used_paths(host, pool.name, shared)
        for vol in pool.volumes or []:
            path = vol.get("path", "")
            if not path or path in used:
                continue
            owner = elsewhere.get(vol.get("name", ""))
            migration = recorded.get(path)
            if owner is None and migration is None:
                continue
            reason = f"left over from migration #{migration}" if migration else "not used by any VM here"
            result.append(
                Leftover(
                    pool=pool.name,
                    name=vol.get("name", ""),
                    path=path,
                    capacity=vol.get("capacity") or 0,
                    allocation=vol.get("allocation") or 0,
                    vm=owner[0] if owner else "",
                    vm_host=owner[1] if owner else "",
                    migration=migration,
                    reason=reason,
                )
            )
    return sorted(result, key=lambda x: (x.pool, x.name))


def _refusal_in_use(host: Host, pool: str, path: str, shared: set[str], live_paths: set[str]) -> str | None:
    if path in live_paths:
        return f"A definition on {host.name} uses {path}: it is a VM's disk, not a leftover. Nothing was removed."
    in_pool_elsewhere = pool in shared and path in _disk_paths(
        DomainDefinition.objects.exclude(host=host).values_list("disks", flat=True)
    )
    if in_pool_elsewhere:
        return f"{path} is in the shared pool {pool}, and a VM on another host uses it. Nothing was removed."
    for migrations, field in ((host.incoming_migrations, "created_volumes"), (host.outgoing_migrations, None)):
        for progress, sources in migrations.filter(status__in=MIGRATING).values_list("progress", "source_volumes"):
            paths = (progress or {}).get(field, []) if field else [v.get("path") for v in sources or []]
            if path in paths:
                return f"A migration running now copies {path}: wait for it to end. Nothing was removed."
    return None


def remove_volume(user: Any, host: Host, pool: str, name: str) -> Leftover:
    """Delete the leftover ``name`` in ``pool`` on ``host``; VolumeRefused says
    why not. Asks the host itself (its definitions now, not the last sync's)
    before it deletes anything; audited (signals.volume_removed)."""
    if not StoragePool.objects.filter(host=host, name=pool).exists():
        raise VolumeRefused(f"{host.name} has no storage pool named {pool}.", status=404)

    try:
        with open_host(host.uri) as conn:
            path = conn.volume_in_pool(pool, name)
            if path is None:
                raise VolumeRefused(f"Pool {pool} on {host.name} has no volume named {name}.", status=404)
            # Every definition on the host as it is now, inactive ones included.
            live_paths = {d.path for info in conn.domains() for d in info.disks if d.path}
            shared = shared_pool_names(host)
            reason = _refusal_in_use(host, pool, path, shared, live_paths | used_paths(host, pool, shared))
            if reason:
                raise VolumeRefused(reason)
            sync.sync_host(host)
            found = next((x for x in leftovers(host) if x.pool == pool and x.name == name), None)
            if found is None:
                raise VolumeRefused(
                    f"{name} in pool {pool} on {host.name} is not a leftover: no VM elsewhere has a disk named like "
                    "it and no migration recorded leaving it. kvmweb removes only leftovers; remove other "
                    "volumes with virsh vol-delete if you are sure.",
                )
            conn.delete_volume(path)
    except HostError as e:
        raise VolumeRefused(f"{host.name} did not remove it: {e.plain}", status=502) from None
    with transaction.atomic():
        signals.volume_removed.send(Host, host=host, leftover=found, user=user)
    sync.sync_host(host)
    return found
