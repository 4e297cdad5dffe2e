"""The RQ worker kvmweb runs: it schedules the periodic work when it starts."""

import logging

from django.conf import settings
from rq import Worker as RQWorker

log = logging.getLogger(__name__)

REFRESH_JOB_ID = "kvmweb-inventory-refresh"


def schedule_refresh(queue, delay=None):
    """Enqueue the next inventory refresh, once, however many workers ask."""
    from rq.job import Job

    interval = settings.KVMWEB_SYNC_INTERVAL
    if not interval:
        return None
    try:
        job = Job.fetch(REFRESH_JOB_ID, connection=queue.connection)
        if job.get_status(refresh=True) in ("queued", "scheduled", "started", "deferred"):
            return job
    except Exception:  # no such job yet
        pass
    from datetime import timedelta

    return queue.enqueue_in(
        timedelta(seconds=interval if delay is None else delay),
        "kvmweb.worker.refresh_inventory",
        job_id=REFRESH_JOB_ID,
        result_ttl=interval * 2,
    )


def refresh_inventory():
    """Sync every host, then schedule the next run."""
    import django_rq

    from hosts.sync import sync_all_job

    try:
        return sync_all_job()
    finally:
        schedule_refresh(django_rq.get_queue("default"), delay=None)


RECONCILE_JOB_ID = "kvmweb-reconcile"


def reconcile_periodically():
    """Settle migrations whose worker died; runs on the default queue every interval."""
    import django_rq

    from migrations_app.engine import reconcile_all

    try:
        return reconcile_all()
    finally:
        interval = settings.KVMWEB_SYNC_INTERVAL
        if interval:
            from datetime import timedelta

            django_rq.get_queue("default").enqueue_in(
                timedelta(seconds=interval), reconcile_periodically, job_id=RECONCILE_JOB_ID
            )


class Worker(RQWorker):
    def work(self, *args, **kwargs):
        import django_rq

        queue = django_rq.get_queue("default")
        try:
            schedule_refresh(queue, delay=0)
            # On start, look for migrations a dead worker left behind. The
            # heartbeat rule keeps this from touching ones another live
            # worker is driving.
            queue.enqueue(reconcile_periodically, job_id=RECONCILE_JOB_ID)
        except Exception:
            log.exception("could not schedule the periodic jobs")
        return super().work(*args, **kwargs)
