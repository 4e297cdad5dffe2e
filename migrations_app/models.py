from django.conf import settings
from django.db import models, transaction
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone


class Status(models.TextChoices):
    QUEUED = "queued", "Queued"
    CHECKING = "checking", "Checking"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"

    @property
    def colour(self):
        return {
            "queued": "grey",
            "checking": "blue",
            "running": "blue",
            "succeeded": "green",
            "failed": "red",
            "cancelled": "orange",
        }[self.value]


ACTIVE = (Status.QUEUED, Status.CHECKING, Status.RUNNING)
FINISHED = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED)


# The highest bandwidth cap a request may set, in MiB/s: beyond any link
# (~100 GiB/s), and far below what the database column or libvirt overflow at.
MAX_BANDWIDTH_MIB = 100_000


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
    SWITCHING_OVER = "switching_over", "Switching over"
    DEFINING = "defining", "Defining on the target"
    STARTING_ON_TARGET = "starting_on_target", "Starting on the target"
    CLEANING_UP = "cleaning_up", "Cleaning up"
    DONE = "done", "Done"


class InvalidTransition(Exception):
    pass


class Migration(models.Model):
    """One request to move one domain, and everything that happened to it.

    The model owns its state changes: each transition is a conditional UPDATE
    that names the state it expects to leave, so two workers (or a worker and
    a cancel request) can never both move the same migration on.
    """

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
    shutdown_timeout = models.PositiveIntegerField(default=120, help_text="Cold: seconds to wait for a clean shutdown.")
    force_off = models.BooleanField(default=False, help_text="Cold: power the VM off if it does not shut down in time.")
    delete_source_volumes = models.BooleanField(
        default=False, help_text="Cold and copy: delete the source disks once the copy is verified."
    )
    eject_media = models.BooleanField(
        default=False, help_text="Empty CD-ROM and floppy drives whose image the target cannot see."
    )

    # What happened.
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    phase = models.CharField(max_length=24, choices=Phase.choices, default=Phase.NONE, blank=True)
    was_running = models.BooleanField(null=True, blank=True)
    flags = models.JSONField(default=list, blank=True, help_text="libvirt flags used.")
    checks = models.JSONField(default=list, blank=True)
    progress = models.JSONField(default=dict, blank=True)
    stats = models.JSONField(default=dict, blank=True)
    events = models.JSONField(default=list, blank=True, help_text="Policy decisions and steps.")
    error = models.TextField(blank=True)
    error_detail = models.TextField(blank=True)
    error_code = models.CharField(max_length=32, blank=True)
    cancel_requested = models.BooleanField(default=False)
    job_id = models.CharField(max_length=64, blank=True)

    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

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
        return reverse("migration-detail", args=[self.pk])

    @property
    def status_colour(self):
        return Status(self.status).colour

    @property
    def is_active(self):
        return self.status in ACTIVE

    @property
    def duration(self):
        if not self.started_at:
            return None
        return ((self.finished_at or timezone.now()) - self.started_at).total_seconds()

    # -- state changes -------------------------------------------------------

    def _transition(self, allowed_from, **changes):
        """Move to a new state only if still in one of ``allowed_from``."""
        changes["updated_at"] = timezone.now()
        rows = Migration.objects.filter(pk=self.pk, status__in=allowed_from).update(**changes)
        if rows != 1:
            self.refresh_from_db()
            raise InvalidTransition(
                f"Migration #{self.pk} is {self.status}; cannot go to {changes.get('status', '?')}."
            )
        for name, value in changes.items():
            setattr(self, name, value)

    def start_checking(self):
        self._transition([Status.QUEUED], status=Status.CHECKING, phase=Phase.CHECKING)

    def start(self):
        self._transition([Status.CHECKING], status=Status.RUNNING, phase=Phase.PREPARING, started_at=timezone.now())

    def set_phase(self, phase):
        self._transition([Status.RUNNING], phase=phase)

    def succeed(self, stats=None):
        self._transition(
            [Status.RUNNING],
            status=Status.SUCCEEDED,
            phase=Phase.DONE,
            stats=stats or self.stats,
            finished_at=timezone.now(),
        )

    def fail(self, error, detail="", code="", stats=None):
        self._transition(
            ACTIVE,
            status=Status.FAILED,
            error=error,
            error_detail=detail,
            error_code=code,
            stats=stats or self.stats,
            finished_at=timezone.now(),
        )

    def cancel(self, reason=""):
        self._transition(
            ACTIVE,
            status=Status.CANCELLED,
            error=reason,
            finished_at=timezone.now(),
        )

    def request_cancel(self):
        """Ask the worker to stop; a queued migration is cancelled at once."""
        with transaction.atomic():
            if Migration.objects.filter(pk=self.pk, status=Status.QUEUED).update(
                status=Status.CANCELLED,
                cancel_requested=True,
                error="Cancelled before it started.",
                finished_at=timezone.now(),
                updated_at=timezone.now(),
            ):
                self.refresh_from_db()
                return "cancelled"
            rows = Migration.objects.filter(pk=self.pk, status__in=ACTIVE).update(
                cancel_requested=True, updated_at=timezone.now()
            )
        self.refresh_from_db()
        if not rows:
            raise InvalidTransition(f"Migration #{self.pk} has already {self.status}.")
        return "requested"

    def save_progress(self, progress):
        Migration.objects.filter(pk=self.pk).update(progress=progress, updated_at=timezone.now())
        self.progress = progress

    def add_event(self, message, **data):
        """Record a step or a policy decision in the migration's own log."""
        entry = {"at": timezone.now().isoformat(), "message": message, **data}
        self.events = [*self.events, entry]
        Migration.objects.filter(pk=self.pk).update(events=self.events, updated_at=timezone.now())
        return entry

    def as_event(self):
        """The full state as sent to browsers; small enough to send often."""
        return {
            "id": self.pk,
            "domain": self.domain_name,
            "domain_id": self.domain_id,
            "source": self.source_name,
            "target": self.target_name,
            "mode": self.mode,
            "storage": self.storage,
            "policy": self.policy,
            "status": self.status,
            "status_display": self.get_status_display(),
            "phase": self.phase,
            "phase_display": self.get_phase_display(),
            "progress": self.progress,
            "stats": self.stats,
            "events": self.events[-50:],
            "checks": self.checks,
            "error": self.error,
            "error_detail": self.error_detail,
            "cancel_requested": self.cancel_requested,
            "created_at": self.created_at.isoformat() if self.created_at else None,
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "url": self.get_absolute_url(),
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
    INVENTORY = "inventory", "Seen outside kvmweb"


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

    def __str__(self):
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.username or 'system'} {self.action}: {self.message}"

    def save(self, *args, **kwargs):
        if self.pk is not None:
            raise PermissionError("The audit log is append-only.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise PermissionError("The audit log is append-only.")

    @classmethod
    def record(cls, action, message, *, user=None, migration=None, outcome="", domain="", source="", target="", **data):
        """One entry. The VM and host columns come from ``migration``, or for an
        entry without one (a dry run) from ``domain``, ``source`` and ``target``
        (names), so that filtering by VM or host finds every entry."""
        entry = cls(
            action=action,
            message=message,
            user=user if user is not None and user.is_authenticated else None,
            username=user.get_username() if user is not None and user.is_authenticated else "",
            outcome=outcome,
            domain_name=domain,
            source_name=source,
            target_name=target,
            data=data,
        )
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
