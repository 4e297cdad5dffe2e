"""The prediction where people read it: one sentence on the migration form's
checks, and predicted beside actual on a succeeded migration's page."""

import pytest

from hosts.models import Domain
from tests.migration_helpers import migration_for

pytestmark = pytest.mark.django_db

MiB = 1024 * 1024


def test_the_form_says_the_prediction_in_one_sentence_with_its_figures(client, operator, testdriver_hosts):
    kvm01, kvm02 = testdriver_hosts
    vm = Domain.objects.get(name="kvm01-vm001")
    client.force_login(operator)
    data = {"domain": vm.pk, "target_host": kvm02.pk, "mode": "live", "storage": "shared", "policy": "auto"}
    data.update(shutdown_timeout="120", bandwidth_mib="8", check="1")

    page = client.post("/migrations/new/", data).content.decode()

    # Nothing measured yet: taken as idle; the limit is the sending rate: one pass of its memory at 8 MiB/s.
    assert vm.max_memory == 512 * MiB
    assert "data-prediction" in page
    # 1 s of setup, 512 MiB at 8 MiB/s; libvirt counts 3 passes (the first sync, the pass, the stop-and-copy).
    assert "Automatic chose plain pre-copy: it converges as it is (about 65 s, 3 passes, ~30 ms paused)." in page
    assert "the bandwidth limit of 8 MiB/s" in page and "nothing measured yet" in page


def test_a_succeeded_migration_shows_what_was_predicted_beside_what_happened(client, viewer, testdriver_hosts):
    kvm01, kvm02 = testdriver_hosts
    vm = Domain.objects.get(name="kvm01-vm001")
    migration = migration_for(vm, kvm02)
    migration.start_checking()
    migration.record_prediction({"seconds": 14.2, "downtime_ms": 80, "passes": 3, "converges": True})
    migration.start()
    migration.succeed({"time_ms": 12000, "downtime_ms": 95, "iterations": 4})
    client.force_login(viewer)

    page = client.get(migration.get_absolute_url()).content.decode()

    assert "12 s (predicted 14 s)" in page
    assert "95 ms (predicted 80 ms)" in page
    assert "4 (predicted 3)" in page


def test_the_api_gives_the_prediction_with_its_figures(api, viewer, testdriver_hosts):
    kvm01, kvm02 = testdriver_hosts
    vm = Domain.objects.get(name="kvm01-vm001")
    migration = migration_for(vm, kvm02)
    figures = {"dirty_rate_bps": {"value": 8 * MiB, "source": "migration #1 (pass by pass)"}}
    migration.record_prediction({"seconds": 14.2, "downtime_ms": 80, "passes": 3, "inputs": figures})
    api.force_authenticate(viewer)

    body = api.get(f"/api/migrations/{migration.pk}/").json()

    assert body["predicted_seconds"] == 14.2 and body["predicted_downtime_ms"] == 80 and body["predicted_passes"] == 3
    assert body["prediction"]["inputs"] == figures
