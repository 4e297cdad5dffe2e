"""Rolling maintenance over two lab hosts, carried out by the Procfile's worker
line, which is killed half-way and started again: every VM comes home."""

import signal

import pytest

from hosts.models import Domain, Host
from maintenance.models import HostStep, RollingHost, RollingMaintenance
from migrations_app.models import AuditEntry
from tests.migration_helpers import register_lab, sync_all, ticks_carry_on, wait_for, wait_transferring

pytestmark = [pytest.mark.lab, pytest.mark.django_db(transaction=True)]


def entry(pk, host):
    return RollingHost.objects.select_related("evacuation", "return_evacuation").get(rolling_id=pk, host_name=host)


def reaches(pk, host, state, timeout=180):
    def there():
        row = entry(pk, host)
        assert row.state not in (HostStep.FAILED, HostStep.STOPPED), (row.state, row.note)
        return row if row.state == state else None

    try:
        return wait_for(there, timeout, interval=0.2, what=f"{host} to be {state}")
    except AssertionError as e:
        rows = [
            (
                r.host_name,
                r.state,
                r.note,
                r.evacuation and r.evacuation.status,
                r.return_evacuation and r.return_evacuation.status,
            )
            for r in RollingHost.objects.filter(rolling_id=pk).select_related("evacuation", "return_evacuation")
        ]
        raise AssertionError(f"{e}; where it is: {rows}") from None


def test_a_rolling_maintenance_over_two_hosts_brings_every_vm_home(api, operator, lab, lab_guest, worker_process):
    hosts = register_lab(lab)
    home = {
        lab_guest("kvm01", disk="shared", memory_mib=128): "kvm01",
        lab_guest("kvm02", disk="shared", memory_mib=128): "kvm02",
    }
    before = {name: lab.last_tick(name) for name in home}
    sync_all()
    # Reconcile every 5 s: the net that carries on what a killed worker left.
    pool = worker_process(pool=True, KVMWEB_SYNC_INTERVAL=5)
    api.force_authenticate(operator)

    # 16 MiB/s: each move takes seconds, time to kill the workers during one.
    body = {"hosts": [hosts["kvm01"].pk, hosts["kvm02"].pk], "wait": "operator", "bandwidth_mib": 16}
    response = api.post("/api/rolling/", body, format="json")

    assert response.status_code == 202, response.content
    pk = response.json()["id"]
    reaches(pk, "kvm01", HostStep.IN_MAINTENANCE)
    # kvm01 is empty and waits for the operator; kvm02 is not touched yet.
    first, second = list(home)
    assert lab.where(first) in (["kvm02"], ["kvm03"])
    assert lab.where(second) == ["kvm02"]
    assert entry(pk, "kvm02").state == HostStep.WAITING
    body = api.get(f"/api/rolling/{pk}/").json()
    assert (body["current"], body["hosts"][0]["waiting_display"]) == (
        "kvm01",
        "Waiting for an operator to mark it done.",
    )

    assert api.post(f"/api/rolling/{pk}/done/").status_code == 202
    back = reaches(pk, "kvm01", HostStep.RETURNING, 60).return_evacuation
    move = wait_for(lambda: back.migrations.first(), what="the return's move")
    wait_transferring(move.pk)
    # Every process of the worker line dies while kvm01's VM moves back; a new line carries on.
    pool.kill(signal.SIGKILL)
    worker_process(pool=True, KVMWEB_SYNC_INTERVAL=5)

    reaches(pk, "kvm02", HostStep.IN_MAINTENANCE, 240)
    assert entry(pk, "kvm01").state == HostStep.DONE
    assert lab.where(first) == ["kvm01"]
    assert lab.where(second) in (["kvm01"], ["kvm03"])
    assert Host.objects.filter(maintenance=True).get().name == "kvm02"

    assert api.post(f"/api/rolling/{pk}/done/").status_code == 202
    rolling = wait_for(
        lambda: (r := RollingMaintenance.objects.get(pk=pk)) and not r.is_active and r,
        180,
        interval=0.2,
        what="the rolling maintenance to end",
    )

    assert (rolling.status, rolling.error) == ("succeeded", "")
    assert [(e.host_name, e.state) for e in rolling.entries.all()] == [("kvm01", "done"), ("kvm02", "done")]
    for name, host in home.items():
        assert lab.where(name) == [host]  # running there, and only there
        ticks_carry_on(lab, name, before[name])
    assert dict(Domain.objects.filter(name__in=home).values_list("name", "host__name")) == home
    assert not Host.objects.filter(maintenance=True).exists()
    for row in rolling.entries.all():
        assert (row.evacuation.status, row.return_evacuation.status) == ("succeeded", "succeeded")
    assert AuditEntry.objects.filter(action="rolling", outcome="succeeded").exists()

    # The figures the note quotes (pytest -s shows them).
    def seconds(evacuation):
        return (evacuation.finished_at - evacuation.created_at).total_seconds()

    took = [
        f"{row.host_name}: emptied in {seconds(row.evacuation):.1f} s, "
        f"VMs back in {seconds(row.return_evacuation):.1f} s"
        for row in rolling.entries.all()
    ]
    total = (rolling.finished_at - rolling.started_at).total_seconds()
    print(f"rolling maintenance: {total:.1f} s; " + "; ".join(took))
