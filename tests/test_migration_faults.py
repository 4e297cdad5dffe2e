"""Cancel, a dead worker, a cut link and a guest that will not converge: the VM is never lost."""

import pytest

from migrations_app import policies
from migrations_app.engine import reconcile_all
from migrations_app.models import AuditEntry, Migration
from migrations_app.policies import DowntimeStep, Policy
from tests.migration_helpers import (
    domain,
    register_lab,
    request,
    run,
    run_in_thread,
    ticks_carry_on,
    wait_for,
    wait_transferring,
)

pytestmark = [pytest.mark.lab, pytest.mark.django_db(transaction=True)]

# A bandwidth cap applies to zero pages too: 384 MiB at 8 MiB/s takes ~48 s,
# long enough to act on a migration while it runs.
SLOW = {"bandwidth_mib": 8}


@pytest.fixture
def hosts(lab):
    return register_lab(lab)


def start_slow_migration(api, operator, lab, lab_guest, hosts):
    """A live migration of a fresh guest, running in a thread, already moving data."""
    name = lab_guest("kvm01", disk="shared", memory_mib=384)
    before = lab.last_tick(name)
    pk = request(api, operator, domain(name), hosts["kvm02"], **SLOW).json()["id"]
    thread = run_in_thread(pk)
    wait_transferring(pk)
    return name, before, pk, thread


def test_cancel_mid_migration_leaves_the_guest_running_on_the_source(api, operator, lab, lab_guest, hosts):
    name, before, pk, thread = start_slow_migration(api, operator, lab, lab_guest, hosts)

    response = api.post(f"/api/migrations/{pk}/cancel/")
    assert response.status_code == 202
    thread.join(60)

    migration = Migration.objects.get(pk=pk)
    assert not thread.is_alive()
    assert migration.status == "cancelled", (migration.status, migration.error)
    assert f"{name} is still running on kvm01" in migration.error
    assert lab.where(name) == ["kvm01"]
    ticks_carry_on(lab, name, before)
    assert AuditEntry.objects.filter(migration=migration, action="cancel", username=operator.username).exists()
    # The target is left clean, ready for another try.
    with lab.connection("kvm02") as conn:
        wait_for(
            lambda: name not in [d.name() for d in conn.listAllDomains()],
            30,
            what="the incoming guest to be removed from kvm02",
        )


def test_a_killed_worker_does_not_stop_the_migration_and_reconcile_settles_it(
    api, operator, lab, lab_guest, hosts, worker_process
):
    name = lab_guest("kvm01", disk="shared", memory_mib=384)
    before = lab.last_tick(name)
    pk = request(api, operator, domain(name), hosts["kvm02"], bandwidth_mib=8).json()["id"]
    worker = worker_process()
    wait_transferring(pk, timeout=90)

    worker.kill()  # SIGKILL to the worker and its work horse

    # Peer-to-peer: libvirtd on the source carries on without the worker.
    with lab.connection("kvm01") as conn:
        assert conn.lookupByName(name).jobInfo()[0] != 0, "the migration stopped with the worker"
    results = dict(reconcile_all(force=True))
    migration = Migration.objects.get(pk=pk)

    assert results[pk] in ("adopted (still migrating)", "succeeded")
    assert migration.status == "succeeded", (migration.status, migration.error)
    assert lab.where(name) == ["kvm02"]
    ticks_carry_on(lab, name, before)
    assert domain(name, host="kvm02").host.name == "kvm02"
    assert AuditEntry.objects.filter(migration=migration, action="reconciled").exists()


def test_a_target_cut_off_mid_migration_fails_plainly_and_the_guest_stays(api, operator, lab, lab_guest, hosts):
    name, before, pk, thread = start_slow_migration(api, operator, lab, lab_guest, hosts)

    lab.cut_link("kvm02")
    try:
        thread.join(120)
        assert not thread.is_alive(), "the migration hung after the target was cut off"
    finally:
        lab.restore_link("kvm02")

    migration = Migration.objects.get(pk=pk)
    assert migration.status == "failed"
    assert f"{name} is still running on kvm01" in migration.error
    assert migration.error_detail  # libvirt's own words, kept beside the plain ones
    assert lab.where(name) == ["kvm01"]
    ticks_carry_on(lab, name, before)


@pytest.fixture
def quick_policy():
    policy = Policy(
        name="test-quick",
        label="Quick deadline (tests)",
        description="Ramps the downtime fast and gives up after 15 s.",
        downtime_steps=(DowntimeStep(0, 50), DowntimeStep(4, 80), DowntimeStep(8, 120)),
        deadline_seconds=15,
    )
    policies.POLICIES[policy.name] = policy
    yield policy
    del policies.POLICIES[policy.name]


def test_a_guest_dirtying_memory_too_fast_gets_the_policy_steps_then_the_deadline(
    api, operator, lab, lab_guest, hosts, quick_policy
):
    # The "memory changes frequently" case: 30 MiB/s of dirtying
    # against a 30 MiB/s link never converges.
    name = lab_guest("kvm01", disk="shared", memory_mib=384, dirty_mib=64, dirty_rate_mib=30)
    pk = request(api, operator, domain(name), hosts["kvm02"], policy="test-quick", bandwidth_mib=30).json()["id"]

    migration = run(pk)

    messages = [e["message"] for e in migration.events]
    downtimes = [e["downtime_ms"] for e in migration.events if e.get("decision") == "downtime"]
    assert downtimes == [50, 80, 120], messages
    # How it went is the migration's own log, never the audit log's (test_calm_policy_lab).
    assert not AuditEntry.objects.filter(migration=migration, message__contains="dirties").exists()
    assert migration.status == "failed", messages
    assert migration.error_code == "not_converging"
    assert "did not converge within the policy's 15 s" in migration.error
    assert "cold migration" in migration.error
    assert lab.where(name) == ["kvm01"]
    decisions = AuditEntry.objects.filter(migration=migration, action="policy")
    assert decisions.count() >= 4  # three downtime steps and the deadline
    # The next request for this guest is warned, from what this one measured.
    response = request(api, operator, domain(name), hosts["kvm02"], dry_run=True, bandwidth_mib=30)
    convergence = next(c for c in response.json()["checks"] if c["name"] == "convergence")
    assert convergence["result"] == "warn" and "may not converge" in convergence["message"]
