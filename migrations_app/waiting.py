"""Why a queued migration has not started yet, in words, with its place in line.

A migration waits for one of two things: a slot on its hosts (each host sends
and receives only so many at once: ``Host.max_outgoing``/``max_incoming``,
counted by ``engine.claim``) or a worker (the pool has ``KVMWEB_WORKERS``
migration slots, kvmweb/workerpool.py). The reason is worked out when asked,
from the database and RQ's registry of workers, so it is never stale.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import TYPE_CHECKING

import django_rq
from rq import Worker
from rq.utils import now

from .states import Status

if TYPE_CHECKING:
    from .models import Migration

log = logging.getLogger(__name__)

QUEUE = "migrations"
# A worker whose heartbeat is older than this is dead, whatever its record says
# (the pool's slots beat every 10 s busy, every 15 s idle: kvmweb/worker.py).
LIVE_SECONDS = 45


def job_id(pk: int) -> str:
    """The RQ job id of a migration's first run (services.enqueue)."""
    return f"migration-{pk}"


def retry_id(pk: int) -> str:
    """The RQ job id of its later runs, after waiting for a slot (one waits at a time)."""
    return f"migration-{pk}-retry"


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def waiting_reason(migration: Migration) -> str:
    """ "" unless ``migration`` is queued; else why it waits, e.g.
    "Waiting for a slot: kvm01 already sends 2 (limit 2); 1st in line"."""
    if migration.status != Status.QUEUED:
        return ""
    ahead = migration.queued_ahead()
    for role, host, does in (("source", migration.source, "sends"), ("target", migration.target, "receives")):
        if host is None:
            continue
        taken, limit = migration.slots_taken(role, host)  # as engine.claim counts them
        if taken >= limit:
            place = ahead.filter(**{role: host}).count() + 1
            return f"Waiting for a slot: {host.name} already {does} {taken} (limit {limit}); {ordinal(place)} in line"
    return _worker_reason(migration)


def _worker_reason(migration: Migration) -> str:
    try:
        total, working = workers()
    except Exception as e:  # Redis away: say so rather than fail the page
        log.warning("could not count the workers: %s", e)
        return "Waiting for a worker (kvmweb cannot reach Redis to say more)"
    if total == 0:
        return "Waiting for a worker: none is running (start the worker line of the Procfile: manage.py runworkers)"
    if working >= total:
        place = _place_in_queue(migration)
        return f"Waiting for a worker: {working} of {total} busy" + (f"; {ordinal(place)} in line" if place else "")
    return "About to start: a worker is free."


def workers() -> tuple[int, int]:
    """(live workers that take migrations, how many of them are running a job).

    Live: its heartbeat is recent. A killed worker's record stays in Redis
    until it expires, minutes later: it counts for nothing meanwhile."""
    queue = django_rq.get_queue(QUEUE)
    since = now() - timedelta(seconds=LIVE_SECONDS)
    live = [w for w in Worker.all(queue=queue) if w.last_heartbeat and w.last_heartbeat >= since]
    return len(live), sum(1 for w in live if w.get_state() == "busy")


def _place_in_queue(migration: Migration) -> int:
    queue = django_rq.get_queue(QUEUE)
    for queued_as in (job_id(migration.pk), retry_id(migration.pk)):
        position = queue.get_job_position(queued_as)
        if position is not None:
            return position + 1
    return 0
