"""Cold migration: shut the VM down, copy (or find) its disks on the target,
define and start it there, and only then remove it from the source.

Any failure or cancel before the VM runs on the target puts everything back
(``ColdMigration.undo``): the copies go, and the VM starts again on the source.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

from hosts.libvirt import Connection, DomainDetails, DomainState, HostError, rewrite_disk_paths

from .. import device_moves
from ..models import AuditAction, Migration, Phase, StorageMode
from .digest import BlockDigest
from .live import SAMPLE_INTERVAL
from .outcome import (
    Abort,
    Cancelled,
    finish_cancelled,
    finish_failed,
    finish_succeeded,
)
from .progress import progress_sample
from .source_copy import remove_source_copy


class ColdMigration:
    def __init__(self, migration: Migration, src: Connection, dst: Connection) -> None:
        self.m = migration
        self.src = src
        self.dst = dst
        self.uuid = str(migration.domain_uuid)
        self.created_volumes: list[str] = []
        self.source_volumes: list[dict[str, Any]] = []
        # {new path: (old path, digest of what was sent)}
        self.digests: dict[str, tuple[str, str]] = {}
        self.defined_on_target = False
        self.started_on_target = False
        self.shut_down_by_us = False
        self.bytes_sent = 0
        self.disk_total = 0

    def run(self) -> None:
        t0 = time.monotonic()
        try:
            dom = self.src.domain_details(self.uuid)
            if dom is None:
                raise Abort(f"{self.m.domain_name} is no longer defined on {self.m.source_name}.", code="no_domain")
            was_running = dom.active
            self.m.record_was_running(was_running)
            if was_running:
                self.shut_down()
            xml = self.src.domain_xml(self.uuid, inactive=True)
            paths = {}
            if self.m.storage == StorageMode.COPY:
                paths = self.copy_disks(dom)
                self.verify()
            else:
                self.check_shared(dom)
            self.check_cancel()
            self.m.set_phase(Phase.DEFINING)
            xml, changes = device_moves.destination_xml(self.m, self.dst, rewrite_disk_paths(xml, paths))
            self.dst.define(xml)
            self.defined_on_target = True
            self.m.note(f"Defined {self.m.domain_name} on {self.m.target_name}.")
            if changes:
                self.m.note(f"Adapted for {self.m.target_name}: {'; '.join(changes)}.")
            self.carry_host_state(xml, paths)
            if was_running:
                self.m.set_phase(Phase.STARTING_ON_TARGET)
                self.dst.start(self.uuid)
                self.started_on_target = True
                self.wait_state(self.dst, DomainState.RUNNING, 60, "start on the target")
                self.m.note(f"Started {self.m.domain_name} on {self.m.target_name}.")
        except (Cancelled, Abort, HostError) as e:
            self.undo(e)
            return
        # Past this point the VM lives on the target; only then does the
        # source go.
        self.m.set_phase(Phase.CLEANING_UP)
        problems = []
        try:
            self.src.undefine(self.uuid)
            self.m.note(f"Removed the definition from {self.m.source_name}.")
        except HostError as e:
            problems.append(f"the source definition could not be removed ({e.plain})")
        # The copies were verified by their digests: the source's copy goes
        # now, unless the request keeps it.
        removal = remove_source_copy(self.m, self.src, self.dst)
        stats: dict[str, Any] = {
            "time_ms": int((time.monotonic() - t0) * 1000),
            "data_transferred": self.bytes_sent,
            "disk_transferred": self.bytes_sent,
            "disk_total": self.disk_total,
            "downtime_ms": None,
            **removal,
        }
        if problems:
            stats["warnings"] = problems
            self.m.note("Done, but " + "; ".join(problems) + ".")
        finish_succeeded(self.m, stats)

    # -- steps ---------------------------------------------------------------

    def check_cancel(self) -> None:
        self.m.heartbeat()
        if self.m.cancel_is_requested():
            raise Cancelled()

    def shut_down(self) -> None:
        self.m.set_phase(Phase.SHUTTING_DOWN)
        self.m.note(f"Asking {self.m.domain_name} to shut down (up to {self.m.shutdown_timeout} s).")
        self.src.shutdown(self.uuid)
        self.shut_down_by_us = True
        deadline = time.monotonic() + self.m.shutdown_timeout
        while time.monotonic() < deadline:
            if self.src.state(self.uuid) == DomainState.SHUTOFF:
                self.m.note(f"{self.m.domain_name} has shut down.")
                return
            self.check_cancel()
            time.sleep(0.5)
        if not self.m.force_off:
            raise Abort(
                f"{self.m.domain_name} did not shut down within {self.m.shutdown_timeout} s. Nothing was "
                "copied. Shut it down from inside the guest, allow more time, or choose to force it off.",
                code="shutdown_timeout",
            )
        self.m.note(
            f"{self.m.domain_name} did not shut down within {self.m.shutdown_timeout} s: "
            "powering it off, as the request allowed.",
            AuditAction.POLICY,
            decision="force_off",
        )
        self.src.destroy(self.uuid)
        self.wait_state(self.src, DomainState.SHUTOFF, 30, "power off")

    def carry_host_state(self, xml: str, paths: dict[str, str]) -> None:
        """What libvirt keeps per host and a cold move does not carry by itself."""
        carried, _written = device_moves.carry_state(self.m, self.src, self.dst, xml)
        if carried:
            self.m.note(f"Copied {' and '.join(carried)} to {self.m.target_name}.")
        count = device_moves.carry_snapshots(self.m, self.src, self.dst, lambda x: rewrite_disk_paths(x, paths))
        if count:
            self.m.note(f"Defined {count} snapshot(s) on {self.m.target_name} as they were on {self.m.source_name}.")

    def wait_state(self, conn: Connection, state: DomainState, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if conn.state(self.uuid) == state:
                return
            time.sleep(0.25)
        raise Abort(f"{self.m.domain_name} did not {what} within {timeout} s.", code="state_timeout")

    def check_shared(self, dom: DomainDetails) -> None:
        for disk in dom.info.movable_disks():
            if self.dst.volume_by_path(disk.path) is None:
                raise Abort(
                    f"{disk.path} is not visible on {self.m.target_name}: the shared storage is not "
                    "mounted there. Mount it, or copy the disks.",
                    code="storage",
                )

    def copy_disks(self, dom: DomainDetails) -> dict[str, str]:
        """Copy each disk into a new volume on the target, sparsely, digesting
        what is sent; returns {old path: new path}."""
        self.m.set_phase(Phase.COPYING_DISK)
        disks = dom.info.movable_disks()
        self.disk_total = sum(d.capacity or 0 for d in disks)
        allocated = sum(d.allocation or 0 for d in disks) or self.disk_total
        pool = self.dst.pool(self.m.target_pool)
        if pool is None:
            raise Abort(f"The pool {self.m.target_pool} does not exist on {self.m.target_name}.", code="storage")
        paths = {}
        done = 0
        t0 = time.monotonic()
        chains = {c.path: c.backing for c in self.src.domain_devices(self.uuid).chains}
        for disk in disks:
            last = 0.0  # a progress sample at the start of each disk
            name = disk.path.rsplit("/", 1)[-1]
            read_from = disk.path
            if chains.get(disk.path):
                # The copy is one file: its backing files may not exist on the target.
                read_from = self.src.flat_copy(disk.path)
                self.m.note(f"Merged {disk.path} and its backing files {', '.join(chains[disk.path])} into one file.")
            new = self.dst.create_volume(pool.name, name, disk.capacity or 0, disk.format or "raw")
            self.created_volumes.append(new)
            self.m.record_created_volumes(self.created_volumes)
            self.m.note(f"Copying {disk.path} to {new} on {self.m.target_name}.")
            digest = BlockDigest()

            def pieces(path: str = read_from, digest: BlockDigest = digest) -> Iterator[Any]:
                nonlocal done, last
                for kind, value in self.src.read_volume(path):
                    digest.add(kind, value)
                    if isinstance(value, bytes):
                        self.bytes_sent += len(value)
                        done += len(value)
                    now = time.monotonic()
                    if now - last >= SAMPLE_INTERVAL:
                        last = now
                        self.check_cancel()
                        self.copy_progress(done, allocated, t0)
                    yield kind, value

            try:
                self.dst.write_volume(new, pieces())
            finally:
                if read_from != disk.path:
                    with contextlib.suppress(HostError):
                        self.src.delete_volume(read_from)
            self.digests[new] = (disk.path, digest.hexdigest())
            paths[disk.path] = new
            self.source_volumes.append({"path": disk.path, "copy": new, "capacity": disk.capacity or 0})
            self.m.record_source_volumes(self.source_volumes)
        self.copy_progress(done, allocated, t0)
        return paths

    def copy_progress(self, done: int, total: int, t0: float) -> None:
        elapsed = time.monotonic() - t0
        speed = done / elapsed if elapsed > 0 else 0
        remaining = max(total - done, 0)
        self.m.save_progress(
            progress_sample(
                total=total,
                processed=done,
                remaining=remaining,
                speed_bps=int(speed),
                eta_seconds=round(remaining / speed, 1) if speed else None,
                elapsed=elapsed,
                created_volumes=self.created_volumes,
                percent=None if total else 100.0,
                disk_total=total,
                disk_processed=done,
                disk_remaining=remaining,
            )
        )

    def verify(self) -> None:
        """Read every copy back from the target and compare it with what was sent."""
        self.m.set_phase(Phase.VERIFYING)
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
        self.m.note(f"Verified {len(self.digests)} copied disk(s): they read back identical to the source.")

    def undo(self, error: Cancelled | Abort | HostError) -> None:
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
        if self.shut_down_by_us:
            try:
                if self.src.state(self.uuid) == DomainState.SHUTOFF:
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
