"""The claim a worker makes when a migration's turn comes: it takes the room on
the target under the same lock as the per-host slots, so two workers never
both fit a guest into the last room (test driver; threads with their own
database connections, as two workers have)."""

import threading
import time

import pytest
from django.db import connection

from hosts import capacity
from hosts.models import Domain, Host
from migrations_app import engine, jobs
from migrations_app.models import AuditEntry, Migration
from tests.migration_helpers import migration_for
from tests.test_capacity import GiB, make_host

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def room_for_one(tmp_path, settings):
    """kvm01 runs two 6 GiB guests; kvm02 (16 GiB, 1 GiB reserved) runs 2 GiB and has room for 9 more:
    for one of them, not both. Slots allow both at once, so only memory decides."""
    settings.KVMWEB_RESERVED_MEMORY_MIB = 1024
    settings.KVMWEB_MEMORY_ALLOCATION_RATIO = 1.0
    make_host(tmp_path, "kvm01", [("big1", "running", 6144, 6144, 1), ("big2", "running", 6144, 6144, 1)])
    kvm02 = make_host(tmp_path, "kvm02", [("web", "running", 6144, 6144, 1)], max_incoming=5)
    Host.objects.filter(pk=kvm02.pk).update(memory_reserved_mib=1024)
    return [migration_for(Domain.objects.get(name=n), kvm02) for n in ("big1", "big2")]


def test_a_migration_that_does_not_fit_when_its_turn_comes_fails_in_plain_words(room_for_one):
    first, second = room_for_one
    assert engine.claim(first) is True
    assert jobs.run_migration(second.pk) == "failed"
    second.refresh_from_db()
    assert second.status == "failed" and second.error_code == "preflight"
    assert second.error.startswith("Pre-flight checks failed: kvm02 cannot hold big2: 12.0 GiB of the 15.0 GiB")
    assert "the one on its way there" in second.error
    memory = next(c for c in second.checks if c["name"] == "memory")
    assert memory["result"] == "fail" and memory["label"] == "Memory"
    assert AuditEntry.objects.filter(migration=second, action="check", outcome="fail").exists()
    assert not second.events, "it never waited for a slot: it was refused"
    # The room it did not take is still there for the first, whose claim
    # does not count against itself when its own checks run.
    assert capacity.for_host(second.target, exclude_migration=first.pk).memory_committed == 6 * GiB


def test_a_shut_off_guest_going_cold_is_claimed_however_full_the_target(room_for_one, tmp_path):
    first, _ = room_for_one
    assert engine.claim(first) is True
    Domain.objects.filter(name="big2").update(state="shutoff")
    cold = Migration.objects.get(domain_name="big2")
    Migration.objects.filter(pk=cold.pk).update(mode="cold")
    cold.refresh_from_db()
    assert engine.claim(cold) is True


def test_two_workers_claiming_the_last_room_at_once_admit_one(room_for_one, monkeypatch):
    # Each claimer pauses after reading what kvm02 has promised, so without the
    # lock both would read before either had written its claim.
    read = capacity.for_host

    def slow_read(*args, **kwargs):
        figures = read(*args, **kwargs)
        time.sleep(0.5)
        return figures

    monkeypatch.setattr(capacity, "for_host", slow_read)
    start = threading.Barrier(2)
    claimed = {}

    def worker(migration):
        try:
            start.wait()
            claimed[migration.pk] = engine.claim(migration)
        finally:
            connection.close()  # each thread had its own connection

    threads = [threading.Thread(target=worker, args=(m,)) for m in room_for_one]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(claimed.values()) == [False, True], claimed
    statuses = sorted(Migration.objects.values_list("status", flat=True))
    assert statuses == ["checking", "failed"]
    refused = Migration.objects.get(status="failed")
    assert "kvm02 cannot hold" in refused.error


def test_the_dashboard_redraws_the_targets_bar_when_a_migration_is_claimed(room_for_one, client, viewer):
    from asgiref.sync import async_to_sync
    from channels.db import database_sync_to_async

    from tests.test_consumers import communicator, cookie_for, drain, publish

    first, _ = room_for_one
    cookie = cookie_for(client, viewer)

    async def scenario():
        ws = communicator("/ws/dashboard/", cookie)
        assert (await ws.connect())[0]
        state = await ws.receive_json_from(timeout=5)
        bars = {h["name"]: h["capacity"] for h in state["hosts"]}
        assert bars["kvm02"]["incoming"] == 0
        assert bars["kvm02"]["summary"] == "6.0 GiB committed of 15.0 GiB (40 %)"

        assert await database_sync_to_async(engine.claim)(first)
        await publish(first, status="checking")
        got = await drain(ws)
        hosts = [m for m in got if m["type"] == "dashboard.hosts"]
        assert hosts, got
        bar = {h["name"]: h["capacity"] for h in hosts[-1]["hosts"]}["kvm02"]
        assert (bar["running"], bar["incoming"], bar["level"]) == (40, 40, "")
        assert bar["summary"].endswith("6.0 GiB on 1 migration on the way in")
        await ws.disconnect()

    async_to_sync(scenario)()
