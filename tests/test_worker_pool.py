"""The Procfile's worker line is a pool: migration slots and short-job slots,
each a process of its own, started again when it dies, gone with the pool."""

import os
import signal
import time

import django_rq
import pytest
from rq import Worker

pytestmark = [pytest.mark.processes, pytest.mark.django_db(transaction=True)]


def registered(pool):
    """{queue name: names of the workers of this pool that take it}. (Workers
    of a pool an earlier test killed stay registered until their keys expire.)"""
    pids = {str(pid) for pid in slots_of(pool)} if pool.proc.poll() is None else set()
    found = {}
    for name in ("migrations", "default"):
        queue = django_rq.get_queue(name)
        found[name] = sorted(w.name for w in Worker.all(queue=queue) if _pid_of(w.name) in pids)
    return found


def _pid_of(name):
    """The pid in a pool slot's name (host.pid.role-n); None for another worker's name."""
    parts = name.split(".")
    return parts[-2] if len(parts) >= 3 else None


def wait_until(predicate, timeout=30, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def slots_of(pool):
    """The pids of the pool's own children (its slots)."""
    with open(f"/proc/{pool.proc.pid}/task/{pool.proc.pid}/children") as f:
        return [int(pid) for pid in f.read().split()]


def test_the_worker_line_starts_migration_and_short_slots(worker_process):
    pool = worker_process(pool=True, KVMWEB_WORKERS=3, KVMWEB_SHORT_WORKERS=2)

    found = wait_until(
        lambda: (r := registered(pool)) and len(r["migrations"]) == 3 and len(r["default"]) == 2 and r,
        what="3 migration slots and 2 short-job slots",
    )

    # Each slot takes one kind of work: a migration never holds a short-job slot, nor the reverse.
    assert not set(found["migrations"]) & set(found["default"])
    assert all(".migrations-" in n for n in found["migrations"]), found
    assert all(".short-" in n for n in found["default"]), found
    assert len(slots_of(pool)) >= 5


def test_a_killed_slot_is_started_again_and_the_others_carry_on(worker_process):
    pool = worker_process(pool=True, KVMWEB_WORKERS=2, KVMWEB_SHORT_WORKERS=1)
    before = wait_until(
        lambda: (r := registered(pool)) and len(r["migrations"]) == 2 and len(r["default"]) == 1 and r,
        what="the pool's slots",
    )
    victim = next(n for n in before["migrations"])
    os.kill(int(_pid_of(victim)), signal.SIGKILL)

    def replaced():
        now = registered(pool)
        alive = [n for n in now["migrations"] if n != victim]
        return len(alive) == 2 and now

    after = wait_until(replaced, what="a new migration slot in place of the killed one")
    assert set(before["migrations"]) - {victim} <= set(after["migrations"])  # the other slot was left alone
    assert after["default"] == before["default"]
    assert "migrations-" in pool.output() and "died after" in pool.output()
    assert pool.proc.poll() is None


def test_the_slots_stop_with_the_pool(worker_process):
    pool = worker_process(pool=True, KVMWEB_WORKERS=2, KVMWEB_SHORT_WORKERS=1)
    wait_until(lambda: len(registered(pool)["migrations"]) == 2, what="the pool's slots")
    children = slots_of(pool)

    os.kill(pool.proc.pid, signal.SIGTERM)  # as a supervisor stops it: the parent only
    pool.proc.wait(timeout=40)

    assert pool.proc.returncode == 0
    for pid in children:
        assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"
    queue = django_rq.get_queue("migrations")
    names = {w.name for w in Worker.all(queue=queue)}
    assert not any(_pid_of(n) in {str(p) for p in children} for n in names), "a stopped slot is still registered"


def test_the_slots_die_with_a_killed_pool(worker_process):
    pool = worker_process(pool=True, KVMWEB_WORKERS=2, KVMWEB_SHORT_WORKERS=1)
    wait_until(lambda: len(registered(pool)["migrations"]) == 2, what="the pool's slots")
    children = slots_of(pool)

    os.kill(pool.proc.pid, signal.SIGKILL)  # the parent alone, with no chance to stop its slots
    pool.proc.wait(timeout=10)

    def all_gone():
        return all(not os.path.exists(f"/proc/{pid}") for pid in children)

    wait_until(all_gone, timeout=20, what="the slots to go with their pool")
