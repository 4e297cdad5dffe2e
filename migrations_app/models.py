from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import models, transaction
from django.db.models import Q
from django.dispatch import Signal
from django.utils import timezone

from core.formatting import size
from core.links import row_url
from core.records import InvalidTransition, TrackedRequest, alters_data

from .display import EVENTS_SHOWN, chart_point, display, line, summary
from .prediction import error_ratio

# A migration's statuses, modes and phases are the model's names too (explicitly re-exported):
# the apps read them from here, waiting.py from states.py.
from .states import ACTIVE as ACTIVE
from .states import FINISHED as FINISHED
from .states import Mode as Mode
from .states import Phase as Phase
from .states import Status as Status
from .states import StorageMode as StorageMode
from .tallies import Tally, migration_finished  # noqa: F401  (Tally: a model of this app)
from .waiting import waiting_reason
from .wire import MigrationEvent, MigrationLine, MigrationRow

if TYPE_CHECKING:
    from django.contrib.auth.base_user import AbstractBaseUser
    from django.contrib.auth.models import AnonymousUser


# Sent in the process that ended a migration, once its final state is recorded
# and told (and again for a note added after it): an evacuation's runner
# starts its next move then, rather than at its next look.
migration_ended = Signal()

# The lifecycle hook: every change of a migration's state is sent here, once,
# by the model (``_announce``), with ``migration``, ``audit`` ((action, message)
# or None), ``user``, ``dashboard``, ``counts`` and ``data`` (the audit entry's).
# Its receiver (events.on_migration_changed) records the audit entry and tells
# the browsers, so the model imports no publisher.
migration_changed = Signal()


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
    policy = models.CharField(max_length=32, default="auto")
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
    # What the pre-flight check ``prediction`` expected (measure.py), kept to be
    # compared with what happened (stats: time_ms, downtime_ms, iterations).
    prediction = models.JSONField(
        default=dict,
        blank=True,
        help_text="The prediction before the start: its figures with their sources, the method chosen "
        "(policy Automatic) and why; 'refined': the same after the first pass.",
    )
    predicted_seconds = models.FloatField(null=True, blank=True)
    predicted_downtime_ms = models.PositiveIntegerField(null=True, blank=True)
    predicted_passes = models.PositiveIntegerField(null=True, blank=True)

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

    def __str__(self) -> str:
        return f"#{self.pk} {self.domain_name} {self.source_name} → {self.target_name} ({self.mode})"

    def get_absolute_url(self) -> str:
        return row_url("migration-detail", self.pk)

    @property
    def duration(self) -> float | None:
        if not self.started_at:
            return None
        return ((self.finished_at or timezone.now()) - self.started_at).total_seconds()

    # -- writes ------------------------------------------------------------------
    #
    # The model is the only writer of its row. Each write is an UPDATE of the
    # fields it changes (never a save() of a stale copy), and every change of
    # state is told through ``_announce``, which sends ``migration_changed``: its
    # receiver writes the audit entry, if the change is one an auditor wants,
    # then publishes to the browsers. Every method that writes is marked
    # ``alters_data``, so a template cannot call it.

    @alters_data
    def _write(self, **changes: Any) -> None:
        """Write fields that are not the state (progress, checks, flags...)."""
        changes["updated_at"] = timezone.now()
        Migration.objects.filter(pk=self.pk).update(**changes)
        for name, value in changes.items():
            setattr(self, name, value)

    def _announce(
        self,
        audit: tuple[str, str] | None = None,
        *,
        user: Any = None,
        dashboard: bool = True,
        counts: bool = True,
        **data: Any,
    ) -> None:
        """The one way a change is told (``migration_changed``): ``audit`` is
        (action, message) for the audit log, then every watcher gets the new
        state. ``counts=False``: the change cannot alter the hosts' counts (see
        events.publish_migration)."""
        migration_changed.send(
            sender=Migration, migration=self, audit=audit, user=user, dashboard=dashboard, counts=counts, data=data
        )

    @alters_data
    def start_checking(self) -> None:
        self._transition([Status.QUEUED], status=Status.CHECKING, phase=Phase.CHECKING)
        self._announce()

    @alters_data
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

    @alters_data
    def set_phase(self, phase: str) -> None:
        self._transition([Status.RUNNING], phase=phase)
        self._announce(counts=False)

    @alters_data
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

    @alters_data
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

    @alters_data
    def cancel(self, reason: str = "") -> None:
        self._transition(
            ACTIVE,
            status=Status.CANCELLED,
            error=reason,
            finished_at=timezone.now(),
        )
        migration_finished(self)
        self._announce((AuditAction.CANCELLED, reason), outcome="cancelled")

    @alters_data
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

    @alters_data
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

    @alters_data
    def note(self, message: str, audit_action: str | None = None, **data: Any) -> dict[str, Any]:
        """A step or decision: in the migration's own log, live in the browser,
        and (for decisions, with ``audit_action``) in the audit log."""
        entry = {"at": timezone.now().isoformat(), "message": message, **data}
        self._write(events=[*self.events, entry])
        self._announce(
            (audit_action, message) if audit_action else None, counts=False, **(data if audit_action else {})
        )
        return entry

    @alters_data
    def save_progress(self, progress: dict[str, Any]) -> None:
        """A progress sample, sent to the migration's watchers (not the dashboard),
        and kept for the chart (so a page opened after the end still draws it)."""
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

    @alters_data
    def record_created_volumes(self, paths: Iterable[str]) -> None:
        """The volumes made on the target so far, kept so that whoever settles
        the migration (this worker or a later one) can remove them."""
        self._write(progress={**(self.progress or {}), "created_volumes": list(paths)})

    @alters_data
    def record_source_volumes(self, volumes: list[dict[str, Any]]) -> None:
        """The source volumes being copied, each with the path of its copy on the
        target and its size: what settles the move (this worker or a later one)
        removes from the source once the copy is verified."""
        self._write(source_volumes=volumes)

    @alters_data
    def record_checks(self, checks: list[dict[str, Any]]) -> None:
        self._write(checks=checks)

    @alters_data
    def record_prediction(self, prediction: dict[str, Any]) -> None:
        """The prediction made before the start (measure.check_prediction)."""
        self._write(
            prediction=prediction,
            predicted_seconds=prediction.get("seconds"),
            predicted_downtime_ms=prediction.get("downtime_ms"),
            predicted_passes=prediction.get("passes"),
        )

    @alters_data
    def use_parallel_connections(self, connections: int) -> None:
        """Automatic chose parallel connections for a large guest (checks/prediction.py)."""
        self._write(parallel_connections=connections)

    @alters_data
    def refine_prediction(self, refined: dict[str, Any]) -> None:
        """The prediction made again from the transfer's own figures after its first pass (the governor)."""
        self._write(prediction={**(self.prediction or {}), "refined": refined})

    def prediction_outcome(self) -> dict[str, Any] | None:
        """Predicted against actual (duration, downtime, passes) once it succeeded; None before."""
        stats = self.stats or {}
        if self.status != Status.SUCCEEDED or self.predicted_seconds is None or not stats.get("time_ms"):
            return None
        actual_s = stats["time_ms"] / 1000
        return {
            "seconds": (round(self.predicted_seconds, 1), round(actual_s, 1)),
            "downtime_ms": (self.predicted_downtime_ms, stats.get("downtime_ms")),
            "passes": (self.predicted_passes, stats.get("iterations")),
            "seconds_error": error_ratio(self.predicted_seconds, actual_s),
        }

    @alters_data
    def record_flags(self, flags: Iterable[str]) -> None:
        self._write(flags=list(flags))

    @alters_data
    def record_was_running(self, was_running: bool) -> None:
        self._write(was_running=was_running)

    @alters_data
    def set_job_id(self, job_id: str) -> None:
        self._write(job_id=job_id)

    @alters_data
    def heartbeat(self) -> None:
        """Say this migration's worker is alive (see engine.reconcile)."""
        self._write()

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

    def queued_ahead(self) -> models.QuerySet[Migration]:
        """The queued migrations asked for before this one."""
        return Migration.objects.filter(status=Status.QUEUED).filter(
            Q(created_at__lt=self.created_at) | Q(created_at=self.created_at, pk__lt=self.pk)
        )

    def waiting_reason(self) -> str:
        """Why it has not started yet ("" unless queued): see waiting.py."""
        return waiting_reason(self)

    def as_event(self) -> MigrationEvent:
        """The full state as sent to its own page's browsers."""
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
            **self.timestamps(),  # type: ignore[typeddict-item]  # not sent_at: set when published
            "display": display(self),
        }

    @property
    def summary_line(self) -> str:
        """How far it is, in a few words (display.summary): the list page's progress column."""
        return summary(self)

    def as_line(self) -> MigrationLine:
        """What the dashboard shows of it: one row. The dashboard is told of
        every change of every migration, on every open dashboard: the whole
        record each time (events, checks, chart) cost some 20 KB a socket."""
        return {
            **self.as_row(),  # type: ignore[typeddict-item]  # not sent_at: set when published
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


def plain_only(state: Mapping[str, Any]) -> dict[str, Any]:
    """A migration's state (as_event/to_dict, or the API's) as a viewer sees it:
    the plain-words reasons, without libvirt's own text, which can quote files
    and internal details. Operators see everything."""
    return {
        **state,
        "error_detail": "",
        "checks": [{**c, "detail": ""} for c in state.get("checks") or []],
    }


class AuditQuerySet(models.QuerySet["AuditEntry"]):
    def update(self, **kwargs: Any) -> int:
        raise PermissionError("The audit log is append-only.")

    def delete(self) -> tuple[int, dict[str, int]]:
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
    BALANCE = "balance", "Balance started"
    ROLLING = "rolling", "Rolling maintenance"


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

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.username or 'system'} {self.action}: {self.message}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:  # a row read from the table, not a new one
            raise PermissionError("The audit log is append-only.")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
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
            user_id=user.pk if known and user is not None else None,
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
