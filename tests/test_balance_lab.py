"""Balancing a lab cluster made uneven on purpose: three hosts, six small guests
all on kvm01. The plan reaches the threshold with the fewest moves, and running
it (the Procfile's worker line, as in production) gets there: real guests, real
live moves, each still ticking on its new host."""

import pytest

from hosts.models import Host
from maintenance.models import Evacuation
from migrations_app.models import AuditEntry, Migration
from tests.migration_helpers import register_lab, sync_all, ticks_carry_on, wait_for

pytestmark = [pytest.mark.lab, pytest.mark.django_db(transaction=True)]
MiB = 1024 * 1024

GUEST_MIB = 128
CAPACITY_MIB = 6 * GUEST_MIB  # each host may promise guests 768 MiB: kvm01 starts full
VCPU_CAPACITY = 8  # each host may run 8 vCPUs; each guest has one


@pytest.fixture
def hosts(lab):
    made = register_lab(lab)
    # The lab hosts report the machine's memory and CPUs: the reserve and the
    # ratio make each host's capacity the same small, known figure.
    for host in made.values():
        host.memory_reserved_mib = host.memory_total // MiB - CAPACITY_MIB
        host.memory_ratio = 1.0
        host.cpu_ratio = VCPU_CAPACITY / host.cpu_count
        host.save(update_fields=["memory_reserved_mib", "memory_ratio", "cpu_ratio"])
    return made


@pytest.fixture
def pool(worker_process):
    """The worker line of the Procfile, running while the test runs."""
    return worker_process(pool=True)


def balance(api, user, **body):
    api.force_authenticate(user)
    return api.post("/api/cluster/balance/", body, format="json")


def ended(pk, timeout=240):
    def over():
        run = Evacuation.objects.get(pk=pk)
        return None if run.is_active else run

    return wait_for(over, timeout, interval=0.1, what=f"balance {pk} to end")


def test_an_uneven_cluster_is_balanced_with_the_fewest_moves_and_stays_so(api, operator, lab, lab_guest, hosts, pool):
    guests = [lab_guest("kvm01", disk="shared", memory_mib=GUEST_MIB) for _ in range(6)]
    before = {name: lab.last_tick(name) for name in guests}
    sync_all()

    plan = balance(api, operator, dry_run=True).json()

    # By hand: the cluster promises 6 x 128 = 768 MiB of 3 x 768 MiB, a mean of 33.3 %.
    # One guest is 16.7 points of a host, so within 10 points of the mean (23.3 % to
    # 43.3 %) a host holds exactly two: one is 16.7 %, three are 50 %. The only
    # balanced layout is 2/2/2, and kvm01 must give away four of its six:
    # the minimum is 4 moves, two to kvm02 and two to kvm03. (vCPUs agree: 6 of
    # 24 is 25 %, two per host is 25 %.)
    minimum_moves = 4
    assert plan["threshold"] == 10
    assert plan["mean"] == {"memory": 33.3, "vcpus": 25.0}
    assert plan["before"]["outside"] == ["kvm01", "kvm02", "kvm03"]
    assert len(plan["plan"]) == minimum_moves and plan["balanced"]
    assert sorted(m["target_name"] for m in plan["plan"]) == ["kvm02", "kvm02", "kvm03", "kvm03"]
    assert all(m["source_name"] == "kvm01" and m["mode"] == "live" for m in plan["plan"])
    assert all(m["predicted_seconds"] >= 1 and "memory committed" in m["why"] for m in plan["plan"])
    targets = {m["domain_name"]: m["target_name"] for m in plan["plan"]}

    response = balance(api, operator, dry_run=False)
    assert response.status_code == 202, response.content
    run = ended(response.json()["id"])

    assert (run.kind, run.status) == ("balance", "succeeded"), run.error
    took = (run.finished_at - run.started_at).total_seconds()
    print(f"balance #{run.pk}: {len(plan['plan'])} moves, predicted {run.predicted_seconds} s, took {took:.1f} s")
    assert run.progress == {"done": minimum_moves, "moved": minimum_moves, "total": minimum_moves}
    moves = list(Migration.objects.filter(evacuations=run))
    assert len(moves) == minimum_moves and {m.status for m in moves} == {"succeeded"}
    # Ordinary migrations: each checked and audited.
    assert all(m.checks and AuditEntry.objects.filter(migration=m, action="succeeded").exists() for m in moves)
    for name in guests:
        assert lab.where(name) == [targets.get(name, "kvm01")]
        ticks_carry_on(lab, name, before[name])

    # The spread recomputed from a fresh read of every host: within the threshold.
    sync_all()
    now = balance(api, operator, dry_run=True).json()
    assert now["before"]["outside"] == []
    assert now["before"]["memory_max_deviation"] <= now["threshold"]
    shares = {h["host_name"]: h["memory_percent"] for h in now["before"]["hosts"]}
    assert shares == {"kvm01": 33.3, "kvm02": 33.3, "kvm03": 33.3}
    assert now["plan"] == []
    # The four it moved are cooling down: balancing leaves them where they are for now.
    assert sorted(c["domain_name"] for c in now["cooling_down"]) == sorted(targets)
    assert Host.objects.filter(maintenance=True).count() == 0
