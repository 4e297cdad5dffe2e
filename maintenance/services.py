"""Maintenance mode, evacuations and returns: the one path the API and the pages go through."""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser
from django.db import IntegrityError, transaction
from django.dispatch import Signal
from django.utils import timezone

from hosts.models import Domain, Host, HostStatus
from kvmweb.records import InvalidTransition
from migrations_app import events as migration_events
from migrations_app import services as migration_services
from migrations_app.models import ACTIVE as MIGRATION_ACTIVE
from migrations_app.models import FINISHED as MIGRATION_FINISHED
from migrations_app.models import AuditAction, AuditEntry
from migrations_app.models import Status as MigrationStatus

from . import facts
from .models import ACTIVE, Evacuation, Item, Kind, Status

log = logging.getLogger(__name__)

# Sent (sender: Evacuation, evacuation=...) once an evacuation or a return has
# finished, whichever way: a rolling maintenance takes its next step then.
evacuation_finished = Signal()


def finished(evacuation: Evacuation) -> None:
    """Tell who waits for ``evacuation`` that it is over. Never raises: the
    periodic reconcile is the net for a receiver that failed."""
    for receiver, result in evacuation_finished.send_robust(sender=Evacuation, evacuation=evacuation):
        if isinstance(result, Exception):
            log.warning("evacuation %s: %r failed: %s", evacuation.pk, receiver, result)


class Refused(Exception):
    """A request that cannot be accepted; ``status`` is the HTTP status, ``extra`` more of the answer."""

    def __init__(self, message: str, status: int = 409, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.extra = extra


def audit(user, host_name, message, outcome="", action=AuditAction.HOST, **data):
    """A maintenance decision in the audit log, found under the host's name."""
    AuditEntry.record(action, message, user=user, host=host_name, outcome=outcome, **data)


def dry_run(host):
    """The plan for evacuating ``host`` now; changes nothing."""
    return facts.plan_evacuation(host).as_dict()


def enter_maintenance(
    user: AbstractBaseUser | AnonymousUser, host: Host, allow_partial: bool = False, bandwidth_mib: int | None = None
) -> Evacuation:
    """Put ``host`` in maintenance and start moving its VMs away; returns the Evacuation."""
    if host.status != HostStatus.ONLINE:
        raise Refused(
            f"{host.name} is {host.get_status_display().lower()}: kvmweb cannot move its VMs away. "
            "Bring it back online (or sync it) first."
        )
    plan = facts.plan_evacuation(host)
    if plan.unplaced and not allow_partial:
        names = ", ".join(u["domain_name"] for u in plan.unplaced)
        raise Refused(
            f"{len(plan.unplaced)} running VM(s) fit on no other host ({names}): they would stay on "
            f"{host.name}. Accept a partial evacuation (allow_partial) or make room first.",
            unplaced=plan.unplaced,
        )
    try:
        with transaction.atomic():
            Host.objects.filter(pk=host.pk).update(maintenance=True, maintenance_since=timezone.now())
            evacuation = Evacuation.objects.create(
                host=host,
                host_name=host.name,
                kind=Kind.EVACUATE,
                requested_by=user if user.is_authenticated else None,
                requested_by_name=user.get_username(),
                allow_partial=allow_partial,
                bandwidth_mib=bandwidth_mib,
                plan=[_item(move) for move in plan.moves],
                unplaced=plan.unplaced,
                staying=plan.staying,
                predicted_seconds=plan.predicted_seconds,
            )
            audit(
                user,
                host.name,
                f"{user.get_username()} put {host.name} into maintenance; evacuation #{evacuation.pk} moves "
                f"{len(plan.moves)} VM(s) away"
                + (f", {len(plan.unplaced)} fit nowhere and stay" if plan.unplaced else "")
                + ".",
                action=AuditAction.MAINTENANCE,
                maintenance=True,
                evacuation=evacuation.pk,
                plan=plan.moves,
                unplaced=plan.unplaced,
            )
            transaction.on_commit(lambda: enqueue(evacuation))
    except IntegrityError:
        running = Evacuation.objects.filter(host=host, status__in=ACTIVE).first()
        raise Refused(
            f"{host.name} already has an evacuation under way (#{running.pk if running else '?'}). "
            "Wait for it to finish or cancel it."
        ) from None
    host.maintenance = True
    migration_events.publish_dashboard("inventory", {"hosts": [host.name]})
    return evacuation


def activate(
    user: AbstractBaseUser | AnonymousUser, host: Host, return_vms: bool = False, bandwidth_mib: int | None = None
) -> Evacuation | None:
    """End maintenance; with ``return_vms``, start bringing back what the last evacuation moved
    (each move at most ``bandwidth_mib`` MiB/s, if given)."""
    if not host.maintenance:
        raise Refused(f"{host.name} is not in maintenance.")
    running = Evacuation.objects.filter(host=host, status__in=ACTIVE).first()
    if running is not None:
        raise Refused(
            f"Evacuation #{running.pk} of {host.name} is still under way. Wait for it to finish or cancel it first."
        )
    evacuation = None
    with transaction.atomic():
        Host.objects.filter(pk=host.pk).update(maintenance=False, maintenance_since=None)
        host.maintenance = False
        if return_vms:
            evacuation = _return(user, host, bandwidth_mib)
        audit(
            user,
            host.name,
            f"{user.get_username()} took {host.name} out of maintenance"
            + (f"; return #{evacuation.pk} brings back {len(evacuation.plan)} VM(s)." if evacuation else "."),
            action=AuditAction.ACTIVATE,
            maintenance=False,
            evacuation=evacuation.pk if evacuation else None,
        )
        if evacuation is not None:
            transaction.on_commit(lambda: enqueue(evacuation))
    migration_events.publish_dashboard("inventory", {"hosts": [host.name]})
    return evacuation


def _return(user, host, bandwidth_mib=None):
    last = Evacuation.objects.filter(host=host, kind=Kind.EVACUATE).first()
    # Only the VMs still where the evacuation put them. By UUID: a VM's row
    # may have been made anew while it moved.
    placed = {
        item["domain_uuid"]: item["target"] for item in (last.plan if last else []) if item["state"] == Item.MOVED
    }
    domains = [d for d in Domain.objects.filter(uuid__in=placed) if d.host_id == placed[str(d.uuid)]]
    plan = facts.plan_return(domains, host)
    return Evacuation.objects.create(
        host=host,
        host_name=host.name,
        kind=Kind.RETURN,
        returns=last,
        requested_by=user if user.is_authenticated else None,
        requested_by_name=user.get_username(),
        allow_partial=True,
        bandwidth_mib=bandwidth_mib,
        plan=[_item(move) for move in plan.moves],
        unplaced=plan.unplaced,
        staying=plan.staying,
        predicted_seconds=plan.predicted_seconds,
    )


def _item(move):
    return {**move, "state": Item.PENDING, "migrations": [], "tried": [move["target"]], "error": ""}


def enqueue(evacuation):
    """Its first step: it asks for every move at once (see runner.py)."""
    from .runner import enqueue as enqueue_step

    enqueue_step(evacuation.pk)


def cancel(user: AbstractBaseUser | AnonymousUser, evacuation: Evacuation) -> None:
    """Start no more moves; ask the running ones to stop (each VM stays where it is).

    The evacuation's next step (queued here, and again as each move's job
    ends) marks what had not started as cancelled and finishes it once the
    moves under way have stopped."""
    try:
        evacuation.request_cancel()
    except InvalidTransition as e:
        raise Refused(str(e)) from None
    if evacuation.status == Status.QUEUED:
        # No step has run: nothing was asked for, and it ends here and now.
        for item in evacuation.plan:
            item.update(state=Item.CANCELLED, error=item["error"] or "The evacuation was cancelled before it moved.")
        evacuation.save_plan()
        with contextlib.suppress(InvalidTransition):
            evacuation.finish(Status.CANCELLED, "Cancelled before it started.")
            finished(evacuation)
    audit(
        user,
        evacuation.host_name,
        f"{user.get_username()} asked to cancel {evacuation.get_kind_display().lower()} #{evacuation.pk} "
        f"of {evacuation.host_name}.",
        action=AuditAction.CANCEL,
        evacuation=evacuation.pk,
    )
    for migration in evacuation.migrations.filter(status__in=MIGRATION_ACTIVE):
        try:
            migration_services.cancel(user, migration)
        except migration_services.MigrationRefused:
            pass  # it finished meanwhile
    if evacuation.is_active:
        enqueue(evacuation)
    publish(evacuation)


def group(pk):
    return f"evacuation-{pk}"


def state(evacuation):
    migrations = {m.pk: m for m in evacuation.migrations.all()}
    return evacuation.as_event(migrations)


# How often, at most, a move's progress is passed on to its evacuation's page
# (per move and process): each time sends the whole plan. Checked before the
# database is asked which evacuation the move belongs to: every migration's
# progress samples come here, twice a second each, most of them no evacuation's.
PROGRESS_EVERY_SECONDS = 1.0
_progress_sent: dict[int, float] = {}


def on_migration_published(sender, migration, **kwargs):
    """A move's news, passed on to its evacuation's page: its state at once,
    its progress at most once a PROGRESS_EVERY_SECONDS."""
    if migration.status == MigrationStatus.RUNNING:  # a progress sample, or a phase or note while it runs
        now = time.monotonic()
        if now - _progress_sent.get(migration.pk, 0.0) < PROGRESS_EVERY_SECONDS:
            return
        _progress_sent[migration.pk] = now
    elif migration.status in MIGRATION_FINISHED:
        _progress_sent.pop(migration.pk, None)
    for evacuation in Evacuation.objects.filter(migrations=migration.pk, status__in=ACTIVE):
        publish(evacuation)


def publish(evacuation, unless=None):
    """Send the evacuation's full state to its page, unless it is ``unless`` (what
    was sent last); returns the state. Never raises."""
    current = state(evacuation)
    layer = get_channel_layer()
    if layer is None or current == unless:
        return current
    try:
        async_to_sync(layer.group_send)(group(evacuation.pk), {"type": "evacuation.update", "evacuation": current})
    except Exception as e:
        log.warning("could not publish evacuation %s: %s", evacuation.pk, e)
    return current
