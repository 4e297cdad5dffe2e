"""What the worker does with queue entries kvmweb did not write (finding 1 and 5).

Anyone who can write to Redis could queue a pickle that runs code when the
worker unpickles it, or one malformed entry that stopped the worker for good.
Jobs are JSON now, and a malformed entry is logged and dropped.
"""

import os
import pickle
import time

import django_rq
import pytest
import redis


class _RunsCode:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def push_raw(conn, queue, job_id, fields):
    conn.hset(f"rq:job:{job_id}", mapping=fields)
    conn.rpush(f"rq:queue:{queue}", job_id)


def test_queues_are_configured_for_json(settings):
    from rq.serializers import JSONSerializer

    for name in settings.RQ_QUEUES:
        assert django_rq.get_queue(name).serializer is JSONSerializer


@pytest.mark.processes
@pytest.mark.django_db(transaction=True)
def test_the_worker_never_unpickles_and_survives_garbage(redis_url, worker_process, tmp_path):
    conn = redis.Redis.from_url(redis_url)
    pwned = tmp_path / "pwned"
    evil = pickle.dumps((_RunsCode(pwned), None, (), {}))
    now = "2026-01-01T00:00:00.000000Z"
    # A pickle payload in an otherwise well-formed job, as RQ's own pickle serializer writes them.
    push_raw(conn, "default", "evil", {"data": evil, "created_at": now, "origin": "default", "status": "queued"})
    # A hash RQ cannot even restore, and bytes that are neither JSON nor a job.
    push_raw(conn, "default", "broken", {"created_at": "not a time", "data": b"\x80\x04garbage"})
    push_raw(conn, "default", "junk", {"data": b"{not json"})
    conn.rpush("rq:queue:default", "no-such-job")

    worker = worker_process(queues=("default",))
    # A job of kvmweb's own (the worker runs no other, tests/test_redis_writer.py) still runs after the garbage.
    job = django_rq.get_queue("default").enqueue("kvmweb.worker.reconcile_periodically")

    deadline = time.monotonic() + 60
    while job.get_status(refresh=True) != "finished" and time.monotonic() < deadline:
        if worker.proc.poll() is not None:
            pytest.fail(f"the worker stopped:\n{worker.output()}")
        time.sleep(0.2)
    assert job.get_status(refresh=True) == "finished", worker.output()
    assert not pwned.exists(), "the worker unpickled a queue entry"
    assert worker.proc.poll() is None, worker.output()
    assert "unhandled exception" not in worker.output()
