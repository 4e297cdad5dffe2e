"""The evacuation runner: an RQ job that carries out a plan, one ordinary
Migration per VM (checks, policy, audit, progress and cancel as for any other),
as many at once as the hosts' per-host limits allow.

The moves run in threads of this job rather than as jobs of their own: a
worker runs one job at a time, so moves queued behind the evacuation would
only ever run one by one. Each thread claims its migration under the same
per-host lock as any worker (engine.claim), so the limits hold against
migrations requested by anyone else too. A move that fails is planned again,
on fresh facts, onto a host it has not tried, once.
"""

import logging
import threading
import time

from django.contrib.auth.models import AnonymousUser
from django.db import connection

from hosts.models import Domain, Host
from hosts.sync import sync_hosts
from migrations_app import engine
from migrations_app import services as migration_services
from migrations_app.models import ACTIVE as MIGRATION_ACTIVE
from migrations_app.models import Migration, migration_ended
from migrations_app.models import Status as MigrationStatus
from migrations_app.request import MigrationRequest

from . import facts, planner, services
from .models import Evacuation, Item, Kind, Status

log = logging.getLogger(__name__)

# How often the runner looks for moves that ended, slots that freed and a
# cancel, at the latest: a move of its own that ends wakes it at once.
POLL_SECONDS = 0.2
ATTEMPTS = 2  # the planned target, then once on another


def run_evacuation(pk):
    evacuation = Evacuation.objects.select_related("requested_by").filter(pk=pk).first()
    if evacuation is None or evacuation.status != Status.QUEUED:
        return f"evacuation {pk} is not queued; nothing to do"
    evacuation.start()
    Runner(evacuation).run()
    return evacuation.status


class Runner:
    def __init__(self, evacuation):
        self.evacuation = evacuation
        self.user = evacuation.requested_by or AnonymousUser()
        self.moving = {}  # plan index -> thread
        self.finishing = []  # threads of moves that ended, refreshing the inventory
        self.sent = None  # the state last published
        # Set when one of this runner's moves ended (or its thread did): the
        # next move starts then, not at the next look.
        self.wake = threading.Event()

    @property
    def plan(self):
        return self.evacuation.plan

    def _move_ended(self, sender, migration, **kwargs):
        if any(item["migrations"] and item["migrations"][-1] == migration.pk for item in self.plan):
            self.wake.set()

    def run(self):
        uid = f"evacuation-runner-{self.evacuation.pk}"
        migration_ended.connect(self._move_ended, sender=Migration, weak=False, dispatch_uid=uid)
        try:
            self._run()
        finally:
            migration_ended.disconnect(sender=Migration, dispatch_uid=uid)

    def _run(self):
        try:
            while True:
                self.wake.clear()  # what is read below sees any move that ended before this
                cancelling = Evacuation.objects.filter(pk=self.evacuation.pk, cancel_requested=True).exists()
                self._collect(cancelling)
                if cancelling:
                    for item in self.plan:
                        if item["state"] == Item.PENDING:
                            item.update(state=Item.CANCELLED, error="The evacuation was cancelled before it moved.")
                else:
                    self._start_what_fits()
                self.evacuation.save_plan()
                # Several times a second, but only what changed goes out.
                self.sent = services.publish(self.evacuation, unless=self.sent)
                if not self.moving and all(i["state"] != Item.PENDING for i in self.plan):
                    break
                self.wake.wait(POLL_SECONDS)
        except Exception as e:  # a bug must still leave a readable record
            log.exception("evacuation %s crashed", self.evacuation.pk)
            self._finish(f"kvmweb failed unexpectedly ({e!r}); the worker's log has the details.")
            return
        self._finish()

    # -- starting moves --------------------------------------------------------

    def _start_what_fits(self):
        busy_out, busy_in = self._busy()
        limits = {h.pk: h for h in Host.objects.all()}
        for index, item in enumerate(self.plan):
            if item["state"] != Item.PENDING:
                continue
            source, target = limits.get(item["source"]), limits.get(item["target"])
            if source is None or target is None:
                item.update(state=Item.FAILED, error="A host of this move was removed from kvmweb.")
                continue
            if busy_out.get(source.pk, 0) >= source.max_outgoing or busy_in.get(target.pk, 0) >= target.max_incoming:
                continue
            if self._start(index, item, target):
                busy_out[source.pk] = busy_out.get(source.pk, 0) + 1
                busy_in[target.pk] = busy_in.get(target.pk, 0) + 1

    def _busy(self):
        """Moves under way or claimed, per source and per target, this evacuation's included."""
        busy_out, busy_in = {}, {}
        active = Migration.objects.filter(status__in=[MigrationStatus.CHECKING, MigrationStatus.RUNNING])
        mine = [i["migrations"][-1] for i in self.plan if i["state"] == Item.MOVING]
        queued_mine = Migration.objects.filter(pk__in=mine, status=MigrationStatus.QUEUED)
        for source_id, target_id in [
            *active.values_list("source_id", "target_id"),
            *queued_mine.values_list("source_id", "target_id"),
        ]:
            busy_out[source_id] = busy_out.get(source_id, 0) + 1
            busy_in[target_id] = busy_in.get(target_id, 0) + 1
        return busy_out, busy_in

    def _start(self, index, item, target):
        domain = Domain.objects.select_related("host").filter(uuid=item["domain_uuid"]).first()
        if domain is None:
            item.update(state=Item.FAILED, error=f"{item['domain_name']} is no longer in the inventory.")
            return False
        if domain.host_id == target.pk:
            item.update(state=Item.MOVED)
            return False
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
            migration = migration_services.request_migration(self.user, req, queue=False)
        except migration_services.MigrationRefused as e:
            self._failed(item, e.message)
            return False
        self.evacuation.migrations.add(migration)
        item["migrations"].append(migration.pk)
        item["state"] = Item.MOVING
        if Evacuation.objects.filter(pk=self.evacuation.pk, cancel_requested=True).exists():
            # Cancelled while this move was being requested: the cancel did not see it.
            migration_services.cancel(self.user, migration)
        self.moving[index] = _start_thread(migration.pk, self.wake)
        return True

    # -- moves that ended ------------------------------------------------------

    def _collect(self, cancelling):
        for index, thread in list(self.moving.items()):
            item = self.plan[index]
            migration = Migration.objects.get(pk=item["migrations"][-1])
            if migration.status in MIGRATION_ACTIVE:
                if migration.status == MigrationStatus.QUEUED and not thread.is_alive():
                    self.moving[index] = _start_thread(migration.pk, self.wake)  # its thread crashed: drive it again
                # Or a worker runs it (the periodic requeue found it waiting):
                # either way it is not over.
                continue
            # A move that succeeded counts at once; its thread still refreshes
            # the two hosts' inventory (self.finishing). A failed one is
            # planned again only once that refresh is done, on fresh facts.
            if migration.status != MigrationStatus.SUCCEEDED and thread.is_alive():
                continue
            del self.moving[index]
            self.finishing.append(thread)
            if migration.status == MigrationStatus.SUCCEEDED:
                item["state"] = Item.MOVED  # any error kept: why it went elsewhere
            elif migration.status == MigrationStatus.CANCELLED:
                item.update(state=Item.CANCELLED, error=f"Cancelled; it stayed on {migration.source_name}.")
            else:
                self._failed(item, migration.error or "The migration did not finish.", cancelling)

    def _failed(self, item, error, cancelling=False):
        """Try once more on another host, or give up on this VM with the reasons."""
        said = f"{item['target_name']} refused it: {error}"
        if cancelling or len(item["tried"]) >= ATTEMPTS:
            item.update(state=Item.FAILED, error=f"{item['error']} {said}".strip())
            return
        other = self._elsewhere(item)
        if isinstance(other, str):
            item.update(state=Item.FAILED, error=f"{said} No other host fits: {other}")
            return
        item.update(
            {k: other[k] for k in ("target", "target_name", "mode", "storage", "target_pool", "predicted_seconds")},
            state=Item.PENDING,
            error=said,
            why=f"Tried again on {other['target_name']}: {other['why']}",
        )
        item["tried"].append(other["target"])

    def _elsewhere(self, item):
        domain = Domain.objects.filter(uuid=item["domain_uuid"]).first()
        if domain is None:
            return f"{item['domain_name']} is no longer in the inventory."
        hosts = facts.hosts()
        exclude = set(item["tried"])
        if self.evacuation.kind == Kind.RETURN:
            exclude |= {pk for pk in hosts if pk != self.evacuation.host_id}
        result = planner.plan([facts.guest(domain)], hosts.values(), exclude=exclude, speed_bps=facts.speed_bps())
        if result.moves:
            return result.moves[0]
        return (result.unplaced or result.staying)[0]["reason"]

    # -- the end ---------------------------------------------------------------

    def _finish(self, error=""):
        evacuation = self.evacuation
        cancelled = Evacuation.objects.filter(pk=evacuation.pk, cancel_requested=True).exists()
        not_moved = [i for i in self.plan if i["state"] != Item.MOVED]
        status = Status.CANCELLED if cancelled else Status.FAILED if (error or not_moved) else Status.SUCCEEDED
        if not error and not_moved:
            error = f"{len(not_moved)} of {len(self.plan)} VM(s) were not moved: " + " ".join(
                f"{i['domain_name']}: {i['error'] or 'not started'}" for i in not_moved
            )
        # Each move's thread refreshes its two hosts' inventory after the move
        # ended: an evacuation is over only when the inventory shows where its
        # VMs went (a return planned at once reads it).
        for thread in self.finishing:
            thread.join(60)
        # And the net for a move's refresh that failed (one VM half-way between
        # hosts while another move read them): the inventory is right before
        # the evacuation says it is over.
        self._refresh_inventory()
        evacuation.save_plan()
        evacuation.finish(status, error)
        moved = len(self.plan) - len(not_moved)
        services.audit(
            evacuation.requested_by,
            evacuation.host_name,
            f"{evacuation.get_kind_display()} #{evacuation.pk} of {evacuation.host_name} {status}: "
            f"{moved} of {len(self.plan)} VM(s) moved."
            + (
                f" Left where they were: {', '.join(i['domain_name'] for i in evacuation.left)}."
                if evacuation.left
                else ""
            ),
            evacuation=evacuation.pk,
            outcome=str(status),
        )
        services.publish(evacuation)

    def _refresh_inventory(self):
        """Every host a move touched, read again now that none is moving. Each move
        already refreshed its two hosts; this is the net for a refresh that failed
        while another move's VM was half-way between hosts."""
        names = {self.evacuation.host_name}
        for item in self.plan:
            names.update({item["source_name"], item["target_name"]})
        try:
            sync_hosts(sorted(names))
        except Exception:
            log.warning("inventory refresh after evacuation %s failed", self.evacuation.pk, exc_info=True)


def _start_thread(pk, wake):
    thread = threading.Thread(target=_move, args=(pk, wake), name=f"evacuation-move-{pk}", daemon=True)
    thread.start()
    return thread


def _move(pk, wake):
    """One migration, in a thread: wait for the hosts' slots as any worker would, then run it.
    ``wake`` is set when the thread ends (a failed move is planned again only then)."""
    try:
        while True:
            migration = Migration.objects.select_related("source", "target").get(pk=pk)
            if migration.status != MigrationStatus.QUEUED:
                return
            if migration.source is None or migration.target is None:
                engine.finish_failed(migration, "A host of this migration was removed from kvmweb.", code="host_gone")
                return
            if engine.claim(migration):
                engine.run(migration)
                return
            time.sleep(1)
    except Exception:
        log.exception("migration %s of an evacuation crashed", pk)
    finally:
        # A thread's database connection is its own.
        connection.close()
        wake.set()
