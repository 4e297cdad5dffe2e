"""What someone who can write kvmweb's Redis can make it run: nothing (issue 21, finding 6).

Jobs were JSON already, but a JSON job naming ``os.system`` ran as the
worker's user, and Django's Redis cache unpickled a value written under a
throttle's key in the web process on a viewer's next API call.
"""

import os
import pickle
import time

import django_rq
import pytest
import redis
from rq import Queue
from rq.serializers import JSONSerializer

pytestmark = pytest.mark.django_db(transaction=True)


class _RunsCode:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


@pytest.mark.processes
def test_the_worker_refuses_a_job_that_names_a_foreign_function(redis_url, worker_process, tmp_path):
    conn = redis.Redis.from_url(redis_url)
    pwned = tmp_path / "pwned"
    # What a Redis writer can queue: well-formed JSON jobs naming any function,
    # or a method of an object, or a callback.
    foreign = Queue("default", connection=conn, serializer=JSONSerializer)
    shell = foreign.enqueue("os.system", f"touch {pwned}")
    via_callback = foreign.enqueue("kvmweb.worker.reconcile_periodically", on_success="os.system")
    worker = worker_process(queues=("default",))
    # A job of kvmweb's own, queued after them, runs.
    own = django_rq.get_queue("default").enqueue("kvmweb.worker.reconcile_periodically")

    deadline = time.monotonic() + 60
    while own.get_status(refresh=True) != "finished" and time.monotonic() < deadline:
        if worker.proc.poll() is not None:
            pytest.fail(f"the worker stopped:\n{worker.output()}")
        time.sleep(0.2)
    assert own.get_status(refresh=True) == "finished", worker.output()
    assert shell.get_status(refresh=True) == "failed"
    assert "is not one of kvmweb's jobs" in worker.output()
    assert not pwned.exists(), "the worker ran os.system from a queued job"
    # Its function is one of kvmweb's; the callback is not called (os.system
    # would have failed on the job object it is given, so look at the log).
    assert via_callback.get_status(refresh=True) == "finished"
    assert "ignored the callback 'os.system'" in worker.output()
    assert worker.proc.poll() is None


def test_the_job_class_allows_only_kvmwebs_functions():
    from kvmweb.jobs import ALLOWED_JOBS, ForeignJob, KvmwebJob

    queue = django_rq.get_queue("default")
    assert queue.job_class is KvmwebJob
    for name in ALLOWED_JOBS:
        module, _, attribute = name.rpartition(".")
        assert callable(getattr(__import__(module, fromlist=[attribute]), attribute)), name
    job = queue.enqueue("builtins.print", "hello")
    with pytest.raises(ForeignJob):
        KvmwebJob.fetch(job.id, connection=queue.connection, serializer=queue.serializer).perform()
    job.delete()


@pytest.fixture
def redis_cache(settings, redis_url):
    from kvmweb import settings as kvmweb_settings

    settings.CACHES = {"default": {**kvmweb_settings.CACHES["default"], "LOCATION": redis_url}}
    from django.core.cache import cache

    cache.clear()
    yield cache
    cache.clear()


def test_a_pickle_in_the_cache_is_not_run_by_the_web_process(api, viewer, redis_cache, redis_url, tmp_path):
    pwned = tmp_path / "pwned"
    key = redis_cache.make_key(f"throttle_user_{viewer.pk}")
    redis.Redis.from_url(redis_url).set(key, pickle.dumps(_RunsCode(pwned)))

    api.force_authenticate(viewer)
    response = api.get("/api/hosts/")
    assert response.status_code == 200
    assert not pwned.exists(), "the web process unpickled a cache value"
    # The throttle wrote its own history over it, as JSON.
    assert redis.Redis.from_url(redis_url).get(key).startswith(b"[")


def test_the_cache_still_carries_what_kvmweb_keeps_there(redis_cache):
    redis_cache.set("peer", 1765000000.25, 60)
    assert redis_cache.get("peer") == 1765000000.25
    redis_cache.set("history", [3.5, 2.0], 60)
    assert redis_cache.get("history") == [3.5, 2.0]
    redis_cache.set("count", 1, 60)
    assert redis_cache.incr("count") == 2
    assert redis_cache.get("missing", "default") == "default"
