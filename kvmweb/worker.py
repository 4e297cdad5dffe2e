"""The RQ worker kvmweb runs: it starts the periodic work when it starts."""

import logging
from datetime import timedelta

import redis
from django.conf import settings
from rq import Worker as RQWorker
from rq import get_current_job
from rq.serializers import resolve_serializer

log = logging.getLogger(__name__)

# Redis key holding the id of the waiting next run of each periodic job.
PENDING_KEY = "kvmweb:periodic:{}"
WAITING = ("queued", "scheduled", "deferred", "started")


def schedule_next(queue, name, func, delay=None):
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
    pending = queue.connection.get(key)
    current = get_current_job()
    if pending and (current is None or pending.decode() != current.id):
        job = queue.fetch_job(pending.decode())
        if job is not None and job.get_status() in WAITING:
            return job
    job = queue.enqueue_in(timedelta(seconds=interval if delay is None else delay), func, result_ttl=interval * 2)
    queue.connection.set(key, job.id)
    return job


def schedule_refresh(queue, delay=None):
    return schedule_next(queue, "refresh", refresh_inventory, delay)


def refresh_inventory():
    """Sync every host, then schedule the next run."""
    import django_rq

    from hosts.sync import sync_all_job

    try:
        return sync_all_job()
    finally:
        schedule_refresh(django_rq.get_queue("default"))


def reconcile_periodically():
    """Settle migrations whose worker died, queue again those whose job Redis
    lost, then schedule the next run."""
    import django_rq

    from migrations_app.engine import reconcile_all
    from migrations_app.services import requeue_lost

    try:
        return reconcile_all() + [(pk, "queued again") for pk in requeue_lost()]
    finally:
        schedule_next(django_rq.get_queue("default"), "reconcile", reconcile_periodically)


def preload():
    """Load in the worker what each job's work horse would otherwise load for
    itself after RQ's fork, every time: the engine and the checks, the URL
    resolver and the template a migration's state is told with, the channel
    layer, the capacity queries. About 70 ms of each migration's start,
    measured through the Procfile's worker (bench/bench_migration.py)."""
    from channels.layers import get_channel_layer
    from django.db import connections
    from django.template.loader import get_template
    from django.urls import get_resolver

    import migrations_app.jobs  # noqa: F401 - imports the engine and the checks
    from hosts import capacity

    get_resolver().reverse_dict  # noqa: B018 - populates the resolver
    get_template("migrations_app/_checks.html")
    get_channel_layer()
    try:
        capacity.prepare()
    finally:
        # Compiling may have connected (PostgreSQL's version); a work horse
        # must not share its parent's database connection.
        connections.close_all()


def start_periodic_jobs(queue):
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

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("maintenance_interval", SCHEDULER_TAKEOVER_SECONDS)
        kwargs["serializer"] = resolve_serializer(settings.RQ_SERIALIZER)
        kwargs["job_class"] = "kvmweb.jobs.KvmwebJob"  # only kvmweb's own job functions run
        super().__init__(*args, **kwargs)

    @property
    def dequeue_timeout(self):
        return SCHEDULER_TAKEOVER_SECONDS

    def run_maintenance_tasks(self):
        super().run_maintenance_tasks()
        # A Redis restarted without its data lost the waiting next runs of the
        # periodic jobs, and nothing else would schedule them again.
        import django_rq

        try:
            queue = django_rq.get_queue("default")
            schedule_refresh(queue)
            schedule_next(queue, "reconcile", reconcile_periodically)
        except Exception:
            log.exception("could not schedule the periodic jobs")

    def dequeue_job_and_maintain_ttl(self, timeout, max_idle_time=None):
        # RQ stops the whole worker ("unhandled exception, quitting") when a
        # job it dequeues cannot be read. Such an entry did not come from
        # kvmweb: log it, drop it, and go on with the next one.
        while True:
            try:
                return super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)
            except redis.exceptions.RedisError:
                raise
            except Exception as e:
                job_id = getattr(e, "job_id", None)
                log.error("dropped a malformed queue entry %r: %s", job_id, e.__class__.__name__)
                if job_id is not None:
                    self.connection.delete(self.job_class.key_for(job_id))

    def work(self, *args, **kwargs):
        import django_rq

        try:
            preload()
        except Exception:
            log.exception("could not preload the engine; each job loads it itself")
        try:
            start_periodic_jobs(django_rq.get_queue("default"))
        except Exception:
            log.exception("could not schedule the periodic jobs")
        return super().work(*args, **kwargs)
