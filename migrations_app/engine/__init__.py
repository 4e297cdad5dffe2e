"""The migration engine: runs in an RQ worker, talks to libvirt through the seam.

Where to look:

- ``claim`` and ``run`` (here): take a queued migration, check it, hand it
  to the live or cold path
- ``live``: ``LiveMigration`` and its ``Governor`` (policy, cancel, lost target)
- ``settle``: a live migration's outcome, from where the VM is on both hosts
- ``cold``: ``ColdMigration``: shut down, copy, verify, define, start, undo
- ``outcome``: notes, audit entries and the three endings
- ``progress``: the progress sample and the statistics record
- ``digest``: the block digest that proves a copy
- ``reconcile``: migrations whose worker died
"""

from __future__ import annotations

import logging
import os
import socket

from django.db import transaction

from core.records import InvalidTransition
from hosts.capacity import Guest
from hosts.libvirt import Connection, HostError, open_hosts
from hosts.models import HOLDS_MEMORY, Domain, Host

from ..checks import CheckResult, capacity_results, run_checks
from ..models import AuditAction, Migration, Mode
from .cold import ColdMigration
from .live import LiveMigration
from .outcome import (
    audit,
    finish_cancelled,
    finish_failed,
    hosts_of,
    refresh_inventory,
)
from .reconcile import reconcile, reconcile_all

log = logging.getLogger(__name__)

__all__ = [
    "claim",
    "finish_failed",
    "reconcile",
    "reconcile_all",
    "run",
]


def claim(migration: Migration) -> bool:
    """Take a queued migration for this worker if both hosts have a free slot
    and the target can hold the guest. Returns True if claimed.

    Locks both host rows, so that two workers counting at once can neither
    both see a free slot nor both fit a guest into the last room: the second
    counts the first's claim (a migration being checked or running is on its
    way in, hosts/capacity.py). A migration the target cannot hold is failed
    here, with its memory check saying why, and nothing is started.
    """
    with transaction.atomic():
        hosts = {
            h.pk: h for h in Host.objects.select_for_update().filter(pk__in=[migration.source_id, migration.target_id])
        }
        source = hosts.get(migration.source_id) if migration.source_id is not None else None
        target = hosts.get(migration.target_id) if migration.target_id is not None else None
        for role, host in (("source", source), ("target", target)):
            if host is not None:
                taken, limit = Migration.slots_taken(role, host)
                if taken >= limit:
                    return False
        no_room = _no_room(migration, target)
        if not no_room:
            try:
                migration.start_checking()
            except InvalidTransition:
                return False
            return True
    record_checks(migration, no_room)
    return False


def _no_room(migration: Migration, target: Host | None) -> list[CheckResult]:
    """The capacity checks' results if the target cannot hold the guest, else []."""
    guest = Domain.objects.filter(uuid=migration.domain_uuid).order_by("-max_memory").first()
    if target is None or guest is None:
        return []  # the checks that run next say what is missing
    if migration.mode == Mode.COLD and guest.state not in HOLDS_MEMORY:
        return []  # shut off, it stays so on the target
    results = capacity_results(target, Guest.of(guest), exclude_migration=migration.pk)
    return results if any(r.result == "fail" for r in results) else []


def run(migration: Migration) -> None:
    """Check, then move the domain; always ends in a final state."""
    try:
        source, target = hosts_of(migration)
        # A live migration's governor watches over a second source connection,
        # opened at the same time as the others (see LiveMigration.transfer).
        # Only rows whose SSH host key was confirmed are logged in to (Host.connect_uri).
        source_uri, target_uri = source.connect_uri(), target.connect_uri()
        watched = [source_uri] if migration.mode == Mode.LIVE else []
        with open_hosts(source_uri, target_uri, *watched) as (src, dst, *watch):
            if not preflight(migration, src, dst):
                return
            migration.start(worker=worker_name())
            if migration.mode == Mode.LIVE:
                LiveMigration(migration, src, dst, *watch).run()
            else:
                ColdMigration(migration, src, dst).run()
    except HostError as e:
        finish_failed(migration, e.plain, e.detail, e.code or "")
    except Exception as e:  # a bug must still leave a readable record
        log.exception("migration %s crashed", migration.pk)
        finish_failed(
            migration,
            "kvmweb failed unexpectedly; the log of the worker has the details. The VM was left where it was.",
            repr(e),
            "internal",
        )
    finally:
        refresh_inventory(migration)


def worker_name() -> str:
    """Which worker runs this: RQ's name for it (set in its work horses), else this process."""
    return os.environ.get("RQ_WORKER_ID") or f"{socket.gethostname()}:{os.getpid()}"


def preflight(migration: Migration, src: Connection, dst: Connection) -> bool:
    if not record_checks(migration, run_checks(migration, src, dst)):
        return False
    if migration.cancel_is_requested():
        finish_cancelled(migration, "Cancelled before it started; nothing was changed.")
        return False
    return True


def record_checks(migration: Migration, results: list[CheckResult]) -> bool:
    """Keep the checks with the migration and in the audit log; fail it if one
    failed. Returns whether they passed."""
    migration.record_checks([r.as_dict() for r in results])
    failed = [r for r in results if r.result == "fail"]
    audit(
        migration,
        AuditAction.CHECK,
        f"Pre-flight checks {'failed' if failed else 'passed'}{': ' + failed[0].message if failed else '.'}",
        outcome="fail" if failed else "pass",
        checks=migration.checks,
    )
    if failed:
        finish_failed(migration, "Pre-flight checks failed: " + " ".join(r.message for r in failed), code="preflight")
    return not failed
