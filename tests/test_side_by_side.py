"""Migrations run side by side with only the Procfile's worker line running:
as many at once as the hosts' limits allow, short jobs never behind them, and
a queued one says why it waits."""

import time

import django_rq
import pytest
from rq.job import Job

from hosts.models import Host
from kvmweb.worker import refresh_inventory
from migrations_app.models import Migration
from tests.migration_helpers import domain, register_lab, request, wait_for, wait_transferring

pytestmark = [pytest.mark.lab, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def hosts(lab):
    return register_lab(lab)


def finished(pk, timeout=180):
    def over():
        m = Migration.objects.get(pk=pk)
        return m if not m.is_active else None

    return wait_for(over, timeout, interval=0.1, what=f"migration {pk} to end")


def test_a_second_migration_between_other_hosts_finishes_while_a_long_one_runs(
    api, operator, lab, lab_guest, hosts, worker_process
):
    worker_process(pool=True)
    slow, quick = lab_guest("kvm01", disk="shared"), lab_guest("kvm03", disk="shared")
    # 8 MiB/s: the 256 MiB guest takes half a minute or more.
    long = request(api, operator, domain(slow, "kvm01"), hosts["kvm02"], bandwidth_mib=8).json()
    wait_transferring(long["id"])

    asked = time.time()
    second = request(api, operator, domain(quick, "kvm03"), hosts["kvm01"])
    assert second.status_code == 201, second.content
    done = finished(second.json()["id"], 120)

    assert done.status == "succeeded", done.error
    assert Migration.objects.get(pk=long["id"]).status == "running", "the long one should still be moving"
    assert done.started_at.timestamp() - asked < 5, "the second migration waited for the first"
    assert lab.where(quick) == ["kvm01"]
    assert finished(long["id"]).status == "succeeded"
    assert lab.where(slow) == ["kvm02"]


def test_with_every_migration_slot_busy_short_jobs_and_dry_runs_are_answered(
    api, operator, lab, lab_guest, hosts, worker_process
):
    worker_process(pool=True, KVMWEB_WORKERS=1)
    slow, other = lab_guest("kvm01", disk="shared"), lab_guest("kvm03", disk="shared")
    long = request(api, operator, domain(slow, "kvm01"), hosts["kvm02"], bandwidth_mib=8).json()
    wait_transferring(long["id"])

    # A queued migration says it waits for a worker, and where it stands.
    waiting = request(api, operator, domain(other, "kvm03"), hosts["kvm01"]).json()
    reason = wait_for(
        lambda: (
            "Waiting for a worker" in (r := api.get(f"/api/migrations/{waiting['id']}/").json()["waiting_reason"]) and r
        ),
        what="the worker reason",
    )
    assert reason == "Waiting for a worker: 1 of 1 busy; 1st in line"
    assert Migration.objects.get(pk=waiting["id"]).status == "queued"

    # A sync of every host, on the short-job queue, runs now.
    job = django_rq.get_queue("default", commit_mode="auto").enqueue(refresh_inventory)
    wait_for(lambda: Job.fetch(job.id, connection=job.connection).is_finished, 30, what="the sync job")
    # And a dry run is answered.
    dry = request(api, operator, domain(other, "kvm03"), hosts["kvm02"], dry_run=True)
    assert dry.status_code == 200, dry.content
    assert Migration.objects.get(pk=long["id"]).status == "running"

    api.post(f"/api/migrations/{long['id']}/cancel/")
    assert finished(long["id"]).status == "cancelled"
    assert finished(waiting["id"]).status == "succeeded"


def test_the_hosts_limits_hold_with_the_pool(api, operator, lab, lab_guest, hosts, worker_process):
    worker_process(pool=True)
    Host.objects.filter(name="kvm01").update(max_outgoing=1)
    first_vm, second_vm = lab_guest("kvm01", disk="shared"), lab_guest("kvm01", disk="shared")
    api.force_authenticate(operator)
    # The second VM is measured first, as "Measure now" does (a short job of the
    # pool), so its pre-flight takes no dirty-rate sample of its own (some 4 s):
    # what is timed below is the wake-up, not the checks.
    measuring = api.post(f"/api/domains/{domain(second_vm, 'kvm01').pk}/measure/")
    assert measuring.status_code == 202, measuring.content
    sample = Job.fetch(measuring.json()["job"], connection=django_rq.get_connection("default"))
    wait_for(lambda: sample.get_status(refresh=True) == "finished", what="the second VM's dirty rate")
    first = request(api, operator, domain(first_vm, "kvm01"), hosts["kvm02"], bandwidth_mib=16).json()
    wait_transferring(first["id"])
    second = request(api, operator, domain(second_vm, "kvm01"), hosts["kvm03"]).json()

    reason = wait_for(
        lambda: "slot" in (r := api.get(f"/api/migrations/{second['id']}/").json()["waiting_reason"]) and r,
        what="the slot reason",
    )
    assert reason == "Waiting for a slot: kvm01 already sends 1 (limit 1); 1st in line"

    a, b = finished(first["id"]), finished(second["id"])
    assert (a.status, b.status) == ("succeeded", "succeeded"), (a.error, b.error)
    assert b.started_at >= a.finished_at, "kvm01 sent two at once"
    # Woken by the first's end, not at its next look five seconds later.
    assert (b.started_at - a.finished_at).total_seconds() < 3
