"""POST/GET /api/domains/{id}/measure/: operators start a measurement of a VM's
dirty rate as a short job; everyone reads what is known, with source and age."""

import django_rq
import pytest
from django.utils import timezone

from hosts.models import Domain
from migrations_app.models import Migration
from tests.migration_helpers import migration_for

pytestmark = pytest.mark.django_db(transaction=True)

MiB = 1024 * 1024


def test_only_operators_start_a_measurement_and_only_of_a_running_vm(api, viewer, operator, testdriver_hosts):
    running = Domain.objects.get(name="kvm01-vm001")
    stopped = Domain.objects.exclude(pk=running.pk).filter(host__name="kvm01").first()
    assert stopped is not None and stopped.state != "running"
    queue = django_rq.get_queue("default")
    queue.empty()

    api.force_authenticate(viewer)
    assert api.post(f"/api/domains/{running.pk}/measure/").status_code == 403

    api.force_authenticate(operator)
    refused = api.post(f"/api/domains/{stopped.pk}/measure/")
    assert refused.status_code == 409 and "Start it first" in refused.json()["detail"]
    started = api.post(f"/api/domains/{running.pk}/measure/")
    assert started.status_code == 202, started.content
    job = queue.fetch_job(started.json()["job"])
    assert job is not None and job.func_name == "migrations_app.jobs.measure_domain" and list(job.args) == [running.pk]
    queue.empty()


def test_what_earlier_migrations_measured_is_read_with_its_source_and_age(api, viewer, testdriver_hosts):
    kvm01, kvm02 = testdriver_hosts
    vm = Domain.objects.get(name="kvm01-vm001")
    assert api.get(f"/api/domains/{vm.pk}/measure/").status_code in (401, 403)  # login needed
    earlier = migration_for(vm, kvm02, status="succeeded")
    # Pass 1 counts what was dirtied while all memory was read: the figure is the median of pass 2 on.
    Migration.objects.filter(pk=earlier.pk).update(
        finished_at=timezone.now() - timezone.timedelta(minutes=5),
        stats={"dirty_rate_bps": 20 * MiB, "speed_bps": 64 * MiB},
        progress={"pass_dirty_rates": [[1, 40 * MiB], [2, 22 * MiB], [3, 24 * MiB], [4, 26 * MiB]]},
    )

    api.force_authenticate(viewer)
    known = api.get(f"/api/domains/{vm.pk}/measure/").json()

    assert known["history"]["value"] == 24 * MiB
    assert known["history"]["source"] == f"migration #{earlier.pk} (pass by pass)"
    assert 295 <= known["history"]["age_seconds"] <= 310
    assert "sampled" not in known


def test_the_vm_page_shows_the_figures_and_offers_operators_a_measurement(client, viewer, operator, testdriver_hosts):
    kvm01, kvm02 = testdriver_hosts
    vm = Domain.objects.get(name="kvm01-vm001")
    earlier = migration_for(vm, kvm02, status="succeeded")
    Migration.objects.filter(pk=earlier.pk).update(
        finished_at=timezone.now(), stats={"speed_bps": 64 * MiB}, progress={"pass_dirty_rates": [[2, 8 * MiB]]}
    )
    queue = django_rq.get_queue("default")
    queue.empty()

    client.force_login(viewer)
    page = client.get(vm.get_absolute_url()).content.decode()
    assert f"8.0 MiB/s (migration #{earlier.pk} (pass by pass)" in page
    assert "Measure now" not in page
    assert client.post(f"/domains/{vm.uuid}/measure/").status_code == 403

    client.force_login(operator)
    assert "Measure now" in client.get(vm.get_absolute_url()).content.decode()
    answer = client.post(f"/domains/{vm.uuid}/measure/", follow=True)
    assert "Measuring how fast kvm01-vm001 dirties its memory" in answer.content.decode()
    assert [j.func_name for j in queue.get_jobs()] == ["migrations_app.jobs.measure_domain"]
    queue.empty()
