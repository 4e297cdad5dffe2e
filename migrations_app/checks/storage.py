"""The disks: really shared storage (proved with a probe volume), or a target
pool with room and no volume of the same name."""

from __future__ import annotations

import contextlib
import uuid as uuidlib
from datetime import timedelta
from typing import TYPE_CHECKING

from django.utils import timezone

from core.formatting import size
from hosts.libvirt import HostError
from hosts.models import Host, PoolSharing
from hosts.volumes import leftovers, shared_pool_names, used_paths

from ..models import AuditAction, Migration, Status, StorageMode
from .base import FAIL, PASS, WARN, CheckInput, Checks

if TYPE_CHECKING:
    from hosts.libvirt import Connection, DiskInfo, DomainDetails, PoolInfo

# A source pool a probe volume proved shared with a target (hosts.PoolSharing)
# stays proved this long: within it the probe is not written again, while
# every disk's path is still looked up on the target at every check. What
# could change unnoticed meanwhile: the target mounting other storage at the
# same path, holding files of the same names. A probe that finds the pool not
# shared replaces the proof at once.
SHARED_PROOF_SECONDS = 300


def check_storage(checks: Checks, v: CheckInput, dom: DomainDetails, source: Connection, target: Connection) -> None:
    disks = dom.info.movable_disks()
    if not disks:
        checks.add("storage", PASS, f"{v.name} has no disks to move.")
        return
    if v.storage == StorageMode.SHARED:
        _shared_storage(checks, v, disks, source, target)
    else:
        _copy_storage(checks, v, disks, source, target)


def _shared_storage(
    checks: Checks, v: CheckInput, disks: list[DiskInfo], source: Connection, target: Connection
) -> None:
    tname = v.target.name
    seen_in: dict[str, str] = {}  # disk path -> the pool the target sees it in
    for disk in disks:
        seen = target.volume_by_path(disk.path)
        seen_in[disk.path] = seen[0] if seen else ""
        if seen is None:
            checks.add(
                "shared_storage",
                FAIL,
                f"{disk.path} is not visible on {tname}: the shared storage is not mounted there, "
                "or not defined as a storage pool. Mount it at the same path (else the guest meets "
                "'Input/output error'), or choose 'copy the disks'.",
            )
            return
    # The same path on both hosts is not proof of sharing: two local disks
    # can have the same path. Write a probe on the source, look on the target.
    probe_pool = next((d.pool for d in disks if d.pool), "")
    if not probe_pool:
        checks.add(
            "shared_storage",
            WARN,
            f"{tname} sees the same disk paths, but they are not in a storage pool on the "
            "source, so kvmweb cannot prove they are the same files. Make sure they are shared.",
        )
        return
    proof = (
        PoolSharing.objects.filter(host=v.source, pool=probe_pool, peer=v.target, shared=True)
        .filter(checked_at__gte=timezone.now() - timedelta(seconds=SHARED_PROOF_SECONDS))
        .first()
    )
    if proof is not None:
        checks.add(
            "shared_storage",
            PASS,
            f"The disks are on shared storage: {tname} sees them, and a probe volume kvmweb wrote in pool "
            f"{probe_pool} {(timezone.now() - proof.checked_at).total_seconds():.0f} s ago showed the pool "
            f"shared with {tname} (kvmweb writes one again after {SHARED_PROOF_SECONDS // 60} minutes).",
        )
        return
    _probe_sharing(checks, v, disks, probe_pool, seen_in, source, target)


def _probe_sharing(
    checks: Checks,
    v: CheckInput,
    disks: list[DiskInfo],
    probe_pool: str,
    seen_in: dict[str, str],
    source: Connection,
    target: Connection,
) -> None:
    """Write a probe volume in ``probe_pool`` on the source, look for it on the target, keep what it showed."""
    tname = v.target.name
    probe = f".kvmweb-probe-{uuidlib.uuid4().hex}"
    path = source.create_volume(probe_pool, probe, 1024, "raw")
    try:
        appeared = target.volume_by_path(path)
        shared = appeared is not None
    finally:
        with contextlib.suppress(HostError):
            source.delete_volume(path)
        with contextlib.suppress(HostError):
            target.volume_by_path(path)  # refreshes the target's pools after the delete
    # Kept for the host pages: which pools are shared with which hosts, as proved.
    probe_disk = next(d for d in disks if d.pool == probe_pool)
    PoolSharing.record(v.source, probe_pool, v.target, appeared[0] if appeared else seen_in[probe_disk.path], shared)
    # Even a dry run writes this probe: say so, with its name, so nobody is
    # surprised by a volume appearing and going in the pool's history.
    wrote = f"kvmweb wrote a 1 KiB probe volume {probe} in pool {probe_pool} on {v.source.name} and deleted it again"
    if shared:
        checks.add(
            "shared_storage",
            PASS,
            f"The disks are on shared storage: {wrote}; {tname} saw it appear.",
        )
    else:
        checks.add(
            "shared_storage",
            FAIL,
            f"The disk paths exist on {tname} too, but they are different files ({wrote}; it did "
            f"not appear on {tname}): the storage is not shared. Choose 'copy the disks', or mount "
            "the real share on both hosts.",
        )


def _copy_storage(checks: Checks, v: CheckInput, disks: list[DiskInfo], source: Connection, target: Connection) -> None:
    tname = v.target.name
    pool = target.pool(v.target_pool)
    if pool is None:
        checks.add("target_pool", FAIL, f"{tname} has no storage pool named {v.target_pool}.")
        return
    if not pool.active:
        checks.add(
            "target_pool",
            FAIL,
            f"Pool {pool.name} on {tname} is not active (its storage may not be mounted). Start it first.",
        )
        return
    need = sum(d.allocation or d.capacity or 0 for d in disks)
    full = sum(d.capacity or 0 for d in disks)
    if need > pool.available:
        checks.add(
            "free_space",
            FAIL,
            f"Pool {pool.name} on {tname} has {size(pool.available)} free; the disks hold "
            f"{size(need)}. Free space there or choose another pool.",
        )
    elif full > pool.available:
        checks.add(
            "free_space",
            WARN,
            f"Pool {pool.name} has room for the disks' data ({size(need)}) but not for them "
            f"to grow to their full size ({size(full)}).",
        )
    else:
        checks.add("free_space", PASS, f"Pool {pool.name} on {tname} has {size(pool.available)} free for {size(need)}.")
    clashes = [
        d.path.rsplit("/", 1)[-1]
        for d in disks
        if target.volume_by_path(f"{pool.target_path.rstrip('/')}/{d.path.rsplit('/', 1)[-1]}", refresh=False)
        is not None
    ]
    if clashes:
        clashes = _replace_own_leftovers(checks, v, pool, clashes, target)
    if clashes:
        checks.add("target_volumes", FAIL, clash_message(v.target, pool.name, clashes))


def clash_message(host: Host, pool: str, names: list[str]) -> str:
    """Why a copy cannot go into ``pool`` on ``host``, naming each same-named
    volume as the host page lists it and the action that removes a leftover."""
    found = {x.name: x for x in leftovers(host) if x.pool == pool}
    parts: list[str] = []
    for name in names:
        x = found.get(name)
        if x is None:
            parts.append(f"{name} (not a leftover kvmweb knows: a VM there may use it; check it on {host.name})")
        else:
            parts.append(f"{name} ({x.reason})")
    removable = [n for n in names if n in found]
    action = (
        f" Remove the leftover on {host.name}'s page (Leftover volumes), or POST "
        f'{{"pool": "{pool}", "name": "{removable[0]}"}} to /api/hosts/{host.pk}/remove-volume/, then try again.'
        if removable
        else " Remove or rename it on the host first, or choose another pool."
    )
    return f"Pool {pool} on {host.name} already has a volume named {', '.join(parts)}.{action}"


def _replace_own_leftovers(
    checks: Checks, v: CheckInput, pool: PoolInfo, clashes: list[str], target: Connection
) -> list[str]:
    """An evacuation's return (``replace_own_leftovers``) first removes the VM's
    own leftover: a same-named volume an earlier move of this same VM recorded
    leaving on the target, which no definition there uses. Returns the clashes left."""
    # The engine's own instance: a note written through another would be lost
    # when the engine writes its next one.
    migration = v.record
    if migration is None or not migration.replace_own_leftovers:
        return clashes
    host = v.target
    used = used_paths(host, pool.name, shared_pool_names(host))
    own = [p for p in own_leftovers(migration, pool.target_path, clashes) if p not in used]
    removed: list[str] = []
    for path in own:
        try:
            if target.delete_volume(path):
                removed.append(path.rsplit("/", 1)[-1])
        except HostError as e:
            checks.add("target_volumes", WARN, f"Could not remove {v.name}'s own leftover {path}: {e.plain}")
    if removed:
        message = (
            f"Removed {v.name}'s own leftover {', '.join(removed)} from pool {pool.name} on {host.name} "
            "(an earlier move of this VM recorded leaving it there) to make room for the copy."
        )
        migration.note(message, AuditAction.VOLUME, on_host=host.name, volumes=own)
        checks.add("target_volumes", PASS, message)
    return [c for c in clashes if c not in removed]


def own_leftovers(migration: Migration, pool_path: str, names: list[str]) -> list[str]:
    """Of the volumes ``names`` in the target pool (at ``pool_path``), those an
    earlier succeeded migration of this same VM recorded leaving on the target
    host: provably its own, so its return may remove them."""
    paths = {f"{pool_path.rstrip('/')}/{n}" for n in names}
    earlier = Migration.objects.filter(
        domain_uuid=migration.domain_uuid, source=migration.target, status=Status.SUCCEEDED
    ).exclude(pk=migration.pk)
    left: set[str] = set()
    for stats in earlier.values_list("stats", flat=True):
        left.update((stats or {}).get("left_on_source") or [])
    return sorted(p for p in paths if p in left)
