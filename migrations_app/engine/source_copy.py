"""After a verified copy-storage move: the source's copy of the disks goes,
unless the request kept it; and, for an evacuation's return, the VM's own
leftover in the target pool goes first.

Live and cold moves end here alike, whoever settles them (the worker that
ran the move, or one that adopted it), from what the migration recorded
(``Migration.source_volumes``), never from a worker's memory.
"""

from __future__ import annotations

from typing import Any

from hosts.libvirt import Connection, HostError

from ..models import AuditAction, Migration, StorageMode


def _name(path: str) -> str:
    return path.rsplit("/", 1)[-1]


def verified_copies(migration: Migration, dst: Connection) -> tuple[list[dict[str, Any]], list[str]]:
    """The source volumes whose copy exists on the target at its full size, and
    what is wrong with the others (plain words)."""
    good, problems = [], []
    for vol in migration.source_volumes:
        try:
            found = dst.volume_by_path(vol["copy"])
        except HostError as e:
            problems.append(f"the copy {vol['copy']} could not be looked at on {migration.target_name} ({e.plain})")
            continue
        if found is None:
            problems.append(f"the copy {vol['copy']} is not on {migration.target_name}")
        elif found[1] < (vol.get("capacity") or 0):
            problems.append(f"the copy {vol['copy']} on {migration.target_name} is smaller than its source")
        else:
            good.append({**vol, "copy_allocation": found[2]})
    return good, problems


def mirrored_bytes(migration: Migration, dst: Connection) -> int:
    """What the copies on the target hold (their allocation), for a live move
    whose job statistics report no disk bytes."""
    total = 0
    for vol in migration.source_volumes:
        try:
            found = dst.volume_by_path(vol["copy"], refresh=False)
        except HostError:
            continue
        if found is not None:
            total += found[2]
    return total


def remove_source_copy(migration: Migration, src: Connection, dst: Connection) -> dict[str, Any]:
    """Remove the source volumes a copy-storage move copied, once each copy is
    there on the target; returns what to add to the statistics: the volumes
    removed and the ones ``left_on_source`` (kept as asked, or not removable),
    which the host page lists as left over from this migration."""
    volumes = migration.source_volumes
    if migration.storage != StorageMode.COPY or not volumes:
        return {}
    source = migration.source_name
    if migration.keep_source_volumes:
        migration.note(
            f"Kept the copy on {source} as the request asked: {', '.join(_name(v['path']) for v in volumes)}. "
            f"It shows as left over on {source}'s page, where an operator can remove it.",
        )
        return {"left_on_source": [v["path"] for v in volumes]}
    good, problems = verified_copies(migration, dst)
    try:
        # Never a disk a definition on the source still uses (a source
        # definition libvirt did not undefine, another VM sharing it).
        in_use = {d.path for info in src.domains() for d in info.disks if d.path}
    except HostError as e:
        in_use = {v["path"] for v in good}
        problems.append(f"{source} could not be asked which disks its VMs use ({e.plain})")
    removed: list[str] = []
    for vol in good:
        if vol["path"] in in_use:
            problems.append(f"a definition on {source} still uses {vol['path']}")
            continue
        try:
            src.delete_volume(vol["path"])
            removed.append(vol["path"])
        except HostError as e:
            problems.append(f"{vol['path']} could not be removed from {source} ({e.plain})")
    left = [v["path"] for v in volumes if v["path"] not in removed]
    if removed:
        migration.note(
            f"Removed the copy on {source} after the verified move: {', '.join(_name(p) for p in removed)}.",
            AuditAction.VOLUME,
            on_host=source,
            volumes=removed,
        )
    if problems:
        migration.note(
            f"The copy on {source} was kept: {'; '.join(problems)}. It shows as left over on {source}'s page.",
        )
    stats: dict[str, Any] = {"source_volumes_removed": removed}
    if left:
        stats["left_on_source"] = left
    return stats
