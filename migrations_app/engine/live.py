"""Live migration: the VM keeps running while libvirt copies it over.

``LiveMigration`` starts a peer-to-peer transfer in a thread and the
``Governor`` watches it twice a second: it applies the policy (downtime,
post-copy, deadline), notices a target that stops answering, and aborts the
transfer when the operator cancels. ``settle`` then decides the outcome.
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import replace
from typing import Any

from core.formatting import size
from core.records import InvalidTransition
from hosts.libvirt import Connection, DomainDetails, HostError, JobStats, open_host, reachable, rewrite_disk_paths

from .. import device_moves, prediction
from ..models import AuditAction, Migration, Phase, StorageMode
from ..policies import AUTOMATIC, CONVERGING, NOT_CONVERGING, ConvergenceWatch, Policy, convergence_sentence
from .outcome import finish_failed, hosts_of, policy_of
from .postcopy import CODE as POSTCOPY_INTERRUPTED
from .postcopy import is_interrupted, recover
from .progress import live_sample
from .settle import ABORT_CANCEL, ABORT_DEADLINE, ABORT_TARGET_LOST, settle

SAMPLE_INTERVAL = 0.5
# Probe the target every 4 samples (2 s); abort after 3 misses in a row.
TARGET_PROBE_EVERY = 4
TARGET_MISSES_TO_ABORT = 3
# A post-copy resume that sent nothing for this long hangs (see transfer).
RESUME_STALL_SECONDS = 90


def tls_stream(migration: Migration) -> bool:
    """Whether the migration stream goes over TLS: both hosts registered over
    TLS (so both hold certificates from the CA kvmweb trusts) with the host
    setting on."""
    return all(h is not None and h.wants_tls_migrations for h in (migration.source, migration.target))


class LiveMigration:
    def __init__(self, migration: Migration, src: Connection, dst: Connection, watch: Connection | None = None) -> None:
        self.m = migration
        self.src = src
        self.dst = dst
        # The governor's own connection to the source (see transfer).
        self.watch = watch or src
        self.policy = policy_of(migration)
        self.uuid = str(migration.domain_uuid)
        self.created_volumes: list[str] = []
        # What the governor of the last transfer saw (see Governor).
        self.aborted: str | None = None
        self.last_stats: JobStats | None = None
        # Connections opened after a post-copy interruption (see reopen_target).
        self.extra = contextlib.ExitStack()

    def reopen_target(self) -> Connection | None:
        """A new connection to the target, for after a broken link (the one
        opened at the start may be dead); None if the target cannot be reached."""
        target = self.m.target
        if target is None:
            return None
        try:
            self.dst = self.extra.enter_context(open_host(target.connect_uri(), timeout=5.0))
        except HostError:
            return None
        return self.dst

    def migrate_uri(self) -> str | None:
        # To the target's own address, not the name it reports: that works even
        # where its name resolves to 127.0.0.1 there, which libvirt refuses.
        address = self.m.target.address() if self.m.target is not None else None
        return f"tcp://{address}" if address else None

    def flag_names(self, postcopy: bool) -> list[str]:
        names = ["live", "peer2peer", "persist_dest", "undefine_source", "abort_on_error"]
        if self.m.storage == StorageMode.COPY:
            names.append("non_shared_disk")
        if self.policy.auto_converge:
            names.append("auto_converge")
        if postcopy:
            names.append("postcopy")
        if self.m.parallel_connections:
            names.append("parallel")
        if tls_stream(self.m):
            names.append("tls")
        return names

    def run(self) -> None:
        with self.extra:
            self._run()

    def _run(self) -> None:
        disks: list[str] = []
        dest_xml = None
        # The full details (every pool's volumes listed) only where the disks
        # are copied; elsewhere it is enough that the domain is still there.
        if self.m.storage == StorageMode.COPY:
            dom = self.src.domain_details(self.uuid)
            present = dom is not None
        else:
            dom, present = None, self.src.state(self.uuid) is not None
        if not present:
            raise HostError(
                f"{self.m.domain_name} is no longer defined on {self.m.source_name}. Refresh the inventory.",
                code="no_domain",
            )
        if dom is not None:
            disks, dest_xml = self.prepare_copy(dom)
        dest_xml = self.adapt_devices(dest_xml)
        chosen = self.m.prediction or {}
        if self.m.policy == AUTOMATIC and chosen.get("method"):
            self.m.note(
                f"Automatic: {prediction.METHOD_WORDS.get(chosen['method'], chosen['method'])}, because "
                f"{chosen.get('reason', 'the prediction chose it')}.",
                AuditAction.POLICY,
                decision="automatic",
                method=chosen["method"],
            )
        migrate_uri = self.migrate_uri()
        postcopy = self.policy.postcopy_iteration is not None
        error: HostError | None = None
        while True:
            flags = self.flag_names(postcopy)
            self.m.record_flags(flags)
            self.m.note(
                f"Starting the transfer with libvirt flags {', '.join(flags)}"
                + (f", at most {self.m.bandwidth_mib} MiB/s" if self.m.bandwidth_mib else "")
                + (f", {self.m.parallel_connections} parallel connections" if "parallel" in flags else "")
                + (", the stream encrypted with TLS" if "tls" in flags else "")
                + (f", data to {migrate_uri}" if migrate_uri else "")
                + ".",
            )
            error = self.transfer(flags, migrate_uri, disks, dest_xml)
            if error is not None and postcopy and is_interrupted(self.src, self.uuid):
                # Post-copy started and lost its link: never start again, resume (below).
                break
            if postcopy and error is not None and "postcopy" in (error.detail or "").lower().replace("-", ""):
                postcopy = False
                self.m.note(
                    f"Post-copy is not supported on these hosts (libvirt: {error.detail}); trying again without it.",
                    AuditAction.POLICY,
                    decision="postcopy_unsupported",
                )
                continue
            break
        if error is not None and postcopy and is_interrupted(self.src, self.uuid):
            error = recover(self, flags, migrate_uri)
            if error is not None and error.code == POSTCOPY_INTERRUPTED:
                finish_failed(self.m, error.plain, error.detail, error.code)
                return
        self.settle(error)

    def resume_interrupted(self) -> None:
        """Resume a post-copy migration that lost its link, found by a worker
        that adopted it (engine.reconcile), then settle it."""
        flags = [f for f in (self.m.flags or []) if f != "postcopy_resume"]
        error = recover(self, flags, self.migrate_uri())
        if error is not None and error.code == POSTCOPY_INTERRUPTED:
            finish_failed(self.m, error.plain, error.detail, error.code)
            return
        self.settle(error)

    def settle(self, error: HostError | None) -> None:
        settle(
            self.m,
            self.src,
            self.dst,
            error=error,
            aborted=self.aborted,
            last_stats=self.last_stats,
            created_volumes=self.created_volumes,
        )

    def adapt_devices(self, dest_xml: str | None) -> str | None:
        """The destination XML with consoles and media bound to the source adapted (see
        checks.devices); None when libvirt can use the source's own definition."""
        xml = dest_xml or self.src.domain_xml(self.uuid, inactive=False)
        adapted, changes = device_moves.destination_xml(self.m, self.dst, xml)
        if not changes:
            return dest_xml
        self.m.note(f"Adapted for {self.m.target_name}: {'; '.join(changes)}.")
        return adapted

    def prepare_copy(self, dom: DomainDetails) -> tuple[list[str], str]:
        """Create the target volumes the disks will be copied into."""
        pool = self.dst.pool(self.m.target_pool)
        if pool is None:
            raise HostError(f"The pool {self.m.target_pool} does not exist on {self.m.target_name}.", code="storage")
        disks, paths, sources = [], {}, []
        for disk in dom.info.movable_disks():
            name = disk.path.rsplit("/", 1)[-1]
            path = self.dst.create_volume(pool.name, name, disk.capacity or 0, disk.format or "raw")
            self.created_volumes.append(path)
            self.m.record_created_volumes(self.created_volumes)
            disks.append(disk.target)
            paths[disk.path] = path
            sources.append({"path": disk.path, "copy": path, "capacity": disk.capacity or 0})
        self.m.record_source_volumes(sources)
        self.m.note(f"Created {len(paths)} volume(s) in pool {pool.name} on {self.m.target_name}.")
        dest_xml = rewrite_disk_paths(self.src.domain_xml(self.uuid, inactive=False), paths)
        return disks, dest_xml

    def transfer(
        self, flags: list[str], migrate_uri: str | None, disks: list[str], dest_xml: str | None, resumed: bool = False
    ) -> HostError | None:
        """Run migrateToURI3 in a thread; govern it from here.

        The governor samples over a connection of its own (opened beside the
        other two when the migration was claimed, so it costs no time): on the
        connection busy with the migrate call, a jobStats call was seen to
        wait seconds for its answer, in two runs of four, and the policy and
        the progress bar went blind for the end of the transfer.
        """
        outcome: dict[str, HostError] = {}
        target_uri = hosts_of(self.m)[1].uri

        def target() -> None:
            try:
                self.src.migrate(
                    self.uuid,
                    target_uri,
                    flags,
                    migrate_uri=migrate_uri,
                    bandwidth_mib=self.m.bandwidth_mib,
                    disks=disks,
                    destination_xml=dest_xml,
                    auto_converge=(20, 10) if "auto_converge" in flags else None,
                    parallel_connections=self.m.parallel_connections,
                    postcopy_bandwidth="postcopy" in flags,
                )
            except HostError as e:
                outcome["error"] = e
            except Exception as e:  # noqa: BLE001 - reported, not swallowed
                outcome["error"] = HostError("The migration call failed unexpectedly.", repr(e))

        self.m.set_phase(Phase.TRANSFERRING_MEMORY if not disks else Phase.COPYING_DISK)
        thread = threading.Thread(target=target, name=f"migrate-{self.m.pk}", daemon=True)
        thread.start()
        governor = Governor(self.m, self.watch, self.policy, flags, resumed=resumed)
        # A resumed transfer that sends nothing for RESUME_STALL_SECONDS hangs
        # (libvirt keeps the source's reason "post-copy failed" until the end,
        # so the state says nothing; the bytes sent do).
        moved_at, sent = time.monotonic(), -1
        while thread.is_alive():
            thread.join(SAMPLE_INTERVAL)
            if thread.is_alive():
                governor.step()
                now_sent = governor.last_stats.memory_processed if governor.last_stats is not None else 0
                if now_sent != sent:
                    moved_at, sent = time.monotonic(), now_sent
                if resumed and time.monotonic() - moved_at > RESUME_STALL_SECONDS:
                    # Seen on the lab when the resume began before the target's
                    # QEMU knew of the break: the call never returned, and held
                    # the domain's lock in libvirtd until it restarted.
                    return HostError(
                        f"libvirt's call to resume the migration on {self.m.source_name} has sent nothing for "
                        f"{RESUME_STALL_SECONDS} s: it holds {self.m.domain_name}'s "
                        f"job there. Restarting libvirtd on {self.m.source_name} releases it (the VM stays paused).",
                        code="resume_hung",
                    )
        self.aborted = governor.aborted
        self.last_stats = governor.last_stats
        return outcome.get("error")


class Governor:
    """Samples a running migration and applies its policy, twice a second.

    Used by the worker that started the migration and by one that adopted it.
    """

    def __init__(
        self, migration: Migration, src: Connection, policy: Policy, flags: list[str], resumed: bool = False
    ) -> None:
        self.m = migration
        self.src = src
        self.policy = policy
        self.flags = flags
        self.uuid = str(migration.domain_uuid)
        progress: dict[str, Any] = migration.progress or {}
        self.started = time.monotonic() - (progress.get("elapsed") or 0)
        self.aborted: str | None = None
        self.downtime_ms: int | None = progress.get("downtime_ms")
        # What was told already, so that a worker adopting the migration does not tell it again.
        self.throttle: int | None = progress.get("throttle_percent")
        self.convergence = ConvergenceWatch(state=progress.get("convergence") or CONVERGING)
        # A resumed post-copy migration is in post-copy from its first sample.
        self.postcopy_started = resumed
        self.last_stats: JobStats | None = None
        self.errors = 0
        self.steps = 0
        self.target_misses = 0
        # Learned pass by pass (measure.py reads them from the progress of earlier migrations).
        self.pass_dirty_rates: list[list[int]] = [list(p) for p in progress.get("pass_dirty_rates") or []]
        self.refined: str | None = progress.get("prediction_sentence")
        self.wire_share: float | None = progress.get("wire_share")

    def learn(self, stats: JobStats, elapsed: float) -> dict[str, Any]:
        """Keep each pass's dirty rate and the first pass's share of non-zero pages; once the first
        pass is over, predict the rest from the transfer's own figures (said once)."""
        if stats.iteration >= 1 and stats.dirty_rate_bps:
            if self.pass_dirty_rates and self.pass_dirty_rates[-1][0] == stats.iteration:
                self.pass_dirty_rates[-1][1] = max(self.pass_dirty_rates[-1][1], stats.dirty_rate_bps)
            else:
                self.pass_dirty_rates.append([stats.iteration, stats.dirty_rate_bps])
        constant = stats.raw.get("memory_constant")
        if constant is not None and stats.memory_total and stats.iteration >= 1:
            # The pages QEMU found holding only zeros (nearly all in the first pass): they cost no bandwidth.
            page = stats.raw.get("memory_page_size") or 4096
            self.wire_share = max(0.0, min(1.0, 1 - constant * page / stats.memory_total))
        if self.refined is None and stats.iteration >= 2 and stats.memory_bps:
            self.refine(stats, elapsed)
        learned: dict[str, Any] = {"pass_dirty_rates": self.pass_dirty_rates}
        if self.wire_share is not None:
            learned["wire_share"] = round(self.wire_share, 3)
        if self.refined is not None:
            learned["prediction_sentence"] = self.refined
        return learned

    def refine(self, stats: JobStats, elapsed: float) -> None:
        if self.postcopy_started or "postcopy" in self.flags:
            return
        rest = prediction.predict(
            stats.memory_remaining,
            stats.dirty_rate_bps,
            stats.memory_bps,
            lambda t: self.policy.downtime_at(elapsed + t),
            auto_converge="auto_converge" in self.flags,
            setup_seconds=0,
            memory_total=stats.memory_total,
        )
        seconds = elapsed + rest.seconds
        whole = replace(rest, seconds=seconds, passes=stats.iteration - 1 + rest.passes)
        self.refined = (
            f"After the first pass: {prediction.describe(whole)} in all."
            if rest.converges
            else f"After the first pass: {prediction.sentence(rest)}"
        )
        self.m.refine_prediction(
            {
                **rest.as_dict(),
                "seconds": round(seconds, 1),
                "passes": stats.iteration - 1 + rest.passes,
                "at_pass": stats.iteration,
            }
        )
        self.m.note(self.refined, refined=True)

    def step(self) -> None:
        elapsed = time.monotonic() - self.started
        self.steps += 1
        if self.steps % TARGET_PROBE_EVERY == 0:
            self.watch_target()
        try:
            stats = self.src.job_stats(self.uuid)
        except HostError as e:
            self.errors += 1
            if self.errors == 3:
                self.m.note(f"Cannot read the migration's progress from {self.m.source_name}: {e.plain}")
            return
        self.errors = 0
        if not stats.active:
            return
        self.last_stats = stats
        self.apply_policy(stats, elapsed)
        progress = live_sample(
            stats,
            elapsed,
            self.downtime_ms,
            created_volumes=(self.m.progress or {}).get("created_volumes", []),
            convergence=self.convergence.state,
            **self.learn(stats, elapsed),
        )
        if self.m.storage == StorageMode.COPY and stats.disk_remaining == 0 and stats.memory_processed:
            if self.m.phase == Phase.COPYING_DISK:
                with contextlib.suppress(InvalidTransition):
                    self.m.set_phase(Phase.TRANSFERRING_MEMORY)
        self.m.save_progress(progress)
        if self.aborted is None and self.m.cancel_is_requested():
            self.abort(ABORT_CANCEL, "Cancel requested: aborting the transfer. The VM keeps running on the source.")

    def abort(self, why: str, message: str, audited: bool = False) -> None:
        """Abort the transfer: say why, then ask libvirt to stop the job."""
        self.aborted = why
        if audited:
            self.m.note(message, AuditAction.POLICY, decision=why)
        else:
            self.m.note(message)
        self.src.abort_job(self.uuid)

    def watch_target(self) -> None:
        """Abort when the target stops answering, rather than wait for libvirt's
        keepalive to notice (half a minute) or for a TCP timeout (longer)."""
        if self.m.target is None or reachable(self.m.target.uri, timeout=1.5):
            self.target_misses = 0
            return
        self.target_misses += 1
        if self.target_misses == TARGET_MISSES_TO_ABORT and self.postcopy_started:
            # Too late to abort: the guest runs on the target and part of its
            # memory is still on the source. libvirt pauses both sides when it
            # gives up on the link, and the engine resumes (engine.postcopy).
            self.m.note(
                f"{self.m.target_name} has not answered for several seconds in the middle of post-copy: "
                f"the VM waits for it. Nothing is lost; kvmweb resumes the migration when the link is back."
            )
            return
        if self.target_misses == TARGET_MISSES_TO_ABORT and self.aborted is None:
            self.abort(
                ABORT_TARGET_LOST,
                f"{self.m.target_name} has not answered for several seconds: aborting. The VM "
                "keeps running on the source.",
                audited=True,
            )

    def apply_policy(self, stats: JobStats, elapsed: float) -> None:
        self._steer_downtime(stats, elapsed)
        self._report_throttle(stats)
        self._watch_convergence(stats)
        self._maybe_postcopy(stats)
        policy = self.policy
        if self.aborted is None and elapsed > policy.deadline_seconds and not self.postcopy_started:
            self.abort(
                ABORT_DEADLINE,
                f"Deadline of {policy.deadline_seconds} s reached at pass {stats.iteration} with "
                f"{size(stats.memory_remaining)} still to send: aborting. The VM keeps running on "
                "the source.",
                audited=True,
            )

    def _steer_downtime(self, stats: JobStats, elapsed: float) -> None:
        wanted = self.policy.downtime_at(elapsed)
        if wanted == self.downtime_ms:
            return
        try:
            self.src.set_max_downtime(self.uuid, wanted)
            self.m.note(
                f"Allowed downtime set to {wanted} ms ({elapsed:.0f} s in, pass {stats.iteration}).",
                AuditAction.POLICY,
                decision="downtime",
                downtime_ms=wanted,
            )
        except HostError as e:
            self.m.note(f"Could not set the allowed downtime to {wanted} ms: {e.plain}")
        self.downtime_ms = wanted

    def _report_throttle(self, stats: JobStats) -> None:
        if stats.throttle_percent and stats.throttle_percent != self.throttle:
            self.throttle = stats.throttle_percent
            self.m.note(
                f"Auto-converge slowed the guest's CPUs by {self.throttle}% to let the copy catch up.",
                AuditAction.POLICY,
                decision="auto_converge",
                throttle=self.throttle,
            )

    def _watch_convergence(self, stats: JobStats) -> None:
        """Say how the transfer goes when that changes, calmly (see ConvergenceWatch).

        An observation, not a decision: it goes to the migration's own log and
        page, never to the audit log, which keeps what the policy did about it."""
        if stats.iteration < 2 or not stats.memory_bps:
            return
        told = self.convergence.observe(time.monotonic(), stats.dirty_rate_bps, stats.memory_bps)
        if told is None:
            return
        dirty, send = self.convergence.rates()
        sentence = convergence_sentence(told, dirty, send, stats.iteration)
        if told == NOT_CONVERGING:
            sentence = (
                sentence[:-1]
                + "; "
                + (
                    "post-copy is next."
                    if "postcopy" in self.flags
                    else "auto-converge is on."
                    if "auto_converge" in self.flags
                    else "try the 'Make it converge' policy, more bandwidth, or a cold migration."
                )
            )
        self.m.note(sentence, convergence=told, dirty_rate_bps=dirty, memory_bps=send)

    def _maybe_postcopy(self, stats: JobStats) -> None:
        policy = self.policy
        if (
            "postcopy" not in self.flags
            or self.postcopy_started
            or policy.postcopy_iteration is None
            or stats.iteration < policy.postcopy_iteration
        ):
            return
        try:
            self.src.start_postcopy(self.uuid)
            self.postcopy_started = True
            self.m.note(
                f"Switched to post-copy at pass {stats.iteration}: the guest now runs on the "
                "target and fetches the rest of its memory on demand.",
                AuditAction.POLICY,
                decision="postcopy",
            )
        except HostError as e:
            self.postcopy_started = True  # do not try again every half second
            self.m.note(
                f"Post-copy could not start: {e.plain}. Carrying on with pre-copy.",
                AuditAction.POLICY,
                decision="postcopy_failed",
                detail=e.detail,
            )
