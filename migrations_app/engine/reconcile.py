"""Orphans: active migrations whose worker died.

A live migration libvirtd still drives is adopted (governed until it ends);
any other is settled by asking both hosts where the VM is, and a cold one
is rolled back unless the VM already runs on the target.
"""

from __future__ import annotations

import contextlib
import time
from datetime import datetime

from django.utils import timezone

from hosts.libvirt import Connection, DomainState, HostError, open_hosts

from ..models import AuditAction, Migration, Mode, Status
from .live import SAMPLE_INTERVAL, Governor, LiveMigration
from .outcome import audit, finish_failed, finish_succeeded, hosts_of, policy_of, refresh_inventory
from .postcopy import is_interrupted
from .settle import settle

# A migration whose worker has not written for this long is orphaned.
HEARTBEAT_TIMEOUT = 30


def is_orphaned(migration: Migration, now: datetime | None = None) -> bool:
    now = now or timezone.now()
    return (now - migration.updated_at).total_seconds() > HEARTBEAT_TIMEOUT


def orphans(force: bool = False) -> list[Migration]:
    """Active migrations no worker is watching (heartbeat gone stale); with
    ``force``, every active one."""
    active = Migration.objects.filter(status__in=[Status.CHECKING, Status.RUNNING])
    return [m for m in active if force or is_orphaned(m)]


def reconcile_all(force: bool = False) -> list[tuple[int, str]]:
    """Every active migration no worker is watching. ``force``: do not wait for
    the heartbeat to go stale (on worker start, when no other worker runs)."""
    return [(migration.pk, reconcile(migration)) for migration in orphans(force)]


def reconcile(migration: Migration) -> str:
    """Settle or adopt one active migration that no worker is watching.

    Returns what was done, in words."""
    if migration.status == Status.QUEUED:
        return "queued: left to the queue"
    if migration.status == Status.CHECKING:
        finish_failed(
            migration, "The worker stopped during the pre-flight checks; nothing was changed.", code="worker_died"
        )
        audit(migration, AuditAction.RECONCILED, "Reconciled: the worker had stopped during the checks.")
        return "failed (checks interrupted)"
    try:
        source, target = hosts_of(migration)
        with open_hosts(source.connect_uri(), target.connect_uri()) as (src, dst):
            if migration.mode == Mode.LIVE:
                return _reconcile_live(migration, src, dst)
            return _reconcile_cold(migration, src, dst)
    except HostError as e:
        return f"left as is: {e.plain}"
    finally:
        refresh_inventory(migration)


def _reconciled(migration: Migration) -> str:
    migration.refresh_from_db()
    audit(
        migration,
        AuditAction.RECONCILED,
        f"Reconciled after the worker stopped: {migration.status}.",
        outcome=migration.status,
    )
    return migration.status


def _reconcile_live(migration: Migration, src: Connection, dst: Connection) -> str:
    uuid = str(migration.domain_uuid)
    if src.job_stats(uuid).active:
        # libvirtd still drives it (peer-to-peer): govern it until it ends.
        audit(
            migration,
            AuditAction.RECONCILED,
            f"Reconciled: the worker had stopped, but {migration.source_name} is still migrating "
            f"{migration.domain_name}; a worker took it over.",
        )
        migration.note("A worker took over this migration after the one that started it stopped.")
        adopt(migration, src, dst)
        return "adopted (still migrating)"
    settle(migration, src, dst, created_volumes=(migration.progress or {}).get("created_volumes", []))
    return _reconciled(migration)


def adopt(migration: Migration, src: Connection, dst: Connection) -> None:
    governor = Governor(migration, src, policy_of(migration), migration.flags or [])
    uuid = str(migration.domain_uuid)
    # A post-copy migration that lost its link keeps its job "active" on the
    # source for good: it is resumed, not watched.
    while src.job_stats(uuid).active and not is_interrupted(src, uuid):
        governor.step()
        migration.heartbeat()
        time.sleep(SAMPLE_INTERVAL)
    if is_interrupted(src, uuid):
        LiveMigration(migration, src, dst).resume_interrupted()
        return
    settle(
        migration,
        src,
        dst,
        aborted=governor.aborted,
        last_stats=governor.last_stats,
        created_volumes=(migration.progress or {}).get("created_volumes", []),
    )


def _reconcile_cold(migration: Migration, src: Connection, dst: Connection) -> str:
    uuid = str(migration.domain_uuid)
    on_source, on_target = src.state(uuid), dst.state(uuid)
    if on_target is not None and on_source is None:
        finish_succeeded(migration, {"reconciled": True})
    else:
        if on_target is not None and on_target != DomainState.RUNNING:
            with contextlib.suppress(HostError):
                dst.undefine(uuid)
        if on_target is None:
            for path in (migration.progress or {}).get("created_volumes", []):
                with contextlib.suppress(HostError):
                    dst.delete_volume(path)
        restarted = ""
        if migration.was_running and on_source == DomainState.SHUTOFF and on_target != DomainState.RUNNING:
            with contextlib.suppress(HostError):
                src.start(uuid)
                restarted = f" {migration.domain_name} was started again on {migration.source_name}."
        finish_failed(
            migration,
            f"The worker stopped in the middle of the cold migration; the partial copy was removed.{restarted}",
            code="worker_died",
        )
    return _reconciled(migration)
