"""The lock that keeps two steps of one evacuation (or rolling maintenance)
apart: kept while its step runs, however long, and freed soon after the
process holding it is killed, so the next step does not wait minutes."""

import multiprocessing
import os
import signal
import time

import django_rq
import pytest

from maintenance import runner


@pytest.fixture
def short_lock(monkeypatch):
    monkeypatch.setattr(runner, "LOCK_SECONDS", 1)
    monkeypatch.setattr(runner, "LOCK_RENEW_SECONDS", 0.2)
    monkeypatch.setattr(runner, "LOCK_WAIT_SECONDS", 0.1)


def taken(name):
    with runner.step_lock(name) as held:
        return held


def test_a_running_step_keeps_its_lock_beyond_the_locks_own_life(short_lock):
    with runner.step_lock("evacuation:test-1") as held:
        assert held
        time.sleep(2.5)  # over twice the life the lock has without renewal
        assert not taken("evacuation:test-1")
    assert taken("evacuation:test-1")  # released at the end


def test_a_killed_steps_lock_is_free_soon_after(short_lock):
    ready = multiprocessing.Event()

    def step():
        with runner.step_lock("rolling:test-2"):
            ready.set()
            time.sleep(60)

    child = multiprocessing.get_context("fork").Process(target=step)
    child.start()
    assert ready.wait(10)
    assert not taken("rolling:test-2")

    os.kill(child.pid, signal.SIGKILL)
    child.join()
    killed = time.monotonic()
    while not taken("rolling:test-2"):
        assert time.monotonic() - killed < 3, "the killed step's lock was not freed"
    assert django_rq.get_connection("default").ttl("kvmweb:rolling:test-2:step") == -2  # released after
