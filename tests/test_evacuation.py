"""Evacuating a lab host and bringing its guests home: real guests, real moves,
carried out by the Procfile's worker line (the pool) as in production."""

import signal
import threading

import pytest

from hosts.models import Domain, Host
from maintenance.models import Evacuation
from migrations_app.models import AuditEntry, Migration
from tests.migration_helpers import (
    register_lab,
    sync_all,
    ticks_carry_on,
    wait_for,
    wait_transferring,
)

pytestmark = [pytest.mark.lab, pytest.mark.django_db(transaction=True)]
MiB = 1024 * 1024


@pytest.fixture
def hosts(lab):
    return register_lab(lab)


@pytest.fixture
def pool(worker_process):
    """The worker line of the Procfile, running while the test runs."""
    return worker_process(pool=True)


def post(api, user, url, **body):
    api.force_authenticate(user)
    return api.post(url, body, format="json")


def evacuate(api, user, host, **body):
    sync_all()
    response = post(api, user, f"/api/hosts/{host.pk}/maintenance/", **body)
    assert response.status_code == 202, response.content
    return response.json()["id"]


def ended(pk, timeout=180):
    """The evacuation once it is over (the pool carries it out)."""

    def over():
        evacuation = Evacuation.objects.get(pk=pk)
        return None if evacuation.is_active else evacuation

    return wait_for(over, timeout, interval=0.05, what=f"evacuation {pk} to end")


def test_an_evacuation_moves_every_guest_live_at_once_and_the_return_brings_them_home(
    api, operator, lab, lab_guest, hosts, pool
):
    guests = [lab_guest("kvm01", disk="shared"), lab_guest("kvm01", disk="shared")]
    before = {name: lab.last_tick(name) for name in guests}
    sync_all()
    plan = post(api, operator, f"/api/hosts/{hosts['kvm01'].pk}/maintenance/", dry_run=True).json()
    targets = {m["domain_name"]: m["target_name"] for m in plan["plan"]}
    # Spread: each of the two idle hosts takes one.
    assert sorted(targets.values()) == ["kvm02", "kvm03"]
    assert all(m["storage"] == "shared" and m["mode"] == "live" for m in plan["plan"])

    evacuation = ended(evacuate(api, operator, hosts["kvm01"]))

    assert evacuation.status == "succeeded", evacuation.error
    # Planned again when it starts, on fresh facts: the two idle hosts are
    # alike, so which guest goes where may differ from the dry run; the spread not.
    targets = {item["domain_name"]: item["target_name"] for item in evacuation.plan}
    assert sorted(targets.values()) == ["kvm02", "kvm03"]
    for name in guests:
        assert lab.where(name) == [targets[name]]
        ticks_carry_on(lab, name, before[name])
    moves = list(Migration.objects.filter(evacuations=evacuation).order_by("started_at"))
    assert [m.status for m in moves] == ["succeeded", "succeeded"]
    # Ordinary migrations: checked, audited; and the two ran at the same time.
    assert all(m.checks and AuditEntry.objects.filter(migration=m, action="succeeded").exists() for m in moves)
    assert moves[1].started_at < moves[0].finished_at
    assert Host.objects.get(name="kvm01").maintenance

    response = post(api, operator, f"/api/hosts/{hosts['kvm01'].pk}/activate/", return_vms=True)
    assert response.status_code == 202, response.content
    back = ended(response.json()["id"])

    assert (back.kind, back.status) == ("return", "succeeded"), back.error
    for name in guests:
        assert lab.where(name) == ["kvm01"]
        ticks_carry_on(lab, name, before[name])
    assert not Host.objects.get(name="kvm01").maintenance
    body = api.get(f"/api/evacuations/{back.pk}/").json()
    assert body["progress"] == {"done": 2, "moved": 2, "total": 2}
    assert len(body["migrations"]) == 2


def test_a_refused_arrival_is_tried_once_on_another_host(api, operator, lab, lab_guest, hosts, worker_process):
    name = lab_guest("kvm01", disk="shared")
    pk = evacuate(api, operator, hosts["kvm01"])
    planned = Evacuation.objects.get(pk=pk).plan[0]["target_name"]
    # Behind kvmweb's back, the planned target gets a different VM of that name.
    lab.make_guest(planned, name, bridge=False, start=False)
    worker_process(pool=True)

    evacuation = ended(pk)

    assert evacuation.status == "succeeded", evacuation.error
    [item] = evacuation.plan
    other = {"kvm02", "kvm03"} - {planned}
    assert lab.where(name) == list(other)
    assert item["target_name"] in other and len(item["tried"]) == 2
    first, second = (Migration.objects.get(pk=m) for m in item["migrations"])
    assert (first.status, first.target_name, first.error_code) == ("failed", planned, "preflight")
    assert f"already has a different VM named {name}" in first.error
    assert second.status == "succeeded"
    assert f"{planned} refused it" in item["error"]


def test_a_cancelled_evacuation_leaves_each_guest_where_it_was(api, operator, lab, lab_guest, hosts, pool):
    guests = [lab_guest("kvm01", disk="shared"), lab_guest("kvm01", disk="shared")]
    before = {name: lab.last_tick(name) for name in guests}
    Host.objects.filter(name="kvm01").update(max_outgoing=1)  # one at a time
    # 8 MiB/s: ~30 s per guest, long enough to cancel the first mid-way.
    pk = evacuate(api, operator, hosts["kvm01"], bandwidth_mib=8)
    # Both moves are asked for at once; whichever claims kvm01's one slot goes first.
    first = wait_for(
        lambda: Evacuation.objects.get(pk=pk).migrations.filter(status="running").first(), what="the first move"
    )
    wait_transferring(first.pk)

    response = post(api, operator, f"/api/evacuations/{pk}/cancel/")
    ended(pk, 120)

    assert response.status_code == 202
    evacuation = Evacuation.objects.get(pk=pk)
    assert evacuation.status == "cancelled"
    assert Migration.objects.get(pk=first.pk).status == "cancelled"
    # The second was asked for at once and waited for kvm01's slot: it never started.
    second = evacuation.migrations.exclude(pk=first.pk).get()
    assert (second.status, second.started_at) == ("cancelled", None)
    assert sorted(i["state"] for i in evacuation.plan) == ["cancelled", "cancelled"]
    for name in guests:
        assert lab.where(name) == ["kvm01"]
        ticks_carry_on(lab, name, before[name])
    assert {e["domain_name"] for e in evacuation.left} == set(guests)


def test_a_guest_that_fits_nowhere_stays_and_the_others_leave(api, operator, lab, lab_guest, hosts, pool):
    small = lab_guest("kvm01", disk="shared", memory_mib=256)
    big = lab_guest("kvm01", disk="shared", memory_mib=384)
    # kvm02 and kvm03 may promise guests 300 MiB each (the capacity model's reserve).
    for host in Host.objects.filter(name__in=["kvm02", "kvm03"]):
        host.memory_reserved_mib = host.memory_total // MiB - 300
        host.save(update_fields=["memory_reserved_mib"])
    sync_all()

    refused = post(api, operator, f"/api/hosts/{hosts['kvm01'].pk}/maintenance/")
    assert refused.status_code == 409
    [unplaced] = refused.json()["unplaced"]
    assert unplaced["domain_name"] == big
    assert f"of memory room and {big} needs 384.0 MiB" in unplaced["reason"]
    assert not Host.objects.get(name="kvm01").maintenance

    evacuation = ended(evacuate(api, operator, hosts["kvm01"], allow_partial=True))

    assert evacuation.status == "succeeded", evacuation.error
    assert lab.where(small) in (["kvm02"], ["kvm03"])
    assert lab.where(big) == ["kvm01"]
    assert [(e["domain_name"], "memory room" in e["reason"]) for e in evacuation.left] == [(big, True)]


def test_several_moves_may_open_their_source_at_the_same_moment(lab, settings):
    from concurrent.futures import ThreadPoolExecutor

    from hosts.libvirt import HostError, open_host

    settings.KVMWEB_ALLOW_TCP = True
    barrier = threading.Barrier(4)

    def open_once(_):
        barrier.wait()
        try:
            with open_host(lab.uri("kvm01")) as conn:
                return conn.hostname()
        except HostError as e:
            return e.plain

    for _ in range(5):
        with ThreadPoolExecutor(4) as pool:
            assert list(pool.map(open_once, range(4))) == ["kvm01"] * 4


def test_the_next_move_starts_when_one_ends_not_at_its_next_look(api, operator, lab, lab_guest, hosts, worker_process):
    # One at a time: the second move waits for kvm01's slot. It looks again
    # on its own only every SLOT_RETRY_SECONDS (5 s): the end of the first
    # move must wake it, and the end of a refused move must re-plan it, at once.
    guests = [lab_guest("kvm01", disk="shared"), lab_guest("kvm01", disk="shared")]
    Host.objects.filter(name="kvm01").update(max_outgoing=1)
    pk = evacuate(api, operator, hosts["kvm01"])
    # One planned target already has a different VM of that name: refused, then tried elsewhere.
    item = Evacuation.objects.get(pk=pk).plan[1]
    lab.make_guest(item["target_name"], item["domain_name"], bridge=False, start=False)
    worker_process(pool=True)

    evacuation = ended(pk, 120)

    assert evacuation.status == "succeeded", evacuation.error
    assert sorted(len(i["migrations"]) for i in evacuation.plan) == [1, 2]
    for name in guests:
        assert lab.where(name) != ["kvm01"]
    moves = sorted(Migration.objects.filter(evacuations=evacuation), key=lambda m: m.created_at)
    for before, after in zip(moves, moves[1:], strict=False):
        if before.finished_at and after.started_at and after.started_at > before.finished_at:
            gap = (after.started_at - before.finished_at).total_seconds()
            assert gap < 3, (
                f"move #{after.pk} started {gap:.1f} s after #{before.pk} ended: it waited for its next look"
            )


def test_an_evacuation_is_over_only_once_the_inventory_shows_where_its_vms_went(
    api, operator, lab, lab_guest, hosts, pool
):
    guests = [lab_guest("kvm01", disk="shared"), lab_guest("kvm01", disk="shared")]
    pk = evacuate(api, operator, hosts["kvm01"])

    evacuation = ended(pk, 120)

    # What a return planned this very moment would read.
    assert evacuation.status == "succeeded", evacuation.error
    where = dict(Domain.objects.filter(name__in=guests).values_list("name", "host__name"))
    assert where == {i["domain_name"]: i["target_name"] for i in evacuation.plan}


def test_an_evacuation_outlives_the_killing_of_every_worker(api, operator, lab, lab_guest, hosts, worker_process):
    # The periodic reconcile (every 5 s here) carries on what the killed pool left.
    guests = [lab_guest("kvm01", disk="shared"), lab_guest("kvm01", disk="shared")]
    before = {name: lab.last_tick(name) for name in guests}
    Host.objects.filter(name="kvm01").update(max_outgoing=1)  # one at a time
    first_pool = worker_process(pool=True, KVMWEB_SYNC_INTERVAL=5)
    pk = evacuate(api, operator, hosts["kvm01"], bandwidth_mib=16)
    first = wait_for(lambda: Evacuation.objects.get(pk=pk).migrations.first(), what="the first move")
    wait_transferring(first.pk)

    first_pool.kill(signal.SIGKILL)  # every process of the worker line, at once
    worker_process(pool=True, KVMWEB_SYNC_INTERVAL=5)
    evacuation = ended(pk, 240)

    assert evacuation.status == "succeeded", (evacuation.error, evacuation.plan)
    assert [i["state"] for i in evacuation.plan] == ["moved", "moved"]
    for name in guests:
        assert lab.where(name) != ["kvm01"]
        ticks_carry_on(lab, name, before[name])
    first.refresh_from_db()
    assert first.status == "succeeded"
    assert AuditEntry.objects.filter(migration=first, action="reconciled").exists()
