"""Rolling maintenance: hosts put through maintenance one at a time.

For each host in the order given: empty it (an ordinary evacuation, the same
plan, moves and checks as the host page's), wait until an operator marks it
done or the rolling maintenance's ``wait_seconds`` pass, bring its VMs back
(an ordinary return), then the next host.

As with evacuations (maintenance.runner), no process runs it from start to
end. Each step (``advance``) reads the stored state once and takes every
transition it allows now: it starts an evacuation or a return, notes one that
ended, notes that the host's wait is over. A step runs:

- when the rolling maintenance is created, marked done or cancelled;
- when one of its evacuations or returns finishes (``models.evacuation_changed``);
- when a host's wait times out (a step queued for that moment);
- from reconcile, every interval, for the rolling maintenance that runs:
  a step lost with a killed worker costs one interval, nothing more.

Starting an evacuation or a return and noting it on the host's row happen in
one transaction, so a step killed at any point leaves either both or neither:
the next step carries on from there. Steps never overlap (the runner's lock).
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from core.records import InvalidTransition
from hosts.models import Host, HostStatus
from migrations_app.models import AuditAction, AuditEntry

from . import runner, services
from .models import (
    ACTIVE,
    HOST_IN_HAND,
    HOST_SETTLED,
    Evacuation,
    HostStep,
    Item,
    Kind,
    RollingHost,
    RollingMaintenance,
    Status,
)

log = logging.getLogger(__name__)

User = AbstractBaseUser | AnonymousUser

# How long a host may be left empty at most, when a timeout is chosen.
MAX_WAIT_SECONDS = 7 * 24 * 3600


class Refused(services.Refused):
    """A request about a rolling maintenance that cannot be accepted (``status``: the HTTP status)."""


# -- asking ----------------------------------------------------------------------


def start(
    user: User, host_ids: list[int], wait_seconds: int | None, bandwidth_mib: int | None = None
) -> RollingMaintenance:
    """Check the hosts and start a rolling maintenance over them, in this order.

    Every problem is a 400 that names the host and what to do."""
    if not host_ids:
        raise Refused("Give at least one host.", status=400)
    if RollingMaintenance.objects.filter(status=Status.RUNNING).exists():
        raise _one_at_a_time()
    repeated = sorted({pk for pk in host_ids if host_ids.count(pk) > 1})
    found = Host.objects.in_bulk(host_ids)
    if repeated:
        names = ", ".join(found[pk].name if pk in found else f"#{pk}" for pk in repeated)
        raise Refused(f"{names} is listed more than once: list each host once, in the order to take them.", 400)
    unknown = [str(pk) for pk in host_ids if pk not in found]
    if unknown:
        raise Refused(
            f"No host with id {', '.join(unknown)}. Take the ids from /api/hosts/.", status=400, unknown=unknown
        )
    hosts = [found[pk] for pk in host_ids]
    for host in hosts:
        if host.status != HostStatus.ONLINE:
            raise Refused(
                f"{host.name} is {host.get_status_display().lower()}: kvmweb could not move its VMs away. "
                "Bring it back online (or sync it), or leave it out.",
                status=400,
            )
        if host.maintenance:
            raise Refused(
                f"{host.name} is in maintenance already: take it out of maintenance first, or leave it out.",
                status=400,
            )
    busy = Evacuation.objects.filter(host__in=hosts, status__in=ACTIVE).first()
    if busy is not None:
        raise Refused(
            f"{busy.host_name} has {busy.get_kind_display().lower()} #{busy.pk} under way: wait for it to end, "
            "or leave the host out.",
            status=400,
        )
    if wait_seconds is not None and not 0 <= wait_seconds <= MAX_WAIT_SECONDS:
        raise Refused(f'wait: give a number of seconds from 0 to {MAX_WAIT_SECONDS}, or "operator".', status=400)
    names = ", ".join(h.name for h in hosts)
    try:
        with transaction.atomic():
            rolling = RollingMaintenance.objects.create(
                wait_seconds=wait_seconds,
                bandwidth_mib=bandwidth_mib,
                requested_by_id=user.pk if user.is_authenticated else None,
                requested_by_name=user.get_username(),
                started_at=timezone.now(),
            )
            RollingHost.objects.bulk_create(
                RollingHost(rolling=rolling, position=i, host=host, host_name=host.name)
                for i, host in enumerate(hosts, 1)
            )
            audit(
                user,
                f"{user.get_username()} started {rolling} of {names}, one host at a time; each stays in "
                f"maintenance {rolling.wait_display}.",
                rolling=rolling.pk,
                hosts=[h.name for h in hosts],
                wait_seconds=wait_seconds,
            )
            transaction.on_commit(lambda: enqueue(rolling.pk))
    except IntegrityError:  # one started between the check and here
        raise _one_at_a_time() from None
    return rolling


def _one_at_a_time() -> Refused:
    running = RollingMaintenance.objects.filter(status=Status.RUNNING).first()
    return Refused(
        f"Rolling maintenance #{running.pk if running else '?'} is under way: one runs at a time. "
        "Wait for it to end, or cancel it.",
        status=400,
        running=running.pk if running else None,
    )


def mark_done(user: User, rolling: RollingMaintenance) -> RollingHost:
    """The operator's word that the host in maintenance is done: its VMs come back."""
    if not rolling.is_active:
        raise Refused(f"{rolling} is {rolling.get_status_display().lower()}: there is nothing to mark done.")
    entry = rolling.entries.filter(state=HostStep.IN_MAINTENANCE, done_at=None).first()
    if entry is None:
        current = rolling.entries.filter(state__in=HOST_IN_HAND).first()
        if current is None:
            raise Refused(f"No host of {rolling} is in maintenance yet: the first one is about to be emptied.")
        if current.state == HostStep.IN_MAINTENANCE:
            raise Refused(f"{current.host_name} was marked done already; its VMs are about to come back.")
        raise Refused(
            f"{current.host_name} is {current.get_state_display().lower()}: mark it done once its VMs have left "
            "and it is in maintenance."
        )
    with transaction.atomic():
        try:
            entry.move([HostStep.IN_MAINTENANCE], done_at=timezone.now(), done_by_name=user.get_username())
        except InvalidTransition as e:
            raise Refused(str(e)) from None
        audit(
            user,
            f"{user.get_username()} marked {entry.host_name} done in {rolling}: its VMs come back.",
            host=entry.host_name,
            rolling=rolling.pk,
        )
        transaction.on_commit(lambda: enqueue(rolling.pk))
    return entry


def cancel(user: User, rolling: RollingMaintenance) -> None:
    """Start nothing more and stop the evacuation or return under way; every
    host stays as it is then, and the page says how."""
    try:
        rolling.request_cancel()
    except InvalidTransition as e:
        raise Refused(str(e)) from None
    audit(user, f"{user.get_username()} asked to cancel {rolling}.", rolling=rolling.pk)
    for entry in rolling.entries.filter(state__in=[HostStep.EVACUATING, HostStep.RETURNING]):
        running = entry.evacuation if entry.state == HostStep.EVACUATING else entry.return_evacuation
        if running is not None and running.is_active and not running.cancel_requested:
            with contextlib.suppress(services.Refused):  # it ended meanwhile
                services.cancel(user, running)
    enqueue(rolling.pk)


def audit(user: User | None, message: str, host: str = "", **data: Any) -> None:
    AuditEntry.record(AuditAction.ROLLING, message, user=user, host=host, **data)


def state(rolling: RollingMaintenance) -> dict[str, Any]:
    """The full state, as the API answers it and the page shows it."""
    now = timezone.now()
    entries = [e.as_dict(now) for e in rolling.entries.all()]
    current = next((e for e in entries if e["state"] in HOST_IN_HAND), None)
    return {
        "id": rolling.pk,
        "status": rolling.status,
        "status_display": rolling.get_status_display(),
        "status_colour": rolling.status_colour,
        "finished": not rolling.is_active,
        "wait": "operator" if rolling.wait_seconds is None else rolling.wait_seconds,
        "wait_display": rolling.wait_display,
        "bandwidth_mib": rolling.bandwidth_mib,
        "hosts": entries,
        "current": current["host"] if current else None,
        "done": sum(1 for e in entries if e["state"] == HostStep.DONE),
        "cancel_requested": rolling.cancel_requested,
        "error": rolling.error,
        "requested_by": rolling.requested_by_name,
        **rolling.timestamps(),
        "url": rolling.get_absolute_url(),
    }


# -- steps -------------------------------------------------------------------------


def enqueue(pk: int, delay: float = 0) -> None:
    runner.queue_step(advance, pk, delay)


def advance(pk: int) -> str:
    """One step of rolling maintenance ``pk``; returns its status afterwards."""
    with runner.step_lock(f"rolling:{pk}") as held:
        if not held:
            enqueue(pk, delay=5)
            return "another step holds it; queued again"
        rolling = RollingMaintenance.objects.select_related("requested_by").filter(pk=pk).first()
        if rolling is None or not rolling.is_active:
            return f"rolling maintenance {pk} is not running; nothing to do"
        return Step(rolling).run()


def advance_all() -> list[int]:
    """Queue a step of the rolling maintenance that runs (reconcile's net). Returns its id, if any."""
    ids = list(RollingMaintenance.objects.filter(status=Status.RUNNING).values_list("pk", flat=True))
    for pk in ids:
        enqueue(pk)
    return ids


def on_evacuation_finished(sender: Any, evacuation: Evacuation, **kwargs: Any) -> None:
    """An evacuation or a return ended: the rolling maintenance it belongs to carries on now.
    (Told of other changes of an evacuation, it does nothing.)"""
    if evacuation.is_active:
        return
    ids = (
        RollingHost.objects.filter(Q(evacuation=evacuation) | Q(return_evacuation=evacuation))
        .filter(rolling__status=Status.RUNNING)
        .values_list("rolling_id", flat=True)
    )
    for pk in set(ids):
        # Never raises into the evacuation's own end: the periodic reconcile
        # (advance_all) is the net for a step that could not be queued now.
        try:
            enqueue(pk)
        except Exception as e:
            log.warning("rolling maintenance %s: could not queue its next step: %s", pk, e)


class Step:
    def __init__(self, rolling: RollingMaintenance) -> None:
        self.rolling = rolling
        self.user: User = rolling.requested_by or AnonymousUser()
        self.cancelling = rolling.cancel_requested

    def run(self) -> str:
        rolling = self.rolling
        try:
            entries = list(rolling.entries.select_related("host", "evacuation", "return_evacuation"))
            for entry in entries:
                # Every transition the stored state allows now, one after another.
                while entry.state not in HOST_SETTLED:
                    before = entry.state
                    self._take(entry)
                    if entry.state == before:
                        return rolling.status  # it waits for something
                if entry.state != HostStep.DONE:
                    break  # it stops at this host
            self._finish(entries)
        except Exception as e:  # a bug must still leave a readable record
            log.exception("rolling maintenance %s: a step crashed", rolling.pk)
            with contextlib.suppress(InvalidTransition):
                self._finish(
                    list(rolling.entries.all()),
                    f"kvmweb failed unexpectedly ({e!r}); the worker's log has the details.",
                )
        return rolling.status

    def _take(self, entry: RollingHost) -> None:
        """The one transition ``entry`` may take now, if any."""
        if entry.state == HostStep.WAITING:
            self._evacuate(entry)
        elif entry.state == HostStep.EVACUATING:
            self._evacuated(entry)
        elif entry.state == HostStep.IN_MAINTENANCE:
            self._bring_back(entry)
        elif entry.state == HostStep.RETURNING:
            self._returned(entry)

    # -- each host's turn ------------------------------------------------------

    def _evacuate(self, entry: RollingHost) -> None:
        if self.cancelling:
            entry.move([HostStep.WAITING], state=HostStep.SKIPPED, note="Not started: the rolling was cancelled.")
            return
        host = Host.objects.filter(pk=entry.host_id).first() if entry.host_id else None
        if host is None:
            self._fail(entry, f"{entry.host_name} was removed from kvmweb.")
            return
        if host.maintenance:
            self._fail(
                entry,
                f"{host.name} was put in maintenance outside this rolling maintenance: its VMs are not this "
                "one's to bring back. Take it out of maintenance and start a new rolling maintenance.",
            )
            return
        try:
            with transaction.atomic():
                evacuation = services.enter_maintenance(self.user, host, bandwidth_mib=self.rolling.bandwidth_mib)
                entry.move([HostStep.WAITING], state=HostStep.EVACUATING, evacuation=evacuation)
        except services.Refused as e:
            self._fail(entry, f"Its evacuation could not start: {e.message}")

    def _evacuated(self, entry: RollingHost) -> None:
        evacuation = entry.evacuation
        if evacuation is None:
            self._fail(entry, "Its evacuation's record was removed.")
        elif evacuation.is_active:
            if self.cancelling and not evacuation.cancel_requested:
                services.cancel(self.user, evacuation)
        elif evacuation.status == Status.SUCCEEDED:
            if self.cancelling:
                self._stop(entry, f"In maintenance, emptied by {evacuation}. {BRING_BACK}")
                return
            entry.move([HostStep.EVACUATING], state=HostStep.IN_MAINTENANCE, empty_since=timezone.now())
            audit(
                None,
                f"{entry.host_name} is empty and in maintenance ({self.rolling}): {entry.wait_text(timezone.now())}",
                host=entry.host_name,
                rolling=self.rolling.pk,
            )
            if self.rolling.wait_seconds is not None:
                # Its time is up then: a step at that moment (reconcile's is the net).
                enqueue(self.rolling.pk, delay=self.rolling.wait_seconds + 1)
        else:
            moved = f"{evacuation.progress['moved']} of {evacuation.progress['total']} VM(s) moved away"
            why = f"{evacuation} {evacuation.get_status_display().lower()} ({moved}): {evacuation.error}".strip()
            if self.cancelling:
                self._stop(entry, f"In maintenance; {why} {BRING_BACK}")
            else:
                self._fail(entry, f"{why} {entry.host_name} stays in maintenance. {BRING_BACK}")

    def _bring_back(self, entry: RollingHost) -> None:
        if self.cancelling:
            self._stop(entry, f"In maintenance, emptied by {entry.evacuation or 'its evacuation'}. {BRING_BACK}")
            return
        host = Host.objects.filter(pk=entry.host_id).first() if entry.host_id else None
        if host is None:
            self._fail(entry, f"{entry.host_name} was removed from kvmweb.")
            return
        if not host.maintenance:
            # Someone took it out of maintenance on its page: follow what they chose.
            back = Evacuation.objects.filter(host=host, kind=Kind.RETURN, returns=entry.evacuation).first()
            if back is not None:
                entry.move([HostStep.IN_MAINTENANCE], state=HostStep.RETURNING, return_evacuation=back)
            else:
                entry.move(
                    [HostStep.IN_MAINTENANCE],
                    state=HostStep.DONE,
                    note="Taken out of maintenance on its page, without bringing its VMs back.",
                )
            return
        if not entry.due(timezone.now()):
            return
        try:
            with transaction.atomic():
                back = services.activate(self.user, host, return_vms=True, bandwidth_mib=self.rolling.bandwidth_mib)
                entry.move([HostStep.IN_MAINTENANCE], state=HostStep.RETURNING, return_evacuation=back)
        except services.Refused as e:
            self._fail(entry, f"Its VMs could not be brought back: {e.message}")

    def _returned(self, entry: RollingHost) -> None:
        back = entry.return_evacuation
        if back is None:
            self._fail(entry, "Its return's record was removed.")
        elif back.is_active:
            if self.cancelling and not back.cancel_requested:
                services.cancel(self.user, back)
        elif back.status == Status.SUCCEEDED:
            entry.move([HostStep.RETURNING], state=HostStep.DONE)
        else:
            left = [i["domain_name"] for i in back.plan if i.get("state") != Item.MOVED]
            why = (
                f"Out of maintenance; {back} {back.get_status_display().lower()}: "
                f"{back.progress['moved']} of {back.progress['total']} VM(s) back"
                + (f", {', '.join(left)} stayed where the evacuation put them." if left else ".")
            )
            if self.cancelling:
                self._stop(entry, why)
            else:
                self._fail(entry, f"{why} {back.error}".strip())

    def _fail(self, entry: RollingHost, why: str) -> None:
        entry.move([entry.state], state=HostStep.FAILED, note=why)

    def _stop(self, entry: RollingHost, how: str) -> None:
        entry.move([entry.state], state=HostStep.STOPPED, note=how)

    # -- the end ---------------------------------------------------------------

    def _finish(self, entries: list[RollingHost], error: str = "") -> None:
        rolling = self.rolling
        failed = next((e for e in entries if e.state == HostStep.FAILED), None)
        stopped_at = failed.host_name if failed else ""
        for entry in entries:
            if entry.state == HostStep.WAITING:
                note = "Not started: the rolling was " + (f"stopped at {stopped_at}." if stopped_at else "cancelled.")
                entry.move([HostStep.WAITING], state=HostStep.SKIPPED, note=note)
        cancelled = RollingMaintenance.objects.filter(pk=rolling.pk, cancel_requested=True).exists()
        if failed is not None and not error:
            error = f"Stopped at {failed.host_name}: {failed.note}"
        status = Status.CANCELLED if cancelled else Status.FAILED if error else Status.SUCCEEDED
        rolling.finish(status, error)
        audit(
            rolling.requested_by,
            f"{str(rolling).capitalize()} {status}: "
            + "; ".join(f"{e.host_name} {e.get_state_display().lower()}" for e in entries)
            + "."
            + (f" {error}" if error else ""),
            rolling=rolling.pk,
            outcome=str(status),
            hosts={e.host_name: e.state for e in entries},
        )


BRING_BACK = "Take it out of maintenance on its page (bringing its VMs back) when it is ready."
