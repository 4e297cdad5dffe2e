"""Maintenance mode, evacuations, returns and balance runs: the one path the API and the pages go through."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections.abc import Sequence
from typing import Any, cast

from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser, User
from django.db import IntegrityError, transaction
from django.utils import timezone

from core.records import InvalidTransition
from hosts.models import Domain, Host, HostStatus
from hosts.signals import hosts_changed
from migrations_app import services as migration_services
from migrations_app.models import ACTIVE as MIGRATION_ACTIVE
from migrations_app.models import AuditAction, AuditEntry

from . import facts, planner
from .models import ACTIVE, Evacuation, Item, Kind, Status
from .runner import enqueue as enqueue_step

log = logging.getLogger(__name__)


class Refused(Exception):
    """A request that cannot be accepted; ``status`` is the HTTP status, ``extra`` more of the answer."""

    def __init__(self, message: str, status: int = 409, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.extra = extra


def audit(
    user: AbstractBaseUser | AnonymousUser,
    host_name: str,
    message: str,
    outcome: str = "",
    action: str = AuditAction.HOST,
    **data: Any,
) -> None:
    """A maintenance decision in the audit log, found under the host's name."""
    AuditEntry.record(action, message, user=user, host=host_name, outcome=outcome, **data)


def _requester(user: AbstractBaseUser | AnonymousUser) -> User | None:
    """The user an evacuation records as its requester: an authenticated one is
    the project's user model (the cast says so to mypy, which types
    ``request.user`` as the abstract base)."""
    return cast(User, user) if user.is_authenticated else None


def dry_run(host: Host) -> planner.PlanDict:
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
                requested_by=_requester(user),
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
    hosts_changed([host.name])
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
    hosts_changed([host.name])
    return evacuation


def _return(user: AbstractBaseUser | AnonymousUser, host: Host, bandwidth_mib: int | None = None) -> Evacuation:
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
        requested_by=_requester(user),
        requested_by_name=user.get_username(),
        allow_partial=True,
        bandwidth_mib=bandwidth_mib,
        plan=[_item(move) for move in plan.moves],
        unplaced=plan.unplaced,
        staying=plan.staying,
        predicted_seconds=plan.predicted_seconds,
    )


def balance_digest(moves: Sequence[planner.Move]) -> str:
    """A short fingerprint of a balance plan's moves (which VM goes where): the
    page's confirmation carries it, so that what runs is what the operator saw."""
    pairs = sorted((m["domain_uuid"], m["source"], m["target"]) for m in moves)
    return hashlib.sha256(json.dumps(pairs).encode()).hexdigest()[:16]


def start_balance(user: Any, digest: str | None = None) -> Evacuation:
    """Plan the balance now and run its moves as ordinary migrations, through the
    same runner as evacuations (an Evacuation of kind ``balance``, no host).

    ``digest``: the balance_digest of the plan the operator confirmed; a plan
    that changed since is refused (Refused.extra has the new one)."""
    under_way = Evacuation.objects.filter(status__in=ACTIVE).order_by("pk").first()
    if under_way is not None:
        raise Refused(_busy(under_way))
    plan = facts.plan_balance()
    found = plan.as_dict()
    if not plan.moves:
        why = (
            "every online host is within the threshold already"
            if plan.balanced
            else "no allowed move brings a host closer (rules, capacity or the cool-down keep them where they are)"
        )
        raise Refused(f"Nothing to run: {why}. Nothing was moved.", **found)
    if digest is not None and digest != balance_digest(plan.moves):
        raise Refused(
            "The plan changed since it was shown (a VM or a host changed meanwhile): look at the new plan "
            "and confirm it again. Nothing was moved.",
            **found,
        )
    try:
        with transaction.atomic():
            evacuation = Evacuation.objects.create(
                host=None,
                host_name="",
                kind=Kind.BALANCE,
                requested_by=_requester(user),
                requested_by_name=user.get_username(),
                # A move refused is not planned elsewhere: the rest still help.
                allow_partial=True,
                plan=[_item(move) for move in plan.moves],
                predicted_seconds=plan.predicted_seconds,
                spread={k: found[k] for k in ("threshold", "mean", "before", "after", "balanced", "cooling_down")},
            )
            names = ", ".join(f"{m['domain_name']} ({m['source_name']} to {m['target_name']})" for m in plan.moves)
            audit(
                user,
                "",
                f"{user.get_username()} started balance #{evacuation.pk} of the cluster: {len(plan.moves)} "
                f"move(s), {names}.",
                action=AuditAction.BALANCE,
                evacuation=evacuation.pk,
                plan=[
                    {k: m[k] for k in ("domain_name", "domain_uuid", "source_name", "target_name", "predicted_seconds")}
                    for m in plan.moves
                ],
                threshold=plan.threshold,
            )
            transaction.on_commit(lambda: enqueue(evacuation))
    except IntegrityError:
        running = Evacuation.objects.filter(kind=Kind.BALANCE, status__in=ACTIVE).first()
        raise Refused(_busy(running)) from None
    return evacuation


def _busy(running: Evacuation | None) -> str:
    if running is None:  # it ended between the refusal and this look
        return "Another balance was starting at the same moment. Look at the plan again and confirm it."
    if running.kind == Kind.BALANCE:
        return (
            f"Balance #{running.pk} is under way: only one balance runs at a time. Wait for it to finish "
            "(or cancel it on its page), then plan again."
        )
    return (
        f"{running.get_kind_display()} #{running.pk} of {running.subject} is under way: a balance planned now "
        "would move VMs on facts it is changing. Wait for it to finish, then plan again."
    )


def _item(move: planner.Move) -> dict[str, Any]:
    return {**move, "state": Item.PENDING, "migrations": [], "tried": [move["target"]], "error": ""}


def enqueue(evacuation: Evacuation) -> None:
    """Its first step: it asks for every move at once (see runner.py)."""
    enqueue_step(evacuation.pk)


def cancel(user: AbstractBaseUser | AnonymousUser, evacuation: Evacuation) -> None:
    """Start no more moves; ask the running ones to stop (each VM stays where it is).

    The evacuation's next step (queued here, and again as each move's job
    ends) marks what had not started as cancelled and finishes it once the
    moves under way have stopped."""
    try:
        evacuation.request_cancel(user)
    except InvalidTransition as e:
        raise Refused(str(e)) from None
    if evacuation.status == Status.QUEUED:
        # No step has run: nothing was asked for, and it ends here and now.
        for item in evacuation.plan:
            item.update(state=Item.CANCELLED, error=item["error"] or "The evacuation was cancelled before it moved.")
        evacuation.save_plan()
        with contextlib.suppress(InvalidTransition):
            evacuation.finish(Status.CANCELLED, "Cancelled before it started.")
    for migration in evacuation.migrations.filter(status__in=MIGRATION_ACTIVE):
        try:
            migration_services.cancel(user, migration)
        except migration_services.MigrationRefused:
            pass  # it finished meanwhile
    if evacuation.is_active:
        enqueue(evacuation)
