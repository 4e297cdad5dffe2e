"""When the worker that runs the scheduler dies, another takes its place within seconds, not minutes."""

import time
from datetime import timedelta

import django_rq
import pytest
from rq.scheduler import RQScheduler

pytestmark = [pytest.mark.processes, pytest.mark.django_db(transaction=True)]


def lock_holder(connection, queue):
    holder = connection.get(RQScheduler.get_locking_key(queue))
    return holder.decode() if holder else None


def wait(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def test_scheduled_jobs_run_soon_after_the_scheduling_worker_is_killed(worker_process):
    queue = django_rq.get_queue("migrations", commit_mode="auto")
    queue.connection.flushdb()
    first = worker_process(("migrations",))
    first_lock = wait(lambda: lock_holder(queue.connection, "migrations"), 30, "a worker to take the scheduler lock")
    second = worker_process(("migrations",))
    # The second has started, found the lock taken, and works as a plain worker
    # (its first maintenance, which comes after that, cleans the registries).
    wait(lambda: "cleaning registries" in second.output(), 60, "the second worker to start")
    assert lock_holder(queue.connection, "migrations") == first_lock

    first.kill()
    # RQ lets a dead holder's lock expire after a minute; skip that wait.
    queue.connection.delete(RQScheduler.get_locking_key("migrations"))
    job = queue.enqueue_in(timedelta(seconds=1), "kvmweb.worker.reconcile_periodically")

    # Without a check every 15 s the survivor would look again only after
    # its 405 s wait on the queue or its 10-minute maintenance.
    wait(lambda: lock_holder(queue.connection, "migrations"), 40, "the second worker to take the lock over")
    wait(lambda: job.get_status(refresh=True) == "finished", 20, "the scheduled job to run")
    assert second.proc.poll() is None
