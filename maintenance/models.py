from collections.abc import Collection, Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from django.dispatch import Signal
from django.urls import reverse
from django.utils import timezone

from core.records import InvalidTransition, TrackedRequest, alters_data
from migrations_app.display import percent_text
from migrations_app.models import AuditAction, Migration

from .planner import Rule


class Kind(models.TextChoices):
    EVACUATE = "evacuate", "Evacuation"
    RETURN = "return", "Return"
    # A balance plan run: moves between online hosts, no host in maintenance
    # (``host`` empty). The cool-down counts the migrations of these.
    BALANCE = "balance", "Balance"


class Status(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


ACTIVE = (Status.QUEUED, Status.RUNNING)
FINISHED = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED)


class Item(models.TextChoices):
    """Where one VM of the plan is."""

    PENDING = "pending", "Waiting for a slot"
    MOVING = "moving", "Moving"
    MOVED = "moved", "Moved"
    FAILED = "failed", "Not moved"
    CANCELLED = "cancelled", "Not moved (cancelled)"


# The lifecycle hook: every change of an evacuation's state is sent here, once,
# by the model (``_announce``), with ``evacuation``, ``audit`` ((action, message)
# or None), ``user`` and ``data`` (the audit entry's). Its receiver
# (events.on_evacuation_changed) records the audit entry and tells the
# evacuation's page, so the model imports no publisher.
evacuation_changed = Signal()


class Evacuation(TrackedRequest):
    """Moving every VM off a host (``evacuate``), or back onto it (``return``),
    or the moves of a balance plan between online hosts (``balance``: no host).

    Each VM moves as an ordinary Migration; this row keeps the plan, which
    migrations carried it out, and how far it got. Only the runner
    (maintenance.runner) writes the plan's items once it has started.
    """

    ACTIVE = ACTIVE

    host = models.ForeignKey("hosts.Host", null=True, on_delete=models.SET_NULL, related_name="evacuations")
    host_name = models.CharField(max_length=63)
    kind = models.CharField(max_length=8, choices=Kind.choices, default=Kind.EVACUATE)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    requested_by_name = models.CharField(max_length=150, blank=True)
    allow_partial = models.BooleanField(default=False)
    bandwidth_mib = models.PositiveIntegerField(
        null=True, blank=True, help_text="MiB/s each move may use; empty for no limit."
    )
    # The planner's moves, each with its progress: state (Item), migrations
    # (ids, one per attempt), tried (target ids) and error.
    plan = models.JSONField(default=list, blank=True)
    unplaced = models.JSONField(default=list, blank=True)
    staying = models.JSONField(default=list, blank=True)
    predicted_seconds = models.PositiveIntegerField(default=0)
    migrations = models.ManyToManyField("migrations_app.Migration", blank=True, related_name="evacuations")
    returns = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, help_text="The evacuation a return undoes."
    )
    cancel_requested = models.BooleanField(default=False)
    error = models.TextField(blank=True)
    # A balance plan's threshold, mean and spread before and after its moves,
    # as the planner saw them when it was asked for (planner.Balance).
    spread = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["host"], condition=Q(status__in=["queued", "running"]), name="one_active_evacuation_per_host"
            ),
            # Two balance plans at once would each move VMs on facts the other changes.
            models.UniqueConstraint(
                fields=["kind"],
                condition=Q(kind="balance", status__in=["queued", "running"]),
                name="one_active_balance",
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.get_kind_display().lower()} of {self.subject}"

    @property
    def subject(self) -> str:
        """What the plan is about, in words: its host, or the cluster for a balance."""
        return self.host_name or "the cluster"

    def get_absolute_url(self) -> str:
        return reverse("evacuation-detail", args=[self.pk])

    @property
    def progress(self) -> dict[str, int]:
        done = sum(1 for item in self.plan if item.get("state") in (Item.MOVED, Item.FAILED, Item.CANCELLED))
        return {
            "done": done,
            "moved": sum(1 for i in self.plan if i.get("state") == Item.MOVED),
            "total": len(self.plan),
        }

    @property
    def left(self) -> list[dict[str, Any]]:
        """The VMs still on the host (or, for a return, not back), each with why."""
        left = [
            {"domain_name": i["domain_name"], "reason": i.get("error") or "It was not moved."}
            for i in self.plan
            if i.get("state") in (Item.FAILED, Item.CANCELLED)
        ]
        return left + list(self.unplaced) + list(self.staying)

    # -- state changes, each a conditional UPDATE naming the state it leaves --

    def _announce(
        self,
        audit: tuple[str, str] | None = None,
        *,
        user: AbstractBaseUser | AnonymousUser | None = None,
        **data: Any,
    ) -> None:
        """The one way a change is told (``evacuation_changed``): ``audit`` is
        (action, message) for the audit log, then its page gets the new state."""
        evacuation_changed.send(sender=Evacuation, evacuation=self, audit=audit, user=user, data=data)

    @alters_data
    def start(self) -> None:
        self._transition([Status.QUEUED], status=Status.RUNNING, started_at=timezone.now())
        self._announce()

    @alters_data
    def finish(self, status: str, error: str = "", audit: tuple[str, str] | None = None, **data: Any) -> None:
        """Ends it; ``audit`` ((action, message)) and ``data`` go into the audit log,
        as of the user who asked for it."""
        self._transition(ACTIVE, status=status, error=error, finished_at=timezone.now())
        self._announce(audit, user=self.requested_by, **data)

    @alters_data
    def request_cancel(self, user: AbstractBaseUser | AnonymousUser) -> None:
        """``user`` asks that no more moves start, and the running ones stop."""
        self._transition(ACTIVE, cancel_requested=True)
        self._announce(
            (
                AuditAction.CANCEL,
                f"{user.get_username()} asked to cancel {self.get_kind_display().lower()} #{self.pk} "
                f"of {self.subject}.",
            ),
            user=user,
        )

    @alters_data
    def save_plan(self) -> None:
        Evacuation.objects.filter(pk=self.pk).update(plan=self.plan, updated_at=timezone.now())

    def as_event(self, migrations: Mapping[int, Migration] | None = None) -> dict[str, Any]:
        """The full state as the API and the live page show it. ``migrations``:
        {id: Migration} of this evacuation, for each VM's progress. The
        ``*_display`` texts are what the page shows, written here."""
        migrations = migrations or {}
        items = []
        for item in self.plan:
            current = migrations.get((item.get("migrations") or [None])[-1])
            items.append(
                {
                    **item,
                    "migration": current.pk if current else None,
                    "migration_status": current.status if current else "",
                    "phase": current.get_phase_display() if current and current.phase else "",
                    "percent": (current.progress or {}).get("percent") if current else None,
                    "percent_display": percent_text(current),
                    "state_display": Item(item.get("state", Item.PENDING)).label,
                }
            )
        return {
            "id": self.pk,
            "kind": self.kind,
            "kind_display": self.get_kind_display(),
            "host": self.host_name,
            "host_id": self.host_id,
            "subject": self.subject,
            "spread": self.spread,
            "status": self.status,
            "status_display": self.get_status_display(),
            "status_colour": self.status_colour,
            "finished": self.status in FINISHED,
            "plan": items,
            "unplaced": self.unplaced,
            "staying": self.staying,
            "left": self.left if self.status in FINISHED else [],
            "migrations": sorted(m for i in self.plan for m in i.get("migrations") or []),
            "progress": self.progress,
            "progress_display": "{done} of {total}".format(**self.progress),
            "predicted_seconds": self.predicted_seconds,
            "allow_partial": self.allow_partial,
            "bandwidth_mib": self.bandwidth_mib,
            "cancel_requested": self.cancel_requested,
            "error": self.error,
            "requested_by": self.requested_by_name,
            **self.timestamps(),
            "url": self.get_absolute_url(),
        }


class RuleKind(models.TextChoices):
    APART = "apart", "Keep apart"
    TOGETHER = "together", "Keep together"
    PINNED = "pinned", "Pin to hosts"


class PlacementRule(models.Model):
    """VMs kept apart (never two of them on one host), kept together (all on
    one host), or pinned to a set of hosts. Every plan obeys the enabled rules
    (maintenance.planner) and a manual migration that would break one fails
    its pre-flight check (``placement_rules``).

    VMs are named by UUID: it stays the same across every move, and a rule
    outlives a VM that is deleted and defined again."""

    name = models.SlugField(max_length=63, unique=True, help_text="Named in every refusal the rule causes.")
    kind = models.CharField(max_length=8, choices=RuleKind.choices)
    vms = models.JSONField(default=list, help_text="UUIDs of the VMs the rule binds.")
    hosts = models.ManyToManyField(
        "hosts.Host", blank=True, related_name="placement_rules", help_text="For a pinned rule: where they may run."
    )
    enabled = models.BooleanField(default=True)
    description = models.TextField(blank=True)
    created_by_name = models.CharField(max_length=150, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.get_kind_display().lower()})"

    def clean(self) -> None:
        # The hosts are checked by the forms and the API, which have the new ones.
        problem = rule_problem(self.kind, self.vms or [])
        if problem:
            raise ValidationError(problem)

    def as_fact(self, host_ids: Iterable[int] | None = None) -> Rule:
        """The rule as the planner takes it. ``host_ids``: its hosts' ids, when fetched already."""
        if host_ids is None:
            host_ids = [h.pk for h in self.hosts.all()]
        return Rule(self.name, self.kind, frozenset(str(u) for u in self.vms), frozenset(host_ids))


def rule_problem(kind: str, vms: Collection[str], hosts: Iterable[object] | None = None) -> str:
    """What is wrong with a rule of this kind, VMs and hosts (None: not known yet), in words; or ""."""
    if kind in (RuleKind.APART, RuleKind.TOGETHER) and len(set(vms)) < 2:
        return "A rule that keeps VMs apart or together needs at least two VMs."
    if kind == RuleKind.PINNED:
        if not vms:
            return "A pinned rule needs at least one VM."
        if hosts is not None and not list(hosts):
            return "A pinned rule needs at least one host the VMs may run on."
    elif hosts is not None and list(hosts):
        return "Only a pinned rule names hosts: leave them out of a rule that keeps VMs apart or together."
    return ""


class HostStep(models.TextChoices):
    """Where one host of a rolling maintenance is."""

    WAITING = "waiting", "Waiting its turn"
    EVACUATING = "evacuating", "Evacuating"
    IN_MAINTENANCE = "maintenance", "In maintenance"
    RETURNING = "returning", "Bringing its VMs back"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"
    STOPPED = "stopped", "Stopped (cancelled)"
    SKIPPED = "skipped", "Not started"


# A host in one of these is in hand: the rolling maintenance waits on it.
HOST_IN_HAND = (HostStep.EVACUATING, HostStep.IN_MAINTENANCE, HostStep.RETURNING)
# A host in one of these is finished with, one way or another.
HOST_SETTLED = (HostStep.DONE, HostStep.FAILED, HostStep.STOPPED, HostStep.SKIPPED)


class RollingMaintenance(TrackedRequest):
    """Hosts put through maintenance one at a time, in the order given: empty
    the host (an ordinary evacuation), wait until an operator marks it done
    (or ``wait_seconds`` pass), bring its VMs back (an ordinary return), then
    the next host. Carried out in steps by maintenance.rolling; this row and
    its hosts' rows are all a step needs to carry on, whichever process runs it.

    It is created running (nothing to queue: its first step starts the first
    evacuation), and one runs at a time: two would empty hosts at once."""

    ACTIVE = (Status.RUNNING,)

    status = models.CharField(max_length=10, choices=Status.choices, default=Status.RUNNING)
    wait_seconds = models.PositiveIntegerField(
        null=True, blank=True, help_text="How long each host stays empty at most; empty: until an operator says."
    )
    bandwidth_mib = models.PositiveIntegerField(
        null=True, blank=True, help_text="MiB/s each move may use; empty for no limit."
    )
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    requested_by_name = models.CharField(max_length=150, blank=True)
    cancel_requested = models.BooleanField(default=False)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["status"], condition=Q(status="running"), name="one_rolling_maintenance_at_a_time"
            ),
        ]

    def __str__(self) -> str:
        return f"rolling maintenance #{self.pk}"

    def get_absolute_url(self) -> str:
        return reverse("rolling-detail", args=[self.pk])

    @property
    def wait_display(self) -> str:
        if self.wait_seconds is None:
            return "until an operator marks it done"
        return f"until an operator marks it done, at most {duration_text(self.wait_seconds)}"

    @alters_data
    def finish(self, status: str, error: str = "") -> None:
        self._transition(self.ACTIVE, status=status, error=error, finished_at=timezone.now())

    @alters_data
    def request_cancel(self) -> None:
        self._transition(self.ACTIVE, cancel_requested=True)


class RollingHost(models.Model):
    """One host of a rolling maintenance, its place in the order, and how far it got."""

    rolling = models.ForeignKey(RollingMaintenance, on_delete=models.CASCADE, related_name="entries")
    position = models.PositiveSmallIntegerField()
    host = models.ForeignKey("hosts.Host", null=True, on_delete=models.SET_NULL, related_name="+")
    host_name = models.CharField(max_length=63)
    state = models.CharField(max_length=12, choices=HostStep.choices, default=HostStep.WAITING)
    evacuation = models.ForeignKey(Evacuation, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    return_evacuation = models.ForeignKey(
        Evacuation, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    empty_since = models.DateTimeField(null=True, blank=True, help_text="When its evacuation ended.")
    done_at = models.DateTimeField(null=True, blank=True, help_text="When an operator marked it done.")
    done_by_name = models.CharField(max_length=150, blank=True)
    # Why it failed, or how it was left when the rolling maintenance stopped.
    note = models.TextField(blank=True)

    class Meta:
        ordering = ["rolling", "position"]
        constraints = [
            models.UniqueConstraint(fields=["rolling", "position"], name="rolling_host_position"),
            models.UniqueConstraint(fields=["rolling", "host_name"], name="rolling_host_once"),
        ]

    def __str__(self) -> str:
        return f"{self.host_name} in {self.rolling}"

    @property
    def deadline(self) -> datetime | None:
        """When its VMs come back without an operator's word; None: only on it."""
        if self.empty_since is None or self.rolling.wait_seconds is None:
            return None
        return self.empty_since + timedelta(seconds=self.rolling.wait_seconds)

    def due(self, now: datetime) -> bool:
        """Whether its VMs should come back now: marked done, or its time is up."""
        deadline = self.deadline
        return self.done_at is not None or (deadline is not None and now >= deadline)

    @alters_data
    def move(self, from_states: Iterable[str], **changes: Any) -> None:
        """Write ``changes`` only if the row is still in one of ``from_states``."""
        rows = RollingHost.objects.filter(pk=self.pk, state__in=list(from_states)).update(**changes)
        if rows != 1:
            self.refresh_from_db()
            raise InvalidTransition(f"{self.host_name} of {self.rolling} is {self.get_state_display().lower()} now.")
        for name, value in changes.items():
            setattr(self, name, value)

    def wait_text(self, now: datetime) -> str:
        """What it waits for, while in maintenance, in words; "" otherwise."""
        if self.state != HostStep.IN_MAINTENANCE:
            return ""
        if self.done_at is not None:
            return f"Marked done by {self.done_by_name or 'an operator'}: its VMs come back next."
        deadline = self.deadline
        if deadline is None:
            return "Waiting for an operator to mark it done."
        left = max(0, int((deadline - now).total_seconds()))
        if left >= 120:  # whole minutes, rounded up: seconds would be stale at once
            left = -(-left // 60) * 60
        return f"Waiting for an operator to mark it done, or {duration_text(left)} more."

    def as_dict(self, now: datetime) -> dict[str, Any]:
        deadline = self.deadline
        return {
            "position": self.position,
            "host": self.host_name,
            "host_id": self.host_id,
            "state": self.state,
            "state_display": self.get_state_display(),
            "evacuation": self.evacuation_id,
            "return": self.return_evacuation_id,
            "empty_since": self.empty_since.isoformat() if self.empty_since else None,
            "deadline": deadline.isoformat() if deadline else None,
            "seconds_left": max(0, int((deadline - now).total_seconds())) if deadline else None,
            "done_at": self.done_at.isoformat() if self.done_at else None,
            "done_by": self.done_by_name,
            "waiting_display": self.wait_text(now),
            "note": self.note,
        }


def duration_text(seconds: int) -> str:
    """``90`` -> "1 min 30 s"; whole hours and minutes as such."""
    hours, rest = divmod(int(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{hours} h" if hours else "", f"{minutes} min" if minutes else "", f"{secs} s" if secs else ""]
    return " ".join(p for p in parts if p) or "0 s"
