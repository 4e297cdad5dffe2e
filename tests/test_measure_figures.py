"""The figures a prediction rests on, read from earlier migrations, each with its source."""

import pytest
from django.utils import timezone

from hosts.models import Domain
from migrations_app import measure
from migrations_app.models import Migration
from tests.migration_helpers import migration_for

pytestmark = pytest.mark.django_db

MiB = 1024 * 1024


def ended(vm, target, **fields):
    m = migration_for(vm, target, status="succeeded")
    Migration.objects.filter(pk=m.pk).update(finished_at=timezone.now(), **fields)
    return m


def test_the_sending_rate_is_what_unlimited_migrations_between_the_pair_achieved_or_the_lower_limit(
    testdriver_hosts,
):
    kvm01, kvm02 = testdriver_hosts
    vm = Domain.objects.get(name="kvm01-vm001")
    wire, free = measure.pair_throughput(kvm01, kvm02, None)
    assert wire.source.startswith("assumed") and wire.value == measure.ASSUMED_BPS

    for speed in (90, 110, 100):
        ended(vm, kvm02, stats={"speed_bps": speed * MiB})
    ended(vm, kvm02, stats={"speed_bps": 8 * MiB}, bandwidth_mib=8)  # held back by its own limit: not the link's
    wire, free = measure.pair_throughput(kvm02, kvm01, None)  # either way
    assert wire.value == free.value == 100 * MiB and wire.source == "3 earlier migration(s) between these hosts"

    wire, free = measure.pair_throughput(kvm01, kvm02, 16)
    assert wire.value == 16 * MiB and wire.source == "the bandwidth limit of 16 MiB/s"
    assert free.value == 100 * MiB  # the stop-and-copy goes without the limit


def test_the_share_of_memory_that_is_not_zero_is_the_vms_own_else_other_vms_median(testdriver_hosts):
    kvm01, kvm02 = testdriver_hosts
    vm, other = Domain.objects.filter(host=kvm01).order_by("name")[:2]
    assert measure.wire_share(vm.uuid) is None
    for share in (0.2, 0.4, 0.9):
        ended(other, kvm02, stats={"speed_bps": MiB, "wire_share": share})
    guess = measure.wire_share(vm.uuid)
    assert guess is not None and guess.value == 0.4 and guess.source == "3 other VMs' migrations"

    own = ended(vm, kvm02, stats={"speed_bps": MiB, "wire_share": 0.7}, progress={"wire_share": 0.9})
    figure = measure.wire_share(vm.uuid)
    assert figure is not None and figure.value == 0.7 and figure.source == f"migration #{own.pk}"


def test_post_copy_is_kept_for_kvm_guests_between_hosts_that_never_refused_it(testdriver_hosts):
    from migrations_app.models import AuditEntry

    assert measure.postcopy_unavailable("kvm01", "kvm02", "kvm") == ""
    assert "software-emulated guest (type 'qemu')" in measure.postcopy_unavailable("kvm01", "kvm02", "qemu")
    AuditEntry.record(
        "policy", "Post-copy is not supported.", source="kvm01", target="kvm02", decision="postcopy_unsupported"
    )
    assert measure.postcopy_unavailable("kvm01", "kvm02", "kvm") == "post-copy is not available between these hosts"
    assert measure.postcopy_unavailable("kvm02", "kvm01", "kvm") == ""  # the other way was never tried


def test_a_migrations_statistics_keep_the_share_of_memory_that_was_not_zero():
    from hosts.libvirt import JobStats
    from migrations_app.engine.progress import job_record

    # libvirt's statistics of the lab's idle 256 MiB guest: 42,206 zero pages of 4 KiB.
    raw = {"memory_total": 269230080, "memory_constant": 42206, "memory_page_size": 4096, "time_elapsed": 6100}
    record = job_record(JobStats.from_libvirt(raw, active=False), completed=True)
    assert record["wire_share"] == pytest.approx(0.358, abs=0.001)
