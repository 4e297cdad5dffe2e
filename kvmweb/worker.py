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


class Worker(RQWorker):
    def work(self, *args, **kwargs):
        import django_rq

        try:
            schedule_refresh(django_rq.get_queue("default"), delay=0)
        except Exception:
            log.exception("could not schedule the inventory refresh")
        return super().work(*args, **kwargs)
