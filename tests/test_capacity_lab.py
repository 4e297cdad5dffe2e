"""The capacity issue's case on real hosts: two guests on kvm01, room on kvm02 for one.

The first is sent live to kvm02; while it is on its way, and after it has
landed, the second is refused there with the figures, and keeps running on
kvm01. kvm02's memory is free all along (QEMU allocates lazily), which is why
the free-memory check alone let the second one through.
"""

import pytest

from hosts import capacity
from hosts.models import Host
from migrations_app.models import Migration
from tests.migration_helpers import (
    domain,
    register_lab,
    request,
    run,
    run_in_thread,
    sync_all,
    ticks_carry_on,
    wait_transferring,
)

pytestmark = [pytest.mark.lab, pytest.mark.django_db(transaction=True)]

MiB = 1024 * 1024
GUEST_MIB = 384
# 384 MiB at 8 MiB/s takes ~48 s: time to ask for the second while the first is on its way.
SLOW = {"bandwidth_mib": 8}


def leave_room_for(host, mib):
    """Reserve all of the host's memory for itself but what it has promised and ``mib`` more."""
    figures = capacity.for_host(host)
    reserved = (figures.memory_total - figures.memory_committed - mib * MiB) // MiB
    Host.objects.filter(pk=host.pk).update(memory_reserved_mib=reserved, memory_ratio=1.0)
    return Host.objects.get(pk=host.pk)


def refused(api, operator, name, target):
    """Ask for a live move of ``name`` to ``target`` and run it as a worker would."""
    response = request(api, operator, domain(name), target)
    assert response.status_code == 201, response.content
    return run(response.json()["id"])


def test_the_second_guest_is_not_sent_where_the_first_is_on_its_way_or_has_landed(api, operator, lab, lab_guest):
    hosts = register_lab(lab)
    first = lab_guest("kvm01", disk="shared", memory_mib=GUEST_MIB)
    second = lab_guest("kvm01", disk="shared", memory_mib=GUEST_MIB)
    sync_all()
    kvm02 = leave_room_for(hosts["kvm02"], GUEST_MIB + GUEST_MIB // 2)  # one of them, not both
    before = lab.last_tick(second)

    pk = request(api, operator, domain(first), kvm02, **SLOW).json()["id"]
    thread = run_in_thread(pk)
    wait_transferring(pk)

    # While the first is on its way: kvm02 has plenty of memory free, but not
    # to promise. The check says so, and a request that goes ahead fails.
    api.force_authenticate(operator)
    body = request(api, operator, domain(second), kvm02, dry_run=True).json()
    memory = {c["name"]: c for c in body["checks"]}["memory"]
    assert memory["result"] == "fail", memory
    assert f"kvm02 cannot hold {second}" in memory["message"]
    assert Host.objects.get(pk=kvm02.pk).memory_free > 2 * GUEST_MIB * MiB, "free memory alone would let it in"
    while_on_its_way = refused(api, operator, second, kvm02)
    assert while_on_its_way.status == "failed", while_on_its_way.status
    assert f"kvm02 cannot hold {second}" in while_on_its_way.error
    assert Migration.objects.get(pk=pk).status == "running", "the first carried on"
    assert lab.where(second) == ["kvm01"]

    thread.join(180)
    assert not thread.is_alive()
    landed = Migration.objects.get(pk=pk)
    assert landed.status == "succeeded", (landed.status, landed.error)
    assert lab.where(first) == ["kvm02"]

    # After it landed: it is one of the guests kvm02 runs.
    after = refused(api, operator, second, kvm02)
    assert after.status == "failed", after.status
    assert f"kvm02 cannot hold {second}" in after.error
    assert "already promised to the guests it runs, and" in after.error
    assert lab.where(second) == ["kvm01"]
    ticks_carry_on(lab, second, before)
