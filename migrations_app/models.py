from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import models, transaction
from django.db.models import Q
from django.dispatch import Signal
from django.utils import timezone

from kvmweb.formatting import size
from kvmweb.links import row_url
from kvmweb.records import InvalidTransition, TrackedRequest

from .tallies import Tally, migration_finished  # noqa: F401  (Tally: a model of this app)
from .wire import MigrationEvent, MigrationLine, MigrationRow

if TYPE_CHECKING:
    from django.contrib.auth.base_user import AbstractBaseUser
    from django.contrib.auth.models import AnonymousUser


class Status(models.TextChoices):
    QUEUED = "queued", "Queued"
    CHECKING = "checking", "Checking"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


ACTIVE = (Status.QUEUED, Status.CHECKING, Status.RUNNING)
FINISHED = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED)

# Sent in the process that ended a migration, once its final state is recorded
# and told (and again for a note added after it): an evacuation's runner
# starts its next move then, rather than at its next look.
migration_ended = Signal()


class Mode(models.TextChoices):
    LIVE = "live", "Live (the VM keeps running)"
    COLD = "cold", "Cold (shut down, copy, start)"


class StorageMode(models.TextChoices):
    SHARED = "shared", "Shared storage (disks stay where they are)"
    COPY = "copy", "Copy the disks to the target"


class Phase(models.TextChoices):
    NONE = "", "—"
    WAITING = "waiting", "Waiting for a free slot"
    CHECKING = "checking", "Pre-flight checks"
    PREPARING = "preparing", "Preparing the target"
    SHUTTING_DOWN = "shutting_down", "Shutting down"
    COPYING_DISK = "copying_disk", "Copying disks"
    VERIFYING = "verifying", "Verifying the copy"
    TRANSFERRING_MEMORY = "transferring_memory", "Transferring memory"
    # Post-copy lost its link: paused on both sides, waiting to resume (engine.postcopy).
    POSTCOPY_INTERRUPTED = "postcopy_interrupted", "Post-copy interrupted"
    SWITCHING_OVER = "switching_over", "Switching over"
    DEFINING = "defining", "Defining on the target"
    STARTING_ON_TARGET = "starting_on_target", "Starting on the target"
    CLEANING_UP = "cleaning_up", "Cleaning up"
    DONE = "done", "Done"


# The most progress samples a migration keeps for its chart.
MAX_SAMPLES = 300


class Migration(TrackedRequest):
    """One request to move one domain, and everything that happened to it.

    The model owns its state changes: each transition is a conditional UPDATE
    that names the state it expects to leave (see TrackedRequest), so two
    workers (or a worker and a cancel request) can never both move the same
    migration on.
    """

    ACTIVE = ACTIVE

    # What was asked. Names are copied so the record stays readable after the
    # domain, a host or the user is gone.
    domain = models.ForeignKey(
        "hosts.Domain", null=True, blank=True, on_delete=models.SET_NULL, related_name="migrations"
    )
    domain_name = models.CharField(max_length=255)
    domain_uuid = models.UUIDField(db_index=True)
    source = models.ForeignKey("hosts.Host", null=True, on_delete=models.SET_NULL, related_name="outgoing_migrations")
    source_name = models.CharField(max_length=63)
    target = models.ForeignKey("hosts.Host", null=True, on_delete=models.SET_NULL, related_name="incoming_migrations")
    target_name = models.CharField(max_length=63)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    requested_by_name = models.CharField(max_length=150, blank=True)

    mode = models.CharField(max_length=4, choices=Mode.choices)
    storage = models.CharField(max_length=6, choices=StorageMode.choices, default=StorageMode.SHARED)
    target_pool = models.CharField(max_length=255, blank=True, help_text="For copied disks.")
    policy = models.CharField(max_length=32, default="default")
    bandwidth_mib = models.PositiveIntegerField(null=True, blank=True, help_text="MiB/s; empty for no limit.")
    parallel_connections = models.PositiveSmallIntegerField(
        default=0,
        help_text="Live: connections that carry the memory side by side (QEMU's multifd), 2 to 16; 0 for one.",
    )
    shutdown_timeout = models.PositiveIntegerField(default=120, help_text="Cold: seconds to wait for a clean shutdown.")
    force_off = models.BooleanField(default=False, help_text="Cold: power the VM off if it does not shut down in time.")
    keep_source_volumes = models.BooleanField(
        default=False,
        help_text="Copy storage: keep the source's copy of the disks; by default it is removed once the move "
        "is verified.",
    )
    replace_own_leftovers = models.BooleanField(
        default=False,
        help_text="Copy storage: first remove a same-named volume in the target pool when an earlier "
        "migration of this VM recorded leaving it there (an evacuation's return).",
    )
    eject_media = models.BooleanField(
        default=False, help_text="Empty CD-ROM and floppy drives whose image the target cannot see."
    )
    rule_override = models.TextField(
        blank=True,
        default="",
        help_text="Why the operator moves it against a placement rule (the check then warns, not fails).",
    )

    # What happened.
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    phase = models.CharField(max_length=24, choices=Phase.choices, default=Phase.NONE, blank=True)
    was_running = models.BooleanField(null=True, blank=True)
    flags = models.JSONField(default=list, blank=True, help_text="libvirt flags used.")
    checks = models.JSONField(default=list, blank=True)
    progress = models.JSONField(default=dict, blank=True)
    samples = models.JSONField(
        default=list,
        blank=True,
        # Since issue 22: [sampled_at, bytes sent, bytes left] (older rows: pairs without bytes sent).
        help_text="[sampled_at, bytes remaining] pairs for the chart, thinned to a few hundred.",
    )
    stats = models.JSONField(default=dict, blank=True)
    events = models.JSONField(default=list, blank=True, help_text="Policy decisions and steps.")
    error = models.TextField(blank=True)
    error_detail = models.TextField(blank=True)
    error_code = models.CharField(max_length=32, blank=True)
    cancel_requested = models.BooleanField(default=False)
    source_volumes = models.JSONField(
        default=list,
        blank=True,
        help_text="Copy storage: each source volume copied, as {path, copy, capacity}: what is removed (or "
        "kept) once the move is verified.",
    )
    job_id = models.CharField(max_length=64, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            # One migration per domain at a time, enforced by the database.
            models.UniqueConstraint(
                fields=["domain_uuid"],
                condition=Q(status__in=["queued", "checking", "running"]),
                name="one_active_migration_per_domain",
            ),
        ]

    def __str__(self):
        return f"#{self.pk} {self.domain_name} {self.source_name} → {self.target_name} ({self.mode})"

    def get_absolute_url(self):
        return row_url("migration-detail", self.pk)

    @property
    def duration(self):
        if not self.started_at:
            return None
        return ((self.finished_at or timezone.now()) - self.started_at).total_seconds()

    # -- writes ------------------------------------------------------------------
    #
    # The model is the only writer of its row. Each write is an UPDATE of the
    # fields it changes (never a save() of a stale copy), and every change of
    # state is told through ``_announce``: the audit entry, if the change is one
    # an auditor wants, then the publish to the browsers. Every method that
    # writes is marked ``alters_data``, so a template cannot call it.

    def _write(self, **changes: Any) -> None:
        """Write fields that are not the state (progress, checks, flags...)."""
        changes["updated_at"] = timezone.now()
        Migration.objects.filter(pk=self.pk).update(**changes)
        for name, value in changes.items():
            setattr(self, name, value)

    _write.alters_data = True

    def _announce(
        self,
        audit: tuple[str, str] | None = None,
        *,
        user: Any = None,
        dashboard: bool = True,
        counts: bool = True,
        **data: Any,
    ) -> None:
        """The one way a change is told: ``audit`` is (action, message) for the
        audit log, then every watcher gets the new state. ``counts=False``: the
        change cannot alter the hosts' counts (see events.publish_migration)."""
        from . import events

        if audit is not None:
            action, message = audit
            AuditEntry.record(action, message, user=user, migration=self, **data)
        events.publish_migration(self, dashboard=dashboard, counts=counts)
        if self.status in FINISHED:
            migration_ended.send(sender=Migration, migration=self)

    def start_checking(self) -> None:
        self._transition([Status.QUEUED], status=Status.CHECKING, phase=Phase.CHECKING)
        self._announce()

    start_checking.alters_data = True

    def start(self, **audit_data: Any) -> None:
        """The checks passed: the move begins. ``audit_data`` goes into the audit entry (the worker's name)."""
        self._transition([Status.CHECKING], status=Status.RUNNING, phase=Phase.PREPARING, started_at=timezone.now())
        self._announce(
            (
                AuditAction.START,
                f"Started the {self.mode} migration of {self.domain_name} from "
                f"{self.source_name} to {self.target_name}.",
            ),
            **audit_data,
        )

    start.alters_data = True

    def set_phase(self, phase: str) -> None:
        self._transition([Status.RUNNING], phase=phase)
        self._announce(counts=False)

    set_phase.alters_data = True

    def succeed(self, stats: dict[str, Any] | None = None) -> None:
        self._transition(
            [Status.RUNNING],
            status=Status.SUCCEEDED,
            phase=Phase.DONE,
            stats=stats or self.stats,
            finished_at=timezone.now(),
        )
        migration_finished(self)
        self._announce(
            (
                AuditAction.SUCCEEDED,
                f"{self.domain_name} now runs on {self.target_name} ({stats_summary(self.stats)}).",
            ),
            outcome="succeeded",
            stats=self.stats,
        )

    succeed.alters_data = True

    def fail(self, error: str, detail: str = "", code: str = "", stats: dict[str, Any] | None = None) -> None:
        self._transition(
            ACTIVE,
            status=Status.FAILED,
            error=error,
            error_detail=detail,
            error_code=code,
            stats=stats or self.stats,
            finished_at=timezone.now(),
        )
        migration_finished(self)
        self._announce((AuditAction.FAILED, error), outcome="failed", detail=detail, code=code)

    fail.alters_data = True

    def cancel(self, reason: str = "") -> None:
        self._transition(
            ACTIVE,
            status=Status.CANCELLED,
            error=reason,
            finished_at=timezone.now(),
        )
        migration_finished(self)
        self._announce((AuditAction.CANCELLED, reason), outcome="cancelled")

    cancel.alters_data = True

    def request_cancel(self, user: Any) -> str:
        """``user`` asks the worker to stop; a queued migration is cancelled at once.

        Returns "cancelled" or "requested" (the worker, or the web process's
        abort, finishes it)."""
        with transaction.atomic():
            if Migration.objects.filter(pk=self.pk, status=Status.QUEUED).update(
                status=Status.CANCELLED,
                cancel_requested=True,
                error="Cancelled before it started.",
                finished_at=timezone.now(),
                updated_at=timezone.now(),
            ):
                outcome = "cancelled"
            elif Migration.objects.filter(pk=self.pk, status__in=ACTIVE).update(
                cancel_requested=True, updated_at=timezone.now()
            ):
                outcome = "requested"
            else:
                outcome = ""
        self.refresh_from_db()
        if not outcome:
            raise InvalidTransition(f"Migration #{self.pk} has already {self.status}.")
        if outcome == "cancelled":
            migration_finished(self)
        self._announce(
            (
                AuditAction.CANCEL,
                f"{user.get_username()} asked to cancel the migration of {self.domain_name}."
                + (" It had not started: cancelled." if outcome == "cancelled" else ""),
            ),
            user=user,
        )
        return outcome

    request_cancel.alters_data = True

    def wait_for_slot(self) -> None:
        """A queued migration waits for a free slot on its hosts (said once)."""
        if self.phase == Phase.WAITING:
            return
        if Migration.objects.filter(pk=self.pk, status=Status.QUEUED).update(
            phase=Phase.WAITING, updated_at=timezone.now()
        ):
            self.phase = Phase.WAITING
            reason = self.waiting_reason()
            self.note(reason if reason.endswith(".") else f"{reason}.")

    wait_for_slot.alters_data = True

    def note(self, message: str, audit_action: str | None = None, **data: Any) -> dict[str, Any]:
        """A step or decision: in the migration's own log, live in the browser,
        and (for decisions, with ``audit_action``) in the audit log."""
        entry = {"at": timezone.now().isoformat(), "message": message, **data}
        self._write(events=[*self.events, entry])
        self._announce(
            (audit_action, message) if audit_action else None, counts=False, **(data if audit_action else {})
        )
        return entry

    note.alters_data = True

    def save_progress(self, progress: dict[str, Any]) -> None:
        """A progress sample, sent to the migration's watchers (not the dashboard),
        and kept for the chart (so a page opened after the end still draws it)."""
        from .display import chart_point

        point = chart_point(progress)
        if point is None:
            self._write(progress=progress)
        else:
            samples = [*self.samples, point]
            if len(samples) > MAX_SAMPLES:
                # Thin out evenly (301 samples: the first and the newest stay); the chart keeps its shape.
                samples = samples[::2]
            self._write(progress=progress, samples=samples)
        self._announce(dashboard=False)

    save_progress.alters_data = True

    def record_created_volumes(self, paths: Iterable[str]) -> None:
        """The volumes made on the target so far, kept so that whoever settles
        the migration (this worker or a later one) can remove them."""
        self._write(progress={**(self.progress or {}), "created_volumes": list(paths)})

    record_created_volumes.alters_data = True

    def record_source_volumes(self, volumes: list[dict[str, Any]]) -> None:
        """The source volumes being copied, each with the path of its copy on the
        target and its size: what settles the move (this worker or a later one)
        removes from the source once the copy is verified."""
        self._write(source_volumes=volumes)

    record_source_volumes.alters_data = True

    def record_checks(self, checks: list[dict[str, Any]]) -> None:
        self._write(checks=checks)

    record_checks.alters_data = True

    def record_flags(self, flags: Iterable[str]) -> None:
        self._write(flags=list(flags))

    record_flags.alters_data = True

    def record_was_running(self, was_running: bool) -> None:
        self._write(was_running=was_running)

    record_was_running.alters_data = True

    def set_job_id(self, job_id: str) -> None:
        self._write(job_id=job_id)

    set_job_id.alters_data = True

    def heartbeat(self) -> None:
        """Say this migration's worker is alive (see engine.reconcile)."""
        self._write()

    heartbeat.alters_data = True

    def cancel_is_requested(self) -> bool:
        """Whether someone asked to cancel, as the database says now."""
        return Migration.objects.filter(pk=self.pk, cancel_requested=True).exists()

    def as_row(self) -> MigrationRow:
        """What every message about it names."""
        return {
            "id": self.pk,
            "domain": self.domain_name,
            "domain_id": self.domain_id,
            "source": self.source_name,
            "target": self.target_name,
            "mode": self.mode,
            "status": self.status,
            "status_display": self.get_status_display(),
            "phase": self.phase,
            "error": self.error,
            "url": self.get_absolute_url(),
            "waiting_reason": self.waiting_reason(),
        }

    @classmethod
    def slots_taken(cls, role: str, host: Any) -> tuple[int, int]:
        """(migrations holding a slot of ``host`` as their ``role``, "source" or
        "target"; the host's limit for that role). A migration holds its hosts'
        slots from its claim (checking) to its end: engine.claim admits one only
        below the limit, and waiting.py says so to those it did not admit."""
        taken = cls.objects.filter(status__in=[Status.CHECKING, Status.RUNNING], **{role: host}).count()
        return taken, host.max_outgoing if role == "source" else host.max_incoming

    def waiting_reason(self) -> str:
        """Why it has not started yet ("" unless queued): see waiting.py."""
        from .waiting import waiting_reason

        return waiting_reason(self)

    def as_event(self) -> MigrationEvent:
        """The full state as sent to its own page's browsers."""
        from .display import EVENTS_SHOWN, display

        return {
            **self.as_row(),
            "storage": self.storage,
            "policy": self.policy,
            "phase_display": self.get_phase_display(),
            "progress": self.progress,
            "stats": self.stats,
            # The newest only, with each update; the page links to all of them (every one is kept).
            "events": self.events[-EVENTS_SHOWN:],
            "checks": self.checks,
            "error_detail": self.error_detail,
            "cancel_requested": self.cancel_requested,
            **self.timestamps(),
            "display": display(self),
        }

    @property
    def summary_line(self) -> str:
        """How far it is, in a few words (display.summary): the list page's progress column."""
        from .display import summary

        return summary(self)

    def as_line(self) -> MigrationLine:
        """What the dashboard shows of it: one row. The dashboard is told of
        every change of every migration, on every open dashboard: the whole
        record each time (events, checks, chart) cost some 20 KB a socket."""
        from .display import line

        return {
            **self.as_row(),
            "sampled_at": (self.progress or {}).get("sampled_at"),
            "display": line(self),
        }


def stats_summary(stats: dict[str, Any]) -> str:
    """A migration's statistics in a few words, for the audit log."""
    parts = []
    if stats.get("time_ms") is not None:
        parts.append(f"{stats['time_ms'] / 1000:.1f} s")
    if stats.get("downtime_ms") is not None:
        parts.append(f"{stats['downtime_ms']} ms downtime")
    if stats.get("data_transferred") is not None:
        parts.append(f"{size(stats['data_transferred'])} sent")
    return ", ".join(parts) or "done"


def plain_only(state: dict[str, Any]) -> dict[str, Any]:
    """A migration's state (as_event/to_dict, or the API's) as a viewer sees it:
    the plain-words reasons, without libvirt's own text, which can quote files
    and internal details. Operators see everything."""
    return {
        **state,
        "error_detail": "",
        "checks": [{**c, "detail": ""} for c in state.get("checks") or []],
    }


class AuditQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise PermissionError("The audit log is append-only.")

    def delete(self):
        raise PermissionError("The audit log is append-only.")


class AuditAction(models.TextChoices):
    REQUEST = "request", "Requested"
    CHECK = "check", "Pre-flight check"
    START = "start", "Started"
    POLICY = "policy", "Policy decision"
    CANCEL = "cancel", "Cancel requested"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"
    RECONCILED = "reconciled", "Reconciled"
    HOST = "host", "Host changed"
    # Host events by name (the audit log said "Host changed" for all of them).
    REGISTER = "register", "Registered host"
    HOST_KEY = "host_key", "Confirmed host key"
    MAINTENANCE = "maintenance", "Entered maintenance"
    ACTIVATE = "activate", "Left maintenance"
    EVACUATION = "evacuation", "Evacuation ended"
    INVENTORY = "inventory", "Seen outside kvmweb"
    VOLUME = "volume", "Volume removed"
    RULE = "rule", "Placement rule changed"


class AuditEntry(models.Model):
    """One thing that happened, kept for good: who, what, to which objects."""

    at = models.DateTimeField(default=timezone.now, db_index=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    username = models.CharField(max_length=150, blank=True)
    action = models.CharField(max_length=12, choices=AuditAction.choices)
    migration = models.ForeignKey(Migration, null=True, blank=True, on_delete=models.SET_NULL, related_name="audit")
    domain_name = models.CharField(max_length=255, blank=True)
    source_name = models.CharField(max_length=63, blank=True)
    target_name = models.CharField(max_length=63, blank=True)
    outcome = models.CharField(max_length=10, blank=True)
    message = models.TextField()
    data = models.JSONField(default=dict, blank=True)

    objects = AuditQuerySet.as_manager()

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["domain_name", "-at"], name="audit_domain_at")]
        verbose_name_plural = "audit entries"

    def __str__(self):
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.username or 'system'} {self.action}: {self.message}"

    def save(self, *args, **kwargs):
        if self.pk is not None:
            raise PermissionError("The audit log is append-only.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise PermissionError("The audit log is append-only.")

    @classmethod
    def record(
        cls,
        action: str,
        message: str,
        *,
        user: AbstractBaseUser | AnonymousUser | None = None,
        migration: Migration | None = None,
        host: str = "",
        domain: str = "",
        source: str = "",
        target: str = "",
        outcome: str = "",
        at: datetime | None = None,
        **data: Any,
    ) -> AuditEntry:
        """The one writer of the audit log: every app records through it.

        ``user`` is the actor (None, or anonymous: kvmweb itself; for an entry
        about a migration, the user who asked for it). What the entry is about,
        by name, so it is found by ``?domain=`` and ``?host=`` after the objects
        are gone: a ``migration`` (its VM, source and target), or a ``host``
        (maintenance, host keys), or a ``domain`` moved from ``source`` to
        ``target`` without a migration row (a dry run, a move seen outside
        kvmweb). ``outcome`` is a short word (succeeded, fail...); ``at`` when it
        happened, if not now; ``data`` anything else, as JSON (never a secret).
        """
        if host and (source or target or migration is not None):
            raise TypeError("An audit entry is about a host, or about a move from a source to a target: not both.")
        known = user is not None and user.is_authenticated
        entry = cls(
            action=action,
            message=message,
            user=user if known else None,
            username=user.get_username() if known and user is not None else "",
            outcome=outcome,
            domain_name=domain,
            source_name=source or host,
            target_name=target,
            data=data,
        )
        if at is not None:
            entry.at = at
        if migration is not None:
            entry.migration = migration
            entry.domain_name = migration.domain_name
            entry.source_name = migration.source_name
            entry.target_name = migration.target_name
            if user is None and migration.requested_by_id:
                entry.user_id = migration.requested_by_id
                entry.username = migration.requested_by_name
        entry.save()
        return entry
