"""A VM is one Domain row for life: moves, reports arriving in any order and
a VM defined nowhere for a moment never change its id; a VM really gone is
kept as gone, with its history pointing at it."""

import pytest

from hosts.libvirt import open_host
from hosts.models import Domain, Host
from hosts.sync import store_domain, sync_host
from migrations_app.models import Migration
from tests.testdriver import domain_uuid, write_host

pytestmark = pytest.mark.django_db

UUID = domain_uuid("kvm01", 1)


@pytest.fixture
def hosts(tmp_path):
    kvm01 = Host.objects.create(name="kvm01", uri=write_host(tmp_path, "kvm01", domains=[("web01", UUID, "running")]))
    kvm02 = Host.objects.create(name="kvm02", uri=write_host(tmp_path, "kvm02", domains=[]))
    sync_host(kvm01)
    sync_host(kvm02)
    return kvm01, kvm02


def moved(tmp_path):
    """web01 now defined on kvm02 only, as after a move."""
    write_host(tmp_path, "kvm02", domains=[("web01", UUID, "running")])
    write_host(tmp_path, "kvm01", domains=[])


def info_on(host):
    with open_host(host.uri) as conn:
        return next(d for d in conn.domains() if d.uuid == UUID)


def test_the_source_reporting_first_keeps_the_row_as_gone_then_the_target_brings_it_back(tmp_path, hosts, api, viewer):
    kvm01, kvm02 = hosts
    row = Domain.objects.get(name="web01")
    migration = Migration.objects.create(
        domain=row, domain_name="web01", domain_uuid=UUID, source=kvm01, target=kvm02, mode="live", status="running"
    )
    moved(tmp_path)

    sync_host(kvm01)  # the source says it is gone before the target says it has it

    between = Domain.rows.get(uuid=UUID)
    assert between.pk == row.pk and between.state == "gone"
    assert not Domain.objects.filter(uuid=UUID).exists()  # lists and counts do not see it
    api.force_authenticate(viewer)
    body = api.get(f"/api/domains/{row.pk}/").json()
    assert (body["id"], body["state"]) == (row.pk, "gone")

    sync_host(kvm02)

    after = Domain.objects.get(uuid=UUID)
    assert after.pk == row.pk and after.host == kvm02 and after.state == "running"
    assert Domain.rows.count() == 1
    migration.refresh_from_db()
    assert migration.domain_id == row.pk
    assert api.get(f"/api/domains/{row.pk}/").json()["host"] == "kvm02"


def test_events_in_any_order_during_a_move_keep_the_id(tmp_path, hosts):
    kvm01, kvm02 = hosts
    pk = Domain.objects.get(name="web01").pk
    moved(tmp_path)
    arrived = info_on(kvm02)

    # The source's "undefined" event first, then the target's "defined".
    store_domain(kvm01, UUID, None)
    store_domain(kvm02, UUID, arrived)
    assert Domain.objects.get(uuid=UUID).pk == pk

    # And back, the other way round: the target's news before the source's.
    write_host(tmp_path, "kvm01", domains=[("web01", UUID, "running")])
    write_host(tmp_path, "kvm02", domains=[])
    store_domain(kvm01, UUID, info_on(kvm01))
    store_domain(kvm02, UUID, None)
    row = Domain.objects.get(uuid=UUID)
    assert (row.pk, row.host) == (pk, kvm01)
    assert Domain.rows.count() == 1


def test_a_vm_really_gone_is_kept_as_gone_and_out_of_the_lists(tmp_path, hosts, api, viewer, operator):
    kvm01, _ = hosts
    pk = Domain.objects.get(name="web01").pk
    write_host(tmp_path, "kvm01", domains=[])

    result = sync_host(kvm01)

    assert result.removed == 1
    assert Domain.rows.get(pk=pk).state == "gone"
    api.force_authenticate(viewer)
    assert api.get("/api/domains/").json()["count"] == 0
    assert api.get(f"/api/domains/{pk}/").json()["state"] == "gone"
    # A gone VM cannot be moved: there is nothing to move.
    api.force_authenticate(operator)
    response = api.post("/api/migrations/", {"domain": pk, "target_host": kvm01.pk, "mode": "live"}, format="json")
    assert response.status_code == 400 and "domain" in response.json()
