"""The host page lists leftover volumes; operators reach the removal through a confirmation."""

import pytest

from hosts.models import StoragePool

pytestmark = pytest.mark.django_db


@pytest.fixture
def leftover(testdriver_hosts):
    """kvm02's pool holds a copy of kvm01-vm001's disk that no VM on kvm02 uses
    (written into the inventory as a sync would, from the pool's listing)."""
    kvm01, kvm02 = testdriver_hosts
    pool = StoragePool.objects.get(host=kvm02, name="local")
    path = f"{pool.target_path}/kvm01-vm001.qcow2"
    pool.volumes = [
        {"name": "kvm01-vm001.qcow2", "path": path, "capacity": 2 << 30, "allocation": 1 << 20},
        {"name": "unrelated.iso", "path": f"{pool.target_path}/unrelated.iso", "capacity": 1, "allocation": 1},
    ]
    pool.save()
    return kvm02


def test_the_host_page_lists_a_leftover_with_a_remove_button_for_operators(client, operator, viewer, leftover):
    client.force_login(operator)
    page = client.get("/hosts/kvm02/").content.decode()
    assert "Leftover volumes" in page and "kvm01-vm001.qcow2" in page
    assert "not used by any VM here; kvm01-vm001 is on kvm01" in page
    assert "unrelated.iso" not in page  # named like no VM's disk: not a leftover
    assert "/hosts/kvm02/volumes/remove/?pool=local&amp;name=kvm01-vm001.qcow2" in page

    confirm = client.get("/hosts/kvm02/volumes/remove/?pool=local&name=kvm01-vm001.qcow2").content.decode()
    assert "Yes, remove it" in confirm and "deletes the file on kvm02 for good" in confirm

    client.force_login(viewer)
    page = client.get("/hosts/kvm02/").content.decode()
    assert "kvm01-vm001.qcow2" in page and "volumes/remove/" not in page
    assert (
        client.post("/hosts/kvm02/volumes/remove/", {"pool": "local", "name": "kvm01-vm001.qcow2"}).status_code == 403
    )


def test_the_api_shows_leftovers_and_the_vms_own_host_has_none(api, viewer, testdriver_hosts, leftover):
    kvm01, kvm02 = testdriver_hosts
    api.force_authenticate(viewer)
    [left] = api.get(f"/api/hosts/{kvm02.pk}/").json()["leftovers"]
    assert (left["name"], left["vm"], left["vm_host"], left["migration"]) == (
        "kvm01-vm001.qcow2",
        "kvm01-vm001",
        "kvm01",
        None,
    )
    assert api.get(f"/api/hosts/{kvm01.pk}/").json()["leftovers"] == []


def test_the_old_delete_source_volumes_field_is_refused_by_name(api, operator, testdriver_hosts):
    from hosts.models import Domain

    kvm01, kvm02 = testdriver_hosts
    api.force_authenticate(operator)
    body = {
        "domain": Domain.objects.get(name="kvm01-vm001").pk,
        "target_host": kvm02.pk,
        "mode": "cold",
        "storage": "copy",
        "delete_source_volumes": False,
    }
    response = api.post("/api/migrations/", body, format="json")
    assert response.status_code == 400
    assert "keep_source_volumes" in response.json()["delete_source_volumes"][0]
