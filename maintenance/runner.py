"""Evacuations, returns and balance runs: a plan of ordinary migrations, carried out in steps.

No process runs an evacuation from its start to its end. Each step
(``advance``) is a short job that reads the plan once: it counts the moves
that ended, plans a refused one again elsewhere (once, on fresh facts), asks
for each move not yet asked for as an ordinary migration (the same request,
checks, claim, slots, policy, audit and reconcile as any other), and finishes
the evacuation when nothing is left to wait for. A step runs:

- when the evacuation is created (``enqueue``) or cancelled;
- when the job of one of its migrations is over (``migration_job_done``:
  the move's record is final and its hosts' inventory read again);
- from reconcile, every interval, for every active evacuation: a step lost
  with a killed worker, or a wake lost with Redis, costs one interval.

Steps of one evacuation never overlap (a Redis lock per evacuation). Nothing
here counts slots: every move is queued at once and waits for its hosts'
slots in ``engine.claim``, as any migration does; the worker pool runs as
many side by side as the hosts' limits and its slots allow.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import django_rq
from django.contrib.auth.models import AnonymousUser

from hosts.models import Domain, Host
from hosts.sync import sync_hosts
from migrations_app import services as migration_services
from migrations_app.models import ACTIVE as MIGRATION_ACTIVE
from migrations_app.models import AuditAction, Migration
from migrations_app.models import Status as MigrationStatus
from migrations_app.request import MigrationRequest

from . import events, facts, planner, rules
from .models import ACTIVE, FINISHED, Evacuation, Item, Kind, Status

log = logging.getLogger(__name__)

ATTEMPTS = 2  # the planned target, then once on another
# A step that cannot take its evacuation's lock within this long (another step
# holds it: finishing reads every touched host again) is queued again.
LOCK_WAIT_SECONDS = 30
# A step killed while holding its lock frees it after this; a live one keeps
# it as long as it runs by renewing it every LOCK_RENEW_SECONDS. (With a
# fixed 300 s lock, a step killed mid-way stood its evacuation, and a rolling
# maintenance waiting for it, still for five minutes.)
LOCK_SECONDS = 20
LOCK_RENEW_SECONDS = 5


def step_id(pk: int) -> str:
    return f"evacuation-{pk}-step"


def queue_step(job: Callable[[int], str], pk: int, delay: float = 0) -> None:
    """Queue ``job(pk)``, a step of something carried out in steps, on the short-job queue."""
    queue = django_rq.get_queue("default")
    if delay:
        queue.enqueue_in(timedelta(seconds=delay), job, pk, result_ttl=600)
    else:
        queue.enqueue(job, pk, result_ttl=600)


def enqueue(pk: int, delay: float = 0) -> None:
    """Queue a step of evacuation ``pk`` on the short-job queue."""
    queue_step(advance, pk, delay)


@contextmanager
def step_lock(name: str) -> Iterator[bool]:
    """Hold the lock of ``name``'s steps (``evacuation:7``) while the block runs,
    so that two steps of one thing never overlap. Yields False, holding
    nothing, when another step kept it for LOCK_WAIT_SECONDS: queue the step
    again then."""
    connection = django_rq.get_connection("default")
    # Not thread-local: the thread that renews it must know its token.
    lock = connection.lock(f"kvmweb:{name}:step", timeout=LOCK_SECONDS, thread_local=False)
    if not lock.acquire(blocking_timeout=LOCK_WAIT_SECONDS):
        yield False
        return
    over = threading.Event()

    def keep() -> None:
        while not over.wait(LOCK_RENEW_SECONDS):
            try:
                lock.reacquire()
            except Exception:  # lost (Redis restarted): the step runs on, as before a lock existed
                log.warning("%s: could not renew the step's lock", name, exc_info=True)
                return

    keeper = threading.Thread(target=keep, name=f"lock {name}", daemon=True)
    keeper.start()
    try:
        yield True
    finally:
        over.set()
        keeper.join()
        try:
            lock.release()
        except Exception:  # expired: another step may hold it now
            log.warning("%s: the step's lock had expired", name)


def advance(pk: int) -> str:
    """One step of evacuation ``pk``; returns its status afterwards."""
    with step_lock(f"evacuation:{pk}") as held:
        if not held:
            enqueue(pk, delay=5)
            return "another step holds it; queued again"
        evacuation = Evacuation.objects.select_related("requested_by").filter(pk=pk).first()
        if evacuation is None or evacuation.status in FINISHED:
            return f"evacuation {pk} is not active; nothing to do"
        return Step(evacuation).run()


# The name the job had when one job ran a whole evacuation: queued ones still say it.
run_evacuation = advance


def advance_all() -> list[int]:
    """Queue a step of every active evacuation (reconcile's net). Returns their ids."""
    ids = list(Evacuation.objects.filter(status__in=ACTIVE).values_list("pk", flat=True))
    for pk in ids:
        enqueue(pk)
    return ids


def on_migration_job_done(sender: Any, migration: Migration, **kwargs: Any) -> None:
    """A move's job is over: its evacuation takes its next step now."""
    for pk in Evacuation.objects.filter(migrations=migration, status__in=ACTIVE).values_list("pk", flat=True):
        enqueue(pk)


class Step:
    def __init__(self, evacuation: Evacuation) -> None:
        self.evacuation = evacuation
        self.user = evacuation.requested_by or AnonymousUser()

    @property
    def plan(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.evacuation.plan  # a JSONField: Any to mypy
        return items

    def run(self) -> str:
        evacuation = self.evacuation
        try:
            if evacuation.status == Status.QUEUED:
                evacuation.start()
            cancelling = evacuation.cancel_requested
            self._collect(cancelling)
            if cancelling:
                for item in self.plan:
                    if item["state"] == Item.PENDING:
                        item.update(state=Item.CANCELLED, error="The evacuation was cancelled before it moved.")
            else:
                self._start_pending()
            evacuation.save_plan()
            if not any(i["state"] in (Item.PENDING, Item.MOVING) for i in self.plan):
                self._finish()
            else:
                events.publish(evacuation)
        except Exception as e:  # a bug must still leave a readable record
            log.exception("evacuation %s: a step crashed", evacuation.pk)
            self._finish(f"kvmweb failed unexpectedly ({e!r}); the worker's log has the details.")
        return evacuation.status

    # -- moves that ended ------------------------------------------------------

    def _collect(self, cancelling: bool) -> None:
        moving = [i for i in self.plan if i["state"] == Item.MOVING]
        found = Migration.objects.in_bulk([i["migrations"][-1] for i in moving])
        for item in moving:
            migration = found.get(item["migrations"][-1])
            if migration is None:
                self._failed(item, "Its migration record was removed.", cancelling)
            elif migration.status in MIGRATION_ACTIVE:
                continue
            elif migration.status == MigrationStatus.SUCCEEDED:
                item["state"] = Item.MOVED  # any error kept: why it went elsewhere
            elif migration.status == MigrationStatus.CANCELLED:
                item.update(state=Item.CANCELLED, error=f"Cancelled; it stayed on {migration.source_name}.")
            else:
                self._failed(item, migration.error or "The migration did not finish.", cancelling)

    def _failed(self, item: dict[str, Any], error: str, cancelling: bool = False) -> None:
        """Try once more on another host, or give up on this VM with the reasons."""
        said = f"{item['target_name']} refused it: {error}"
        if cancelling or len(item["tried"]) >= ATTEMPTS:
            item.update(state=Item.FAILED, error=f"{item['error']} {said}".strip())
            return
        if self.evacuation.kind == Kind.BALANCE:
            # Another target would weigh on a host the plan did not count on: the
            # moves that went still help, and the next plan weighs this VM again.
            item.update(state=Item.FAILED, error=f"{said} It stays where it was; plan the balance again.")
            return
        other = self._elsewhere(item)
        if isinstance(other, str):
            item.update(state=Item.FAILED, error=f"{said} No other host fits: {other}")
            return
        item.update(
            # Each key by name (not a loop over the names): mypy reads a TypedDict's keys only as literals.
            target=other["target"],
            target_name=other["target_name"],
            mode=other["mode"],
            storage=other["storage"],
            target_pool=other["target_pool"],
            predicted_seconds=other["predicted_seconds"],
            replace_own_leftovers=other.get("replace_own_leftovers", False),
            state=Item.PENDING,
            error=said,
            why=f"Tried again on {other['target_name']}: {other['why']}",
        )
        item["tried"].append(other["target"])

    def _elsewhere(self, item: dict[str, Any]) -> planner.Move | str:
        domain = Domain.objects.filter(uuid=item["domain_uuid"]).first()
        if domain is None:
            return f"{item['domain_name']} is no longer in the inventory."
        hosts = facts.hosts()
        exclude = set(item["tried"])
        if self.evacuation.kind == Kind.RETURN:
            exclude |= {pk for pk in hosts if pk != self.evacuation.host_id}
            if exclude >= set(hosts):
                return f"its home, {self.evacuation.host_name}, was tried already."
        placement = rules.enabled()
        result = planner.plan(
            [facts.guest(domain)],
            hosts.values(),
            exclude=exclude,
            speed_bps=facts.speed_bps(),
            replace_own_leftovers=self.evacuation.kind == Kind.RETURN,
            rules=placement,
            where=rules.where(placement),
        )
        if result.moves:
            return result.moves[0]
        return (result.unplaced or result.staying)[0]["reason"]

    # -- moves to ask for ------------------------------------------------------

    def _start_pending(self) -> None:
        hosts = {h.pk: h for h in Host.objects.all()}
        for item in self.plan:
            if item["state"] == Item.PENDING:
                self._start(item, hosts)
                # Saved at once: a step killed after asking for a move must not
                # leave the next step unaware that it was asked for.
                self.evacuation.save_plan()

    def _start(self, item: dict[str, Any], hosts: dict[int, Host]) -> None:
        target = hosts.get(item["target"])
        if target is None or item["source"] not in hosts:
            item.update(state=Item.FAILED, error="A host of this move was removed from kvmweb.")
            return
        domain = Domain.objects.select_related("host").filter(uuid=item["domain_uuid"]).first()
        if domain is None:
            item.update(state=Item.FAILED, error=f"{item['domain_name']} is no longer in the inventory.")
            return
        if domain.host_id == target.pk:
            item.update(state=Item.MOVED)
            return
        if self.evacuation.kind == Kind.BALANCE and domain.host_id != item["source"]:
            # Moved by hand since the plan: from where it is now, the planned
            # move would not take from the host the plan weighed.
            item.update(
                state=Item.FAILED,
                error=f"It moved to {domain.host.name} after the plan was made; balancing left it there.",
            )
            return
        req = MigrationRequest(
            domain=domain,
            target=target,
            mode=item["mode"],
            storage=item["storage"],
            target_pool=item["target_pool"],
            bandwidth_mib=self.evacuation.bandwidth_mib,
            replace_own_leftovers=item.get("replace_own_leftovers", False),
        )
        try:
            migration = migration_services.request_migration(self.user, req)
        except migration_services.MigrationRefused as e:
            # Asked for already by a step that died before it could say so?
            earlier = Migration.objects.filter(
                domain_uuid=domain.uuid, target=target, status__in=MIGRATION_ACTIVE
            ).first()
            if earlier is None:
                self._failed(item, e.message)
                return
            migration = earlier
        self.evacuation.migrations.add(migration)
        item["migrations"].append(migration.pk)
        item["state"] = Item.MOVING

    # -- the end ---------------------------------------------------------------

    def _finish(self, error: str = "") -> None:
        evacuation = self.evacuation
        cancelled = Evacuation.objects.filter(pk=evacuation.pk, cancel_requested=True).exists()
        not_moved = [i for i in self.plan if i["state"] != Item.MOVED]
        status = Status.CANCELLED if cancelled else Status.FAILED if (error or not_moved) else Status.SUCCEEDED
        if not error and not_moved:
            error = f"{len(not_moved)} of {len(self.plan)} VM(s) were not moved: " + " ".join(
                f"{i['domain_name']}: {i['error'] or 'not started'}" for i in not_moved
            )
        # Each move's job read its two hosts again when it ended; this is the
        # net for a read that failed while another move's VM was half-way
        # between hosts: the inventory is right before the evacuation says it
        # is over (a return planned at once reads it).
        self._refresh_inventory()
        evacuation.save_plan()
        moved = len(self.plan) - len(not_moved)
        evacuation.finish(
            status,
            error,
            (
                AuditAction.EVACUATION,
                f"{evacuation.get_kind_display()} #{evacuation.pk} of {evacuation.subject} {status}: "
                f"{moved} of {len(self.plan)} VM(s) moved."
                + (
                    f" Left where they were: {', '.join(i['domain_name'] for i in evacuation.left)}."
                    if evacuation.left
                    else ""
                ),
            ),
            outcome=str(status),
        )

    def _refresh_inventory(self) -> None:
        """Read again every host a move touched whose last good read is older
        than the end of the last move there. Each move's job read its two
        hosts after it ended, so usually none is: this is the net for a read
        that failed (a host that did not answer for a moment)."""
        ended: dict[str, Any] = {}
        for source, target, finished in self.evacuation.migrations.values_list(
            "source_name", "target_name", "finished_at"
        ):
            for name in (source, target):
                if finished is not None and (name not in ended or finished > ended[name]):
                    ended[name] = finished
        stale = sorted(
            name
            for name, last_seen in Host.objects.filter(name__in=ended).values_list("name", "last_seen")
            if last_seen is None or last_seen < ended[name]
        )
        if not stale:
            return
        started = time.monotonic()
        try:
            sync_hosts(stale)
        except Exception:
            log.warning("inventory refresh after evacuation %s failed", self.evacuation.pk, exc_info=True)
        log.info(
            "evacuation %s: read %s again in %.2f s", self.evacuation.pk, ", ".join(stale), time.monotonic() - started
        )
