"""The outcome of a live migration, decided by asking both hosts where the VM is.

Peer-to-peer migrations are driven by libvirtd on the source and carry on if
the worker dies, so the outcome is never taken from the worker's memory of
it. The same code finishes a migration this worker watched, one it adopted
after another worker died, and one reconciliation found orphaned.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import Any

from django.utils import timezone

from core.records import InvalidTransition
from hosts import peer_login
from hosts.libvirt import PEER_LOGIN_CODES, Connection, DomainState, HostError, JobStats, reachable
from hosts.models import Host

from ..models import Migration, Phase, StorageMode
from .outcome import finish_cancelled, finish_failed, finish_succeeded, policy_of
from .progress import job_record
from .source_copy import mirrored_bytes, remove_source_copy

# Why the governor stopped a transfer (None: it did not).
ABORT_CANCEL = "cancel"
ABORT_DEADLINE = "deadline"
ABORT_TARGET_LOST = "target_lost"


def settle(
    migration: Migration,
    src: Connection,
    dst: Connection,
    error: HostError | None = None,
    aborted: str | None = None,
    last_stats: JobStats | None = None,
    created_volumes: Iterable[str] = (),
) -> None:
    """Decide a live migration's outcome by asking both hosts where the VM is."""
    uuid = str(migration.domain_uuid)
    if aborted is None and migration.cancel_is_requested():
        aborted = ABORT_CANCEL  # the web process aborted it before the governor noticed
    on_source = _state_or_unknown(src, uuid, migration.source)
    on_target = _state_or_unknown(dst, uuid, migration.target)
    target_persistent = on_target not in (None, DomainState.UNKNOWN) and _persistent(dst, uuid)
    if (
        on_target == DomainState.RUNNING
        and target_persistent
        and on_source in (None, DomainState.SHUTOFF, DomainState.UNKNOWN)
    ):
        if on_source == DomainState.SHUTOFF:
            # The domain was copied but the source definition stayed (flag
            # refused?): the VM runs on the target, which is what was asked.
            migration.note(
                f"The source still has a (shut off) definition of {migration.domain_name}; "
                "remove it once you have checked the target.",
            )
        with contextlib.suppress(InvalidTransition):
            migration.set_phase(Phase.CLEANING_UP)
        stats = final_stats(migration, dst, src, last_stats)
        # libvirt's success and each copy's size on the target verify the move:
        # the source's copy of the disks goes now, unless the request keeps it.
        stats.update(remove_source_copy(migration, src, dst))
        finish_succeeded(migration, stats)
        return
    where = _where(migration, on_source, on_target)
    # What the attempt measured, so the next request's checks can warn from it.
    measured = job_record(last_stats, completed=False) if last_stats is not None else {}
    # Not on the target: clean up what the copy created there.
    for path in created_volumes:
        with contextlib.suppress(HostError):
            dst.delete_volume(path)
    detail = error.detail if error else ""
    if aborted == ABORT_CANCEL:
        finish_cancelled(migration, f"Cancelled. {where}")
    elif aborted == ABORT_DEADLINE:
        policy = policy_of(migration)
        finish_failed(
            migration,
            f"The migration did not converge within the policy's {policy.deadline_seconds} s and was "
            f"aborted: the guest changes its memory faster than it can be sent. {where} Try the 'Make it "
            "converge' policy, more bandwidth, or a cold migration.",
            detail,
            "not_converging",
            measured,
        )
    elif aborted == ABORT_TARGET_LOST or on_target == DomainState.UNKNOWN:
        finish_failed(
            migration,
            f"{migration.target_name} stopped answering during the migration (a network or host "
            f"failure), so the migration was abandoned. {where} Check {migration.target_name} and "
            "its network, then try again.",
            detail,
            "target_unreachable",
            measured,
        )
    elif error is not None:
        if error.code in PEER_LOGIN_CODES and migration.source is not None and migration.target is not None:
            peer_login.forget(migration.source.uri, migration.target.uri)
        finish_failed(migration, f"{error.plain} {where}", error.detail, error.code or "", measured)
    else:
        finish_failed(migration, f"The migration ended without moving the VM. {where}", code="unknown", stats=measured)


def _state_or_unknown(conn: Connection, uuid: str, host: Host | None) -> DomainState | None:
    # Ask only a host that answers: a call on a connection to a vanished
    # host waits for keepalive to give up on it.
    if host is None or not reachable(host.uri):
        return DomainState.UNKNOWN
    try:
        return conn.state(uuid)
    except HostError:
        return DomainState.UNKNOWN


def _persistent(conn: Connection, uuid: str) -> bool:
    try:
        return conn.is_persistent(uuid)
    except HostError:
        return False


def _where(migration: Migration, on_source: DomainState | None, on_target: DomainState | None) -> str:
    if on_source == DomainState.RUNNING:
        return f"{migration.domain_name} is still running on {migration.source_name}."
    if on_source == DomainState.UNKNOWN:
        return f"{migration.source_name} does not answer, so where {migration.domain_name} runs is unknown."
    if on_target == DomainState.RUNNING:
        return (
            f"{migration.domain_name} runs on {migration.target_name} but is not defined there "
            "persistently yet: check it."
        )
    return (
        f"{migration.domain_name} is {on_source or 'not defined'} on {migration.source_name} and "
        f"{on_target or 'not defined'} on {migration.target_name}."
    )


def final_stats(migration: Migration, dst: Connection, src: Connection, last_stats: JobStats | None) -> dict[str, Any]:
    """The statistics of a migration that succeeded: libvirt's of the completed
    job (the target's, else the source's), filled in from the last sample."""
    completed = None
    for conn in (dst, src):
        with contextlib.suppress(HostError):
            completed = conn.job_stats(str(migration.domain_uuid), completed=True)
            if completed.elapsed_ms:
                break
    result: dict[str, Any] = {}
    # After post-copy libvirt may keep no completed statistics; the last
    # sample taken while it ran is then the best record.
    if completed is not None and completed.elapsed_ms:
        result = job_record(completed, completed=True)
    if last_stats is not None:
        sample = job_record(last_stats, completed=False)
        result.setdefault("data_transferred", sample["data_transferred"])
        result.setdefault("memory_transferred", last_stats.memory_processed)
        result.setdefault("iterations", sample["iterations"])
        if sample["dirty_rate_bps"]:
            result["dirty_rate_bps"] = max(result.get("dirty_rate_bps") or 0, sample["dirty_rate_bps"])
        if not result.get("speed_bps"):
            result["speed_bps"] = sample["speed_bps"]
    if migration.storage == StorageMode.COPY and not result.get("disk_transferred"):
        # libvirt 9.0 reports no disk figures for a non-shared-disk move (the
        # copy is a block job of its own): the mirrored volumes' size is what was sent.
        sent = (last_stats.disk_processed if last_stats is not None else 0) or mirrored_bytes(migration, dst)
        result["disk_transferred"] = sent
    if "time_ms" not in result and migration.started_at:
        result["time_ms"] = int((timezone.now() - migration.started_at).total_seconds() * 1000)
    return result
