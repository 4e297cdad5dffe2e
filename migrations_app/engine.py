"""The migration engine: runs in an RQ worker, talks to libvirt through the seam.

Live migrations are peer-to-peer: once started, libvirtd on the source drives
them, and they carry on if this worker dies. So the outcome of a migration is
never taken from the worker's own memory of it but settled by asking both
hosts where the domain is (``settle``); the same code finishes a migration
this worker watched, one it adopted after another worker died, and one that
reconciliation finds orphaned.
"""

import contextlib
import hashlib
import logging
import threading
import time
import xml.etree.ElementTree as ET

from django.db import transaction
from django.utils import timezone

from hosts import libvirt_client
from hosts.libvirt_client import HostError
from hosts.models import Host
from hosts.sync import sync_hosts

from . import events
from .checks import migration_address, run_checks
from .models import (
    AuditAction,
    AuditEntry,
    InvalidTransition,
    Migration,
    Mode,
    Phase,
    Status,
    StorageMode,
)
from .policies import get_policy, outpaced

log = logging.getLogger(__name__)

SAMPLE_INTERVAL = 0.5
# Probe the target every 4 samples (2 s); abort after 3 misses in a row.
TARGET_PROBE_EVERY = 4
TARGET_MISSES_TO_ABORT = 3
# A migration whose worker has not written for this long is orphaned.
HEARTBEAT_TIMEOUT = 30
BLOCK = 64 * 1024
ZERO_BLOCK = bytes(BLOCK)


class Cancelled(Exception):
    pass


class Abort(Exception):
    """Stop the migration with this plain message, leaving the VM where it was."""

    def __init__(self, message, detail="", code=""):
        super().__init__(message)
        self.message = message
        self.detail = detail
        self.code = code


def audit(migration, action, message, **data):
    AuditEntry.record(action, message, migration=migration, **data)


def note(migration, message, audit_action=None, **data):
    """A step or decision: in the migration's log, live in the browser, and
    (for decisions) in the audit log."""
    migration.add_event(message, **data)
    if audit_action:
        audit(migration, audit_action, message, **data)
    events.publish_migration(migration)


# ---------------------------------------------------------------------------
# Entry points


def claim(migration):
    """Take a queued migration for this worker if both hosts have a free slot.

    Locks both host rows so that two workers counting at once cannot both see
    a free slot. Returns True if claimed.
    """
    with transaction.atomic():
        hosts = {
            h.pk: h for h in Host.objects.select_for_update().filter(pk__in=[migration.source_id, migration.target_id])
        }
        source, target = hosts.get(migration.source_id), hosts.get(migration.target_id)
        busy = Migration.objects.filter(status__in=[Status.CHECKING, Status.RUNNING])
        if source and busy.filter(source=source).count() >= source.max_outgoing:
            return False
        if target and busy.filter(target=target).count() >= target.max_incoming:
            return False
        try:
            migration.start_checking()
        except InvalidTransition:
            return False
    return True


def run(migration):
    """Check, then move the domain; always ends in a final state."""
    events.publish_migration(migration)
    try:
        with (
            libvirt_client.open_host(migration.source.uri) as src,
            libvirt_client.open_host(migration.target.uri) as dst,
        ):
            if not preflight(migration, src, dst):
                return
            migration.start()
            audit(
                migration,
                AuditAction.START,
                f"Started the {migration.mode} migration of {migration.domain_name} from "
                f"{migration.source_name} to {migration.target_name}.",
            )
            events.publish_migration(migration)
            if migration.mode == Mode.LIVE:
                LiveMigration(migration, src, dst).run()
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


def preflight(migration, src, dst):
    results = run_checks(migration, src, dst)
    migration.checks = [r.as_dict() for r in results]
    Migration.objects.filter(pk=migration.pk).update(checks=migration.checks, updated_at=timezone.now())
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
        return False
    if _cancel_requested(migration):
        finish_cancelled(migration, "Cancelled before it started; nothing was changed.")
        return False
    return True


def finish_failed(migration, message, detail="", code="", stats=None):
    try:
        migration.fail(message, detail, code, stats)
    except InvalidTransition:
        return
    audit(migration, AuditAction.FAILED, message, outcome="failed", detail=detail, code=code)
    events.publish_migration(migration)


def finish_cancelled(migration, message):
    try:
        migration.cancel(message)
    except InvalidTransition:
        return
    audit(migration, AuditAction.CANCELLED, message, outcome="cancelled")
    events.publish_migration(migration)


def finish_succeeded(migration, stats):
    try:
        migration.succeed(stats)
    except InvalidTransition:
        return
    audit(
        migration,
        AuditAction.SUCCEEDED,
        f"{migration.domain_name} now runs on {migration.target_name} ({_summary(stats)}).",
        outcome="succeeded",
        stats=stats,
    )
    events.publish_migration(migration)


def _summary(stats):
    parts = []
    if stats.get("time_ms") is not None:
        parts.append(f"{stats['time_ms'] / 1000:.1f} s")
    if stats.get("downtime_ms") is not None:
        parts.append(f"{stats['downtime_ms']} ms downtime")
    if stats.get("data_transferred") is not None:
        parts.append(f"{stats['data_transferred'] / 1048576:.0f} MiB sent")
    return ", ".join(parts) or "done"


def refresh_inventory(migration):
    """Both hosts' inventory as it is now, read side by side."""
    names = [h.name for h in (migration.source, migration.target) if h is not None]
    try:
        sync_hosts(names)
    except Exception:
        log.warning("inventory refresh of %s failed", ", ".join(names), exc_info=True)
    events.publish_dashboard("inventory", {"hosts": [migration.source_name, migration.target_name]})


def _cancel_requested(migration):
    return Migration.objects.filter(pk=migration.pk, cancel_requested=True).exists()


def abort_running(migration):
    """Called by the web process on cancel: abort the libvirt job at once."""
    if migration.status != Status.RUNNING or migration.mode != Mode.LIVE or migration.source is None:
        return False
    try:
        with libvirt_client.open_host(migration.source.uri) as src:
            return src.abort_job(migration.domain_uuid)
    except HostError:
        log.warning("could not abort migration %s from the web process", migration.pk, exc_info=True)
        return False


# ---------------------------------------------------------------------------
# Live migration


class LiveMigration:
    def __init__(self, migration, src, dst):
        self.m = migration
        self.src = src
        self.dst = dst
        self.policy = get_policy(migration.policy)
        self.uuid = str(migration.domain_uuid)
        self.created_volumes = []
        # What the governor of the last transfer saw (see Governor).
        self.aborted = None
        self.last_stats = None

    def flag_names(self, postcopy):
        names = ["live", "peer2peer", "persist_dest", "undefine_source", "abort_on_error"]
        if self.m.storage == StorageMode.COPY:
            names.append("non_shared_disk")
        if self.policy.auto_converge:
            names.append("auto_converge")
        if postcopy:
            names.append("postcopy")
        return names

    def run(self):
        dom = self.src.domain_details(self.uuid)
        disks, dest_xml = [], None
        if self.m.storage == StorageMode.COPY:
            disks, dest_xml = self.prepare_copy(dom)
        address, _ = migration_address(self.m.target, self.dst)
        migrate_uri = f"tcp://{address}" if address else None
        postcopy = self.policy.postcopy_iteration is not None
        while True:
            flags = self.flag_names(postcopy)
            Migration.objects.filter(pk=self.m.pk).update(flags=flags)
            self.m.flags = flags
            note(
                self.m,
                f"Starting the transfer with libvirt flags {', '.join(flags)}"
                + (f", at most {self.m.bandwidth_mib} MiB/s" if self.m.bandwidth_mib else "")
                + (f", data to {migrate_uri}" if migrate_uri else "")
                + ".",
            )
            error = self.transfer(flags, migrate_uri, disks, dest_xml)
            if postcopy and error is not None and "postcopy" in (error.detail or "").lower().replace("-", ""):
                postcopy = False
                note(
                    self.m,
                    f"Post-copy is not supported on these hosts (libvirt: {error.detail}); trying again without it.",
                    AuditAction.POLICY,
                    decision="postcopy_unsupported",
                )
                continue
            break
        settle(
            self.m,
            self.src,
            self.dst,
            error=error,
            aborted=self.aborted,
            last_stats=self.last_stats,
            created_volumes=self.created_volumes,
        )

    def prepare_copy(self, dom):
        """Create the target volumes the disks will be copied into."""
        pool = self.dst.pool(self.m.target_pool)
        disks, paths = [], {}
        for disk in dom.info.disks:
            if disk.device != "disk" or not disk.path:
                continue
            name = disk.path.rsplit("/", 1)[-1]
            path = self.dst.create_volume(pool.name, name, disk.capacity or 0, disk.format or "raw")
            self.created_volumes.append(path)
            Migration.objects.filter(pk=self.m.pk).update(
                progress={**self.m.progress, "created_volumes": self.created_volumes}
            )
            disks.append(disk.target)
            paths[disk.path] = path
        note(self.m, f"Created {len(paths)} volume(s) in pool {pool.name} on {self.m.target_name}.")
        dest_xml = rewrite_disk_paths(self.src.domain_xml(self.uuid, inactive=False), paths)
        return disks, dest_xml

    def transfer(self, flags, migrate_uri, disks, dest_xml):
        """Run migrateToURI3 in a thread on its own connection; govern it from here."""
        outcome = {}

        def target():
            try:
                with libvirt_client.open_host(self.m.source.uri) as conn:
                    conn.migrate(
                        self.uuid,
                        self.m.target.uri,
                        flags,
                        migrate_uri=migrate_uri,
                        bandwidth_mib=self.m.bandwidth_mib,
                        disks=disks,
                        destination_xml=dest_xml,
                        auto_converge=(20, 10) if "auto_converge" in flags else None,
                    )
            except HostError as e:
                outcome["error"] = e
            except Exception as e:  # noqa: BLE001 - reported, not swallowed
                outcome["error"] = HostError("The migration call failed unexpectedly.", repr(e))

        self.m.set_phase(Phase.TRANSFERRING_MEMORY if not disks else Phase.COPYING_DISK)
        events.publish_migration(self.m)
        thread = threading.Thread(target=target, name=f"migrate-{self.m.pk}", daemon=True)
        thread.start()
        governor = Governor(self.m, self.src, self.policy, flags)
        while thread.is_alive():
            thread.join(SAMPLE_INTERVAL)
            if thread.is_alive():
                governor.step()
        self.aborted = governor.aborted
        self.last_stats = governor.last_stats
        return outcome.get("error")


class Governor:
    """Samples a running migration and applies its policy, twice a second.

    Used by the worker that started the migration and by one that adopted it.
    """

    def __init__(self, migration, src, policy, flags):
        self.m = migration
        self.src = src
        self.policy = policy
        self.flags = flags
        self.uuid = str(migration.domain_uuid)
        self.started = time.monotonic() - ((migration.progress or {}).get("elapsed") or 0)
        self.aborted = None
        self.downtime_ms = (migration.progress or {}).get("downtime_ms")
        self.throttle = None
        self.not_converging = False
        self.postcopy_started = False
        self.last_stats = None
        self.errors = 0
        self.steps = 0
        self.target_misses = 0

    def step(self):
        elapsed = time.monotonic() - self.started
        self.steps += 1
        if self.steps % TARGET_PROBE_EVERY == 0:
            self.watch_target()
        try:
            stats = self.src.job_stats(self.uuid)
        except HostError as e:
            self.errors += 1
            if self.errors == 3:
                note(self.m, f"Cannot read the migration's progress from {self.m.source_name}: {e.plain}")
            return
        self.errors = 0
        if not stats.active:
            return
        self.last_stats = stats
        self.apply_policy(stats, elapsed)
        progress = progress_from(stats, elapsed, self.downtime_ms, converging=not self.not_converging)
        if self.m.storage == StorageMode.COPY and stats.disk_remaining == 0 and stats.memory_processed:
            if self.m.phase == Phase.COPYING_DISK:
                with contextlib.suppress(InvalidTransition):
                    self.m.set_phase(Phase.TRANSFERRING_MEMORY)
        progress["created_volumes"] = (self.m.progress or {}).get("created_volumes", [])
        self.m.save_progress(progress)
        events.publish_migration(self.m, dashboard=False)
        if self.aborted is None and _cancel_requested(self.m):
            self.aborted = "cancel"
            note(self.m, "Cancel requested: aborting the transfer. The VM keeps running on the source.")
            self.src.abort_job(self.uuid)

    def watch_target(self):
        """Abort when the target stops answering, rather than wait for libvirt's
        keepalive to notice (half a minute) or for a TCP timeout (longer)."""
        if self.m.target is None or libvirt_client.reachable(self.m.target.uri, timeout=1.5):
            self.target_misses = 0
            return
        self.target_misses += 1
        if self.target_misses == TARGET_MISSES_TO_ABORT and self.aborted is None:
            self.aborted = "target_lost"
            note(
                self.m,
                f"{self.m.target_name} has not answered for several seconds: aborting. The VM "
                "keeps running on the source.",
                AuditAction.POLICY,
                decision="target_lost",
            )
            self.src.abort_job(self.uuid)

    def apply_policy(self, stats, elapsed):
        m, policy = self.m, self.policy
        wanted = policy.downtime_at(elapsed)
        if wanted != self.downtime_ms:
            try:
                self.src.set_max_downtime(self.uuid, wanted)
                note(
                    m,
                    f"Allowed downtime set to {wanted} ms ({elapsed:.0f} s in, pass {stats.iteration}).",
                    AuditAction.POLICY,
                    decision="downtime",
                    downtime_ms=wanted,
                )
                self.downtime_ms = wanted
            except HostError as e:
                note(m, f"Could not set the allowed downtime to {wanted} ms: {e.plain}")
                self.downtime_ms = wanted
        if stats.throttle_percent and stats.throttle_percent != self.throttle:
            self.throttle = stats.throttle_percent
            note(
                m,
                f"Auto-converge slowed the guest's CPUs by {self.throttle}% to let the copy catch up.",
                AuditAction.POLICY,
                decision="auto_converge",
                throttle=self.throttle,
            )
        if stats.iteration >= 2 and stats.memory_bps:
            behind = outpaced(stats.dirty_rate_bps, stats.memory_bps)
            if behind and not self.not_converging:
                suggestion = (
                    "post-copy is next"
                    if "postcopy" in self.flags
                    else "auto-converge is on"
                    if "auto_converge" in self.flags
                    else "try the 'Make it converge' policy, more bandwidth, or a cold migration"
                )
                note(
                    m,
                    f"Not converging: the guest dirties {_mib(stats.dirty_rate_bps)}/s while "
                    f"{_mib(stats.memory_bps)}/s is sent (pass {stats.iteration}); {suggestion}.",
                    AuditAction.POLICY,
                    decision="not_converging",
                    dirty_rate_bps=stats.dirty_rate_bps,
                    memory_bps=stats.memory_bps,
                )
            elif not behind and self.not_converging:
                note(m, "Converging again: memory is now sent faster than the guest dirties it.")
            self.not_converging = behind
        if (
            "postcopy" in self.flags
            and not self.postcopy_started
            and policy.postcopy_iteration is not None
            and stats.iteration >= policy.postcopy_iteration
        ):
            try:
                self.src.start_postcopy(self.uuid)
                self.postcopy_started = True
                note(
                    m,
                    f"Switched to post-copy at pass {stats.iteration}: the guest now runs on the "
                    "target and fetches the rest of its memory on demand.",
                    AuditAction.POLICY,
                    decision="postcopy",
                )
            except HostError as e:
                self.postcopy_started = True  # do not try again every half second
                note(
                    m,
                    f"Post-copy could not start: {e.plain}. Carrying on with pre-copy.",
                    AuditAction.POLICY,
                    decision="postcopy_failed",
                    detail=e.detail,
                )
        if self.aborted is None and elapsed > policy.deadline_seconds and not self.postcopy_started:
            self.aborted = "deadline"
            note(
                m,
                f"Deadline of {policy.deadline_seconds} s reached at pass {stats.iteration} with "
                f"{_mib(stats.memory_remaining)} still to send: aborting. The VM keeps running on "
                "the source.",
                AuditAction.POLICY,
                decision="deadline",
            )
            self.src.abort_job(self.uuid)


def progress_from(stats, elapsed, downtime_ms, converging=None):
    total = stats.data_total or (stats.memory_total + stats.disk_total)
    processed = stats.data_processed
    remaining = stats.data_remaining
    speed = stats.memory_bps + stats.disk_bps
    if total:
        percent = max(0.0, min(100.0, 100.0 * (total - remaining) / total))
    else:
        percent = 0.0
    net = speed - stats.dirty_rate_bps
    eta = round(remaining / net, 1) if net > 0 and remaining else None
    return {
        "percent": round(percent, 1),
        "data_total": total,
        "data_processed": processed,
        "data_remaining": remaining,
        "memory_total": stats.memory_total,
        "memory_processed": stats.memory_processed,
        "memory_remaining": stats.memory_remaining,
        "disk_total": stats.disk_total,
        "disk_processed": stats.disk_processed,
        "disk_remaining": stats.disk_remaining,
        "speed_bps": speed,
        "dirty_rate_bps": stats.dirty_rate_bps,
        "iteration": stats.iteration,
        "downtime_ms": downtime_ms,
        "throttle_percent": stats.throttle_percent,
        "eta_seconds": eta,
        "converging": converging if stats.iteration >= 2 else None,
        "elapsed": round(elapsed, 1),
        "sampled_at": time.time(),
    }


def settle(migration, src, dst, error=None, aborted=None, last_stats=None, created_volumes=()):
    """Decide a live migration's outcome by asking both hosts where the VM is."""
    uuid = str(migration.domain_uuid)
    if aborted is None and _cancel_requested(migration):
        aborted = "cancel"  # the web process aborted it before the governor noticed
    on_source = _state_or_unknown(src, uuid, migration.source)
    on_target = _state_or_unknown(dst, uuid, migration.target)
    target_persistent = on_target not in (None, "unknown") and _persistent(dst, uuid)
    if on_target == "running" and target_persistent and on_source in (None, "shutoff", "unknown"):
        if on_source == "shutoff":
            # The domain was copied but the source definition stayed (flag
            # refused?): the VM runs on the target, which is what was asked.
            note(
                migration,
                f"The source still has a (shut off) definition of {migration.domain_name}; "
                "remove it once you have checked the target.",
            )
        with contextlib.suppress(InvalidTransition):
            migration.set_phase(Phase.CLEANING_UP)
        finish_succeeded(migration, final_stats(migration, dst, src, last_stats))
        return
    where = _where(migration, on_source, on_target)
    # What the attempt measured, so the next request's checks can warn from it.
    measured = {}
    if last_stats is not None:
        measured = {
            "data_transferred": last_stats.data_processed,
            "iterations": last_stats.iteration,
            "speed_bps": last_stats.memory_bps,
            "dirty_rate_bps": last_stats.dirty_rate_bps,
        }
    # Not on the target: clean up what the copy created there.
    for path in created_volumes:
        with contextlib.suppress(HostError):
            dst.delete_volume(path)
    if aborted == "cancel":
        finish_cancelled(migration, f"Cancelled. {where}")
    elif aborted == "deadline":
        policy = get_policy(migration.policy)
        finish_failed(
            migration,
            f"The migration did not converge within the policy's {policy.deadline_seconds} s and was "
            f"aborted: the guest changes its memory faster than it can be sent. {where} Try the 'Make it "
            "converge' policy, more bandwidth, or a cold migration.",
            error.detail if error else "",
            "not_converging",
            measured,
        )
    elif aborted == "target_lost" or on_target == "unknown":
        finish_failed(
            migration,
            f"{migration.target_name} stopped answering during the migration (a network or host "
            f"failure), so the migration was abandoned. {where} Check {migration.target_name} and "
            "its network, then try again.",
            error.detail if error else "",
            "target_unreachable",
            measured,
        )
    elif error is not None:
        finish_failed(migration, f"{error.plain} {where}", error.detail, error.code or "", measured)
    else:
        finish_failed(migration, f"The migration ended without moving the VM. {where}", code="unknown", stats=measured)


def _state_or_unknown(conn, uuid, host):
    # Ask only a host that answers: a call on a connection to a vanished
    # host waits for keepalive to give up on it.
    if not libvirt_client.reachable(host.uri):
        return "unknown"
    try:
        return conn.state(uuid)
    except HostError:
        return "unknown"


def _persistent(conn, uuid):
    try:
        return conn.is_persistent(uuid)
    except HostError:
        return False


def _where(migration, on_source, on_target):
    if on_source == "running":
        return f"{migration.domain_name} is still running on {migration.source_name}."
    if on_source == "unknown":
        return f"{migration.source_name} does not answer, so where {migration.domain_name} runs is unknown."
    if on_target == "running":
        return (
            f"{migration.domain_name} runs on {migration.target_name} but is not defined there "
            "persistently yet: check it."
        )
    return (
        f"{migration.domain_name} is {on_source or 'not defined'} on {migration.source_name} and "
        f"{on_target or 'not defined'} on {migration.target_name}."
    )


def final_stats(migration, dst, src, last_stats):
    stats = None
    for conn in (dst, src):
        with contextlib.suppress(HostError):
            stats = conn.job_stats(str(migration.domain_uuid), completed=True)
            if stats.elapsed_ms:
                break
    result = {}
    # After post-copy libvirt may keep no completed statistics; the last
    # sample taken while it ran is then the best record.
    if stats is not None and stats.elapsed_ms:
        result = {
            "time_ms": stats.elapsed_ms,
            "downtime_ms": stats.downtime_ms,
            "data_transferred": stats.data_processed,
            "memory_transferred": stats.memory_processed,
            "disk_transferred": stats.disk_processed,
            "iterations": stats.iteration,
            "speed_bps": stats.memory_bps,
            "dirty_rate_bps": stats.dirty_rate_bps,
            "setup_ms": stats.setup_ms,
        }
    if last_stats is not None:
        result.setdefault("data_transferred", last_stats.data_processed)
        result.setdefault("memory_transferred", last_stats.memory_processed)
        result.setdefault("iterations", last_stats.iteration)
        if last_stats.dirty_rate_bps:
            result["dirty_rate_bps"] = max(result.get("dirty_rate_bps") or 0, last_stats.dirty_rate_bps)
        if not result.get("speed_bps"):
            result["speed_bps"] = last_stats.memory_bps
    if "time_ms" not in result and migration.started_at:
        result["time_ms"] = int((timezone.now() - migration.started_at).total_seconds() * 1000)
    return result


def rewrite_disk_paths(xml, paths):
    """The domain XML with disk sources moved to their new paths."""
    if not paths:
        return xml
    root = ET.fromstring(xml)
    for source in root.iterfind("devices/disk/source"):
        old = source.get("file")
        if old in paths:
            source.set("file", paths[old])
    return ET.tostring(root, encoding="unicode")


def _mib(n):
    return f"{(n or 0) / 1048576:.1f} MiB"


# ---------------------------------------------------------------------------
# Cold migration


class ColdMigration:
    def __init__(self, migration, src, dst):
        self.m = migration
        self.src = src
        self.dst = dst
        self.uuid = str(migration.domain_uuid)
        self.created_volumes = []
        self.defined_on_target = False
        self.started_on_target = False
        self.shut_down_by_us = False
        self.bytes_sent = 0
        self.disk_total = 0

    def run(self):
        t0 = time.monotonic()
        try:
            dom = self.src.domain_details(self.uuid)
            was_running = dom.active
            Migration.objects.filter(pk=self.m.pk).update(was_running=was_running)
            self.m.was_running = was_running
            if was_running:
                self.shut_down(dom)
            xml = self.src.domain_xml(self.uuid, inactive=True)
            paths = {}
            if self.m.storage == StorageMode.COPY:
                paths = self.copy_disks(dom)
                self.verify(paths)
            else:
                self.check_shared(dom)
            self.check_cancel()
            self.m.set_phase(Phase.DEFINING)
            events.publish_migration(self.m)
            self.dst.define(rewrite_disk_paths(xml, paths))
            self.defined_on_target = True
            note(self.m, f"Defined {self.m.domain_name} on {self.m.target_name}.")
            if was_running:
                self.m.set_phase(Phase.STARTING_ON_TARGET)
                events.publish_migration(self.m)
                self.dst.start(self.uuid)
                self.started_on_target = True
                self.wait_state(self.dst, "running", 60, "start on the target")
                note(self.m, f"Started {self.m.domain_name} on {self.m.target_name}.")
        except (Cancelled, Abort, HostError) as e:
            self.undo(e)
            return
        # Past this point the VM lives on the target; only then does the
        # source go.
        self.m.set_phase(Phase.CLEANING_UP)
        events.publish_migration(self.m)
        problems = []
        try:
            self.src.undefine(self.uuid)
            note(self.m, f"Removed the definition from {self.m.source_name}.")
        except HostError as e:
            problems.append(f"the source definition could not be removed ({e.plain})")
        if self.m.delete_source_volumes and self.m.storage == StorageMode.COPY:
            for old in self.source_paths:
                try:
                    self.src.delete_volume(old)
                except HostError as e:
                    problems.append(f"{old} could not be deleted ({e.plain})")
            note(self.m, f"Deleted {len(self.source_paths)} source volume(s) after the verified copy.")
        stats = {
            "time_ms": int((time.monotonic() - t0) * 1000),
            "data_transferred": self.bytes_sent,
            "disk_total": self.disk_total,
            "downtime_ms": None,
        }
        if problems:
            stats["warnings"] = problems
            note(self.m, "Done, but " + "; ".join(problems) + ".")
        finish_succeeded(self.m, stats)

    # -- steps ---------------------------------------------------------------

    def check_cancel(self):
        heartbeat(self.m)
        if _cancel_requested(self.m):
            raise Cancelled()

    def shut_down(self, dom):
        self.m.set_phase(Phase.SHUTTING_DOWN)
        note(self.m, f"Asking {self.m.domain_name} to shut down (up to {self.m.shutdown_timeout} s).")
        self.src.shutdown(self.uuid)
        self.shut_down_by_us = True
        deadline = time.monotonic() + self.m.shutdown_timeout
        while time.monotonic() < deadline:
            if self.src.state(self.uuid) == "shutoff":
                note(self.m, f"{self.m.domain_name} has shut down.")
                return
            self.check_cancel()
            time.sleep(0.5)
        if not self.m.force_off:
            raise Abort(
                f"{self.m.domain_name} did not shut down within {self.m.shutdown_timeout} s. Nothing was "
                "copied. Shut it down from inside the guest, allow more time, or choose to force it off.",
                code="shutdown_timeout",
            )
        note(
            self.m,
            f"{self.m.domain_name} did not shut down within {self.m.shutdown_timeout} s: "
            "powering it off, as the request allowed.",
            AuditAction.POLICY,
            decision="force_off",
        )
        self.src.destroy(self.uuid)
        self.wait_state(self.src, "shutoff", 30, "power off")

    def wait_state(self, conn, state, timeout, what):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if conn.state(self.uuid) == state:
                return
            time.sleep(0.25)
        raise Abort(f"{self.m.domain_name} did not {what} within {timeout} s.", code="state_timeout")

    def check_shared(self, dom):
        for disk in dom.info.disks:
            if disk.device == "disk" and disk.path and self.dst.volume_by_path(disk.path) is None:
                raise Abort(
                    f"{disk.path} is not visible on {self.m.target_name}: the shared storage is not "
                    "mounted there. Mount it, or copy the disks.",
                    code="storage",
                )

    def copy_disks(self, dom):
        self.m.set_phase(Phase.COPYING_DISK)
        events.publish_migration(self.m)
        disks = [d for d in dom.info.disks if d.device == "disk" and d.path]
        self.source_paths = [d.path for d in disks]
        self.disk_total = sum(d.capacity or 0 for d in disks)
        allocated = sum(d.allocation or 0 for d in disks) or self.disk_total
        pool = self.dst.pool(self.m.target_pool)
        self.digests = {}
        paths = {}
        done_alloc = 0
        t0 = time.monotonic()
        for disk in disks:
            name = disk.path.rsplit("/", 1)[-1]
            new = self.dst.create_volume(pool.name, name, disk.capacity or 0, disk.format or "raw")
            self.created_volumes.append(new)
            self.m.save_progress({**self.m.progress, "created_volumes": self.created_volumes})
            note(self.m, f"Copying {disk.path} to {new} on {self.m.target_name}.")
            digest = BlockDigest()
            position = {"offset": 0, "last": 0.0}

            def pieces(disk=disk, digest=digest, position=position):
                nonlocal done_alloc
                for kind, value in self.src.read_volume(disk.path):
                    digest.add(kind, value)
                    if kind == "data":
                        self.bytes_sent += len(value)
                        done_alloc += len(value)
                        position["offset"] += len(value)
                    else:
                        position["offset"] += value
                    now = time.monotonic()
                    if now - position["last"] >= SAMPLE_INTERVAL:
                        position["last"] = now
                        self.check_cancel()
                        self.copy_progress(done_alloc, allocated, t0)
                    yield kind, value

            self.dst.write_volume(new, pieces())
            self.digests[new] = (disk.path, digest.hexdigest())
            paths[disk.path] = new
        self.copy_progress(done_alloc, allocated, t0)
        after_copy(self)
        return paths

    def copy_progress(self, done, total, t0):
        elapsed = time.monotonic() - t0
        speed = done / elapsed if elapsed > 0 else 0
        remaining = max(total - done, 0)
        self.m.save_progress(
            {
                "percent": round(min(100.0, 100.0 * done / total), 1) if total else 100.0,
                "data_total": total,
                "data_processed": done,
                "data_remaining": remaining,
                "disk_total": total,
                "disk_processed": done,
                "disk_remaining": remaining,
                "speed_bps": int(speed),
                "eta_seconds": round(remaining / speed, 1) if speed else None,
                "elapsed": round(elapsed, 1),
                "sampled_at": time.time(),
                "created_volumes": self.created_volumes,
            }
        )
        events.publish_migration(self.m, dashboard=False)

    def verify(self, paths):
        """Read every copy back from the target and compare it with what was sent."""
        self.m.set_phase(Phase.VERIFYING)
        events.publish_migration(self.m)
        for new, (old, expected) in self.digests.items():
            digest = BlockDigest()
            for kind, value in self.dst.read_volume(new):
                digest.add(kind, value)
            self.check_cancel()
            if digest.hexdigest() != expected:
                raise Abort(
                    f"The copy of {old} on {self.m.target_name} differs from the source: the copy was "
                    f"damaged on the way or on the target's storage. The copy was deleted and "
                    f"{self.m.domain_name} was left on {self.m.source_name}.",
                    f"sha256 {expected} sent, {digest.hexdigest()} read back from {new}",
                    code="verify",
                )
        note(self.m, f"Verified {len(self.digests)} copied disk(s): they read back identical to the source.")

    def undo(self, error):
        """Put everything back as it was: the VM defined and, if it was, running on the source."""
        if self.started_on_target:
            with contextlib.suppress(HostError):
                self.dst.destroy(self.uuid)
        if self.defined_on_target:
            with contextlib.suppress(HostError):
                self.dst.undefine(self.uuid)
        for path in self.created_volumes:
            with contextlib.suppress(HostError):
                self.dst.delete_volume(path)
        restarted = ""
        if self.shut_down_by_us:
            try:
                if self.src.state(self.uuid) == "shutoff":
                    self.src.start(self.uuid)
                    restarted = f" {self.m.domain_name} was started again on {self.m.source_name}."
                else:
                    restarted = f" {self.m.domain_name} is still running on {self.m.source_name}."
            except HostError as e:
                restarted = (
                    f" {self.m.domain_name} could not be started again on {self.m.source_name}: "
                    f"{e.plain} Start it by hand."
                )
        else:
            restarted = f" {self.m.domain_name} is still on {self.m.source_name}."
        if isinstance(error, Cancelled):
            finish_cancelled(self.m, "Cancelled; the copies on the target were removed." + restarted)
        elif isinstance(error, Abort):
            finish_failed(self.m, error.message + restarted, error.detail, error.code)
        else:
            finish_failed(self.m, error.plain + restarted, error.detail, error.code or "")


def after_copy(cold):
    """A seam for tests that damage a copy between writing and verifying it."""


class BlockDigest:
    """A digest of a volume's content that does not depend on how it was cut
    into pieces or which zero ranges were holes: all-zero 64 KiB blocks are
    skipped, the others hashed with their offset."""

    def __init__(self):
        self.hash = hashlib.sha256()
        self.offset = 0
        self.buffer = bytearray()

    def add(self, kind, value):
        if kind == "hole":
            self._flush_zeros(value)
            return
        self.buffer += value
        usable = len(self.buffer) - len(self.buffer) % BLOCK
        for start in range(0, usable, BLOCK):
            self._block(bytes(self.buffer[start : start + BLOCK]))
        del self.buffer[:usable]

    def _flush_zeros(self, length):
        # A hole continues the partial block with zeros.
        if self.buffer:
            fill = min(BLOCK - len(self.buffer), length)
            self.buffer += bytes(fill)
            length -= fill
            if len(self.buffer) == BLOCK:
                self._block(bytes(self.buffer))
                self.buffer.clear()
        whole = length - length % BLOCK
        self.offset += whole
        if length % BLOCK:
            self.buffer += bytes(length % BLOCK)

    def _block(self, block):
        if block != ZERO_BLOCK[: len(block)]:
            self.hash.update(self.offset.to_bytes(8, "little"))
            self.hash.update(block)
        self.offset += len(block)

    def hexdigest(self):
        if self.buffer:
            self._block(bytes(self.buffer))
            self.buffer.clear()
        self.hash.update(b"end" + self.offset.to_bytes(8, "little"))
        return self.hash.hexdigest()


def heartbeat(migration):
    Migration.objects.filter(pk=migration.pk).update(updated_at=timezone.now())


# ---------------------------------------------------------------------------
# Orphans: migrations whose worker died


def is_orphaned(migration, now=None):
    now = now or timezone.now()
    return (now - migration.updated_at).total_seconds() > HEARTBEAT_TIMEOUT


def reconcile(migration):
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
        with (
            libvirt_client.open_host(migration.source.uri) as src,
            libvirt_client.open_host(migration.target.uri) as dst,
        ):
            if migration.mode == Mode.LIVE:
                return _reconcile_live(migration, src, dst)
            return _reconcile_cold(migration, src, dst)
    except HostError as e:
        return f"left as is: {e.plain}"
    finally:
        refresh_inventory(migration)


def _reconcile_live(migration, src, dst):
    uuid = str(migration.domain_uuid)
    if src.job_stats(uuid).active:
        # libvirtd still drives it (peer-to-peer): govern it until it ends.
        audit(
            migration,
            AuditAction.RECONCILED,
            f"Reconciled: the worker had stopped, but {migration.source_name} is still migrating "
            f"{migration.domain_name}; a worker took it over.",
        )
        note(migration, "A worker took over this migration after the one that started it stopped.")
        adopt(migration, src, dst)
        return "adopted (still migrating)"
    settle(migration, src, dst, created_volumes=(migration.progress or {}).get("created_volumes", []))
    migration.refresh_from_db()
    audit(
        migration,
        AuditAction.RECONCILED,
        f"Reconciled after the worker stopped: {migration.status}.",
        outcome=migration.status,
    )
    return migration.status


def adopt(migration, src, dst):
    governor = Governor(migration, src, get_policy(migration.policy), migration.flags or [])
    uuid = str(migration.domain_uuid)
    while src.job_stats(uuid).active:
        governor.step()
        heartbeat(migration)
        time.sleep(SAMPLE_INTERVAL)
    settle(
        migration,
        src,
        dst,
        aborted=governor.aborted,
        last_stats=governor.last_stats,
        created_volumes=(migration.progress or {}).get("created_volumes", []),
    )


def _reconcile_cold(migration, src, dst):
    uuid = str(migration.domain_uuid)
    on_source, on_target = src.state(uuid), dst.state(uuid)
    if on_target is not None and on_source is None:
        finish_succeeded(migration, {"reconciled": True})
    else:
        if on_target is not None and on_target != "running":
            with contextlib.suppress(HostError):
                dst.undefine(uuid)
        if on_target is None:
            for path in (migration.progress or {}).get("created_volumes", []):
                with contextlib.suppress(HostError):
                    dst.delete_volume(path)
        restarted = ""
        if migration.was_running and on_source == "shutoff" and on_target != "running":
            with contextlib.suppress(HostError):
                src.start(uuid)
                restarted = f" {migration.domain_name} was started again on {migration.source_name}."
        finish_failed(
            migration,
            f"The worker stopped in the middle of the cold migration; the partial copy was removed.{restarted}",
            code="worker_died",
        )
    migration.refresh_from_db()
    audit(
        migration,
        AuditAction.RECONCILED,
        f"Reconciled after the worker stopped: {migration.status}.",
        outcome=migration.status,
    )
    return migration.status


def reconcile_all(force=False):
    """Every active migration no worker is watching. ``force``: do not wait for
    the heartbeat to go stale (on worker start, when no other worker runs)."""
    results = []
    for migration in Migration.objects.filter(status__in=[Status.CHECKING, Status.RUNNING]):
        if force or is_orphaned(migration):
            results.append((migration.pk, reconcile(migration)))
    return results
