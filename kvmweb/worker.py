"""The RQ worker kvmweb runs: it starts the periodic work when it starts."""

import logging
import os
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any, cast

import django_rq
import redis
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import close_old_connections, connections
from django.template.loader import get_template
from django.urls import get_resolver
from rq import Queue, get_current_job
from rq import Worker as RQWorker
from rq.exceptions import StopRequested
from rq.job import Job
from rq.serializers import resolve_serializer
from rq.worker import WorkerStatus

from core.queues import WAITING
from hosts import capacity
from hosts.libvirt import keep_connections
from hosts.sync import sync_all_job
from maintenance import rolling
from maintenance.runner import advance_all
from migrations_app.engine.reconcile import orphans
from migrations_app.jobs import reconcile_migration
from migrations_app.services import requeue_lost

log = logging.getLogger(__name__)

# Redis key holding the id of the waiting next run of each periodic job.
PENDING_KEY = "kvmweb:periodic:{}"


def schedule_next(queue: Queue, name: str, func: Callable[..., Any], delay: float | None = None) -> Job | None:
    """Schedule ``func``'s next run, unless one is already waiting.

    However many workers start, each periodic job keeps one chain of runs.
    Every run has a job id of its own and a Redis key names the run that is
    waiting, so a run scheduling its successor does not mistake itself for
    one already waiting (with one fixed id for all runs, it did, and the
    chain stopped after its second run).
    """
    interval = settings.KVMWEB_SYNC_INTERVAL
    if not interval:
        return None
    key = PENDING_KEY.format(name)
    pending = cast("bytes | None", queue.connection.get(key))  # RQ's connection does not decode replies
    current = get_current_job()
    if pending and (current is None or pending.decode() != current.id):
        job = queue.fetch_job(pending.decode())
        if job is not None and job.get_status() in WAITING:
            return job
    job = queue.enqueue_in(timedelta(seconds=interval if delay is None else delay), func, result_ttl=interval * 2)
    queue.connection.set(key, job.id)
    return job


def schedule_refresh(queue: Queue, delay: float | None = None) -> Job | None:
    return schedule_next(queue, "refresh", refresh_inventory, delay)


def refresh_inventory() -> list[str]:
    """Sync every host, then schedule the next run."""
    try:
        return sync_all_job()
    finally:
        schedule_refresh(django_rq.get_queue("default"))


def reconcile_periodically() -> list[tuple[int, str]]:
    """Hand each migration whose worker died to a migration slot (settling or
    adopting it may take as long as the migration), queue again those whose
    job Redis lost, carry on evacuations and rolling maintenance no step is running for, then
    schedule the next run. Quick: it runs in a short-job slot."""
    try:
        migrations = django_rq.get_queue("migrations")
        done: list[tuple[int, str]] = []
        for migration in orphans():
            pk = migration.pk
            migrations.enqueue(reconcile_migration, pk, job_id=f"reconcile-{pk}", result_ttl=3600)
            done.append((pk, "handed to a worker to settle"))
        done += [(pk, "queued again") for pk in requeue_lost()]
        done += [(pk, "evacuation carried on") for pk in advance_all()]
        done += [(pk, "rolling maintenance carried on") for pk in rolling.advance_all()]
        return done
    finally:
        schedule_next(django_rq.get_queue("default"), "reconcile", reconcile_periodically)


def preload() -> None:
    """Load in the worker what each job's work horse would otherwise load for
    itself after RQ's fork, every time: the URL resolver and the template a
    migration's state is told with, the channel layer, the capacity queries
    (the engine and the checks come with this module's imports). About 70 ms of each migration's start,
    measured through the Procfile's worker (bench/bench_migration.py)."""
    get_resolver().reverse_dict  # noqa: B018 - populates the resolver
    get_template("migrations_app/_checks.html")
    get_channel_layer()
    try:
        capacity.prepare()
    finally:
        # Compiling may have connected (PostgreSQL's version); a work horse
        # must not share its parent's database connection.
        connections.close_all()


def start_periodic_jobs(queue: Queue) -> None:
    schedule_refresh(queue, delay=0)
    # On start, look for migrations a dead worker left behind, at once. The
    # heartbeat rule keeps this from touching ones another live worker is
    # driving; the run joins the periodic chain only if there is none.
    queue.enqueue(reconcile_periodically)


# Every worker runs with --with-scheduler, and one of them at a time holds the
# scheduler's lock and moves scheduled jobs (slot retries, the periodic sync
# and reconcile) to their queues. When that worker dies, RQ lets the lock
# expire after about a minute, but another worker only tries to take it over
# in its maintenance, every 10 minutes, and an idle worker gets there only
# between waits of 405 s on the queue: migrations waiting for a slot and
# orphans waiting for reconcile stalled that long. Check this often instead.
SCHEDULER_TAKEOVER_SECONDS = 15


class Worker(RQWorker):
    """RQ's worker, made to read only JSON and to outlive a malformed queue entry.

    ``rqworker`` passes RQ's pickle serializer unless told otherwise; whatever
    it passes, this worker (and the scheduler it starts, which takes the
    worker's serializer) speaks only the serializer the queues are configured
    with, so a pickle someone wrote into Redis is never unpickled.
    """

    # Whether starting this worker schedules the periodic jobs and looks for
    # orphans at once (the pool's short-job slots do; its migration slots not).
    starts_periodic_jobs = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("maintenance_interval", SCHEDULER_TAKEOVER_SECONDS)
        kwargs["serializer"] = resolve_serializer(settings.RQ_SERIALIZER)
        kwargs["job_class"] = "kvmweb.jobs.KvmwebJob"  # only kvmweb's own job functions run
        super().__init__(*args, **kwargs)

    @property
    def dequeue_timeout(self) -> int:
        return SCHEDULER_TAKEOVER_SECONDS

    def run_maintenance_tasks(self) -> None:
        super().run_maintenance_tasks()  # type: ignore[no-untyped-call]  # RQ leaves it unannotated
        # A Redis restarted without its data lost the waiting next runs of the
        # periodic jobs, and nothing else would schedule them again.

        try:
            queue = django_rq.get_queue("default")
            schedule_refresh(queue)
            schedule_next(queue, "reconcile", reconcile_periodically)
        except Exception:
            log.exception("could not schedule the periodic jobs")

    def dequeue_job_and_maintain_ttl(
        self, timeout: int | None, max_idle_time: int | None = None
    ) -> tuple[Job, Queue] | None:
        # RQ stops the whole worker ("unhandled exception, quitting") when a
        # job it dequeues cannot be read. Such an entry did not come from
        # kvmweb: log it, drop it, and go on with the next one.
        while True:
            try:
                return super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)
            except (redis.exceptions.RedisError, StopRequested):
                raise
            except Exception as e:
                job_id = getattr(e, "job_id", None)
                log.error("dropped a malformed queue entry %r: %s", job_id, e.__class__.__name__)
                if job_id is not None:
                    self.connection.delete(self.job_class.key_for(job_id))

    def work(self, *args: Any, **kwargs: Any) -> bool:

        try:
            preload()
        except Exception:
            log.exception("could not preload the engine; each job loads it itself")
        if self.starts_periodic_jobs:
            try:
                start_periodic_jobs(django_rq.get_queue("default"))
            except Exception:
                log.exception("could not schedule the periodic jobs")
        return super().work(*args, **kwargs)


class PoolWorker(Worker):
    """A slot of the worker pool (kvmweb/workerpool.py): it runs each job in
    its own process, started once, rather than in a work horse forked per job.

    A fork per job cost ~15 ms of every migration's start and threw away what
    the process had loaded and connected. A job that kills its process (a
    crash in a C library) takes the slot with it; the pool starts the slot
    again and reconcile settles the migration, as for a killed work horse.

    While a job runs, a thread keeps the worker's heartbeat (a forking worker's
    main process does that while its horse works): a slot is alive when its
    heartbeat is recent (``waiting.workers``), and a killed one's record
    expires within minutes instead of outliving the job's timeout.
    """

    def work(self, *args: Any, **kwargs: Any) -> bool:

        # Migration after migration against the same hosts: log in once
        # (hosts/libvirt/connection.py, "connections kept").
        keep_connections()
        return super().work(*args, **kwargs)

    def execute_job(self, job: Job, queue: Queue) -> None:
        # What a work horse's environment says of it (engine.worker_name).
        os.environ["RQ_WORKER_ID"] = self.name
        os.environ["RQ_JOB_ID"] = job.id
        execution = self.prepare_execution(job)
        # Kept connections that went stale (or past CONN_MAX_AGE) are dropped
        # before and after each job, as Django does around each request.
        close_old_connections()
        done = threading.Event()
        beat = threading.Thread(target=self._beat_until, args=(done,), name="heartbeat", daemon=True)
        beat.start()
        try:
            self.perform_job(job, queue, execution)
        finally:
            done.set()
            beat.join(5)
            close_old_connections()
            self.set_state(WorkerStatus.IDLE)

    def _beat_until(self, done: threading.Event) -> None:
        while not done.wait(HEARTBEAT_SECONDS):
            try:
                self.heartbeat()
            except Exception as e:  # Redis away for a moment: the next beat tries again
                log.warning("worker %s: heartbeat failed: %s", self.name, e)

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        return self.worker_ttl + 60


# How often a busy pool slot says it is alive: well within waiting.LIVE_SECONDS
# (the idle ones say it every SCHEDULER_TAKEOVER_SECONDS).
HEARTBEAT_SECONDS = 10
