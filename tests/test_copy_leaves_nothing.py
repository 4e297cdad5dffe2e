"""Copy-storage moves leave nothing behind, a VM keeps its id through every
move, and leftovers are listed and removed through the API."""

import pytest

from hosts.models import Domain
from migrations_app.models import AuditEntry
from tests.migration_helpers import domain, register_lab, request, run, sync_all, wait_for

pytestmark = [pytest.mark.lab, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def hosts(lab):
    return register_lab(lab)


def volumes(lab, host, pool="local"):
    with lab.connection(host) as conn:
        p = conn.storagePoolLookupByName(pool)
        p.refresh(0)
        return {v.name() for v in p.listAllVolumes()}


def api_domain(api, pk):
    sync_all()
    response = api.get(f"/api/domains/{pk}/")
    assert response.status_code == 200, response.content
    return response.json()


def move(api, operator, pk, target, **fields):
    response = request(api, operator, Domain.objects.get(pk=pk), target, storage="copy", target_pool="local", **fields)
    assert response.status_code == 201, response.content
    migration = run(response.json()["id"])
    assert migration.status == "succeeded", (migration.error, migration.error_detail)
    return migration


def leftovers(api, host):
    response = api.get(f"/api/hosts/{host.pk}/")
    assert response.status_code == 200, response.content
    return response.json()["leftovers"]


def there_and_back(api, operator, lab, hosts, name, mode):
    volume = f"{name}.qcow2"
    pk = domain(name).pk
    assert volumes(lab, "kvm01") >= {volume} and volume not in volumes(lab, "kvm02")

    out = move(api, operator, pk, hosts["kvm02"], mode=mode)

    assert api_domain(api, pk)["host"] == "kvm02"  # the same id, where it is now
    assert volume in volumes(lab, "kvm02") and volume not in volumes(lab, "kvm01")
    assert out.stats["source_volumes_removed"] == [f"{hosts['kvm01'].pools.get(name='local').target_path}/{volume}"]
    assert out.stats["disk_transferred"] > 0
    assert AuditEntry.objects.filter(migration=out, action="volume").exists()
    assert leftovers(api, hosts["kvm01"]) == [] and leftovers(api, hosts["kvm02"]) == []
    if mode == "cold":
        # Started afresh on kvm02: booted far enough to hear the shutdown request.
        wait_for(lambda: (t := lab.last_tick(name)) and t[1] > 3, what=f"{name} to run on kvm02")

    back = move(api, operator, pk, hosts["kvm01"], mode=mode)

    assert api_domain(api, pk)["host"] == "kvm01"
    assert volume in volumes(lab, "kvm01") and volume not in volumes(lab, "kvm02")
    assert back.domain_id == out.domain_id == pk
    assert Domain.rows.filter(name=name).count() == 1
    return out, back


def test_a_local_disk_moves_live_there_and_back_and_its_volume_is_only_where_it_runs(
    api, operator, lab, lab_guest, hosts
):
    name = lab_guest("kvm01", disk="local")
    there_and_back(api, operator, lab, hosts, name, "live")
    assert lab.where(name) == ["kvm01"]


def test_a_local_disk_moves_cold_there_and_back_and_its_volume_is_only_where_it_runs(
    api, operator, lab, lab_guest, hosts
):
    name = lab_guest("kvm01", disk="local")
    there_and_back(api, operator, lab, hosts, name, "cold")
    assert lab.where(name) == ["kvm01"]


def test_a_request_keeping_the_source_copy_leaves_it_listed_as_a_leftover(api, operator, lab, lab_guest, hosts):
    name = lab_guest("kvm01", disk="local")
    pk = domain(name).pk

    out = move(api, operator, pk, hosts["kvm02"], keep_source_volumes=True)

    assert f"{name}.qcow2" in volumes(lab, "kvm01") and f"{name}.qcow2" in volumes(lab, "kvm02")
    sync_all()
    [left] = leftovers(api, hosts["kvm01"])
    assert (left["name"], left["pool"], left["migration"]) == (f"{name}.qcow2", "local", out.pk)
    assert left["reason"] == f"left over from migration #{out.pk}" and left["vm"] == name
    # The way back is blocked by it, and the check says which volume and how to remove it.
    api.force_authenticate(operator)
    dry = api.post(
        "/api/migrations/",
        {"domain": pk, "target_host": hosts["kvm01"].pk, "mode": "live", "storage": "copy", "dry_run": True},
        format="json",
    ).json()
    failed = next(c for c in dry["checks"] if c["name"] == "target_volumes")
    assert failed["result"] == "fail"
    assert f"left over from migration #{out.pk}" in failed["message"]
    assert f"/api/hosts/{hosts['kvm01'].pk}/remove-volume/" in failed["message"]


def test_a_leftover_is_listed_removed_through_the_api_and_refused_while_used(api, operator, lab, lab_guest, hosts):
    name = lab_guest("kvm01", disk="local")
    with lab.connection("kvm02") as conn:  # a copy made by hand, long ago
        conn.storagePoolLookupByName("local").createXML(
            f"<volume><name>{name}.qcow2</name><capacity unit='MiB'>8</capacity></volume>", 0
        )
    sync_all()
    api.force_authenticate(operator)
    [left] = leftovers(api, hosts["kvm02"])
    assert (left["name"], left["vm"], left["vm_host"]) == (f"{name}.qcow2", name, "kvm01")
    assert left["reason"] == "not used by any VM here" and left["migration"] is None
    assert leftovers(api, hosts["kvm01"]) == []  # the VM's own disk is no leftover

    # The VM's real disk, used by its definition on kvm01: refused, nothing removed.
    refused = api.post(
        f"/api/hosts/{hosts['kvm01'].pk}/remove-volume/", {"pool": "local", "name": f"{name}.qcow2"}, format="json"
    )
    assert refused.status_code == 409, refused.content
    assert "uses" in refused.json()["detail"] and f"{name}.qcow2" in volumes(lab, "kvm01")

    removed = api.post(
        f"/api/hosts/{hosts['kvm02'].pk}/remove-volume/", {"pool": "local", "name": f"{name}.qcow2"}, format="json"
    )
    assert removed.status_code == 200, removed.content
    assert removed.json()["leftovers"] == []
    assert f"{name}.qcow2" not in volumes(lab, "kvm02") and f"{name}.qcow2" in volumes(lab, "kvm01")
    entry = AuditEntry.objects.get(action="volume")
    assert entry.username == operator.username and name in entry.message and entry.source_name == "kvm02"


def test_a_viewer_cannot_remove_a_leftover(api, viewer, lab, lab_guest, hosts):
    name = lab_guest("kvm01", disk="local", start=False)
    with lab.connection("kvm02") as conn:
        conn.storagePoolLookupByName("local").createXML(
            f"<volume><name>{name}.qcow2</name><capacity unit='MiB'>8</capacity></volume>", 0
        )
    sync_all()
    api.force_authenticate(viewer)
    response = api.post(
        f"/api/hosts/{hosts['kvm02'].pk}/remove-volume/", {"pool": "local", "name": f"{name}.qcow2"}, format="json"
    )
    assert response.status_code == 403
    assert f"{name}.qcow2" in volumes(lab, "kvm02")


def test_a_return_removes_the_vms_own_recorded_leftover_first_and_says_so(api, operator, lab, lab_guest, hosts):
    from migrations_app.request import MigrationRequest
    from migrations_app.services import request_migration

    name = lab_guest("kvm01", disk="local")
    pk = domain(name).pk
    kept = move(api, operator, pk, hosts["kvm02"], keep_source_volumes=True)  # its copy stays on kvm01
    sync_all()

    req = MigrationRequest(
        domain=Domain.objects.get(pk=pk),
        target=hosts["kvm01"],
        storage="copy",
        target_pool="local",
        replace_own_leftovers=True,
    )
    back = run(request_migration(operator, req, queue=False).pk)

    assert back.status == "succeeded", (back.error, back.error_detail)
    said = [e["message"] for e in back.events if "own leftover" in e["message"]]
    assert said and f"{name}.qcow2" in said[0]
    assert AuditEntry.objects.filter(migration=back, action="volume", message__contains="own leftover").exists()
    assert lab.where(name) == ["kvm01"] and api_domain(api, pk)["host"] == "kvm01"
    assert f"{name}.qcow2" not in volumes(lab, "kvm02")  # removed after the return, by default
    assert leftovers(api, hosts["kvm01"]) == [] and leftovers(api, hosts["kvm02"]) == []
    assert kept.pk != back.pk


def test_an_evacuation_and_its_return_bring_a_local_disk_vm_home_with_no_leftovers(
    api, operator, lab, lab_guest, hosts, worker_process
):
    from maintenance.models import Evacuation

    worker_process(pool=True)  # the Procfile's worker line carries the evacuations out

    def ended(pk):
        def over():
            evacuation = Evacuation.objects.get(pk=pk)
            return None if evacuation.is_active else evacuation

        return wait_for(over, 180, interval=0.1, what=f"evacuation {pk} to end")

    name = lab_guest("kvm01", disk="local")
    pk = domain(name).pk
    api.force_authenticate(operator)
    response = api.post(f"/api/hosts/{hosts['kvm01'].pk}/maintenance/", {}, format="json")
    assert response.status_code == 202, response.content
    away = ended(response.json()["id"])
    assert away.status == "succeeded", away.error
    where = api_domain(api, pk)["host"]
    assert where != "kvm01" and f"{name}.qcow2" not in volumes(lab, "kvm01")

    response = api.post(f"/api/hosts/{hosts['kvm01'].pk}/activate/", {"return_vms": True}, format="json")
    assert response.status_code == 202, response.content
    back = ended(response.json()["id"])

    assert back.status == "succeeded", back.error
    assert lab.where(name) == ["kvm01"] and api_domain(api, pk)["host"] == "kvm01"
    assert f"{name}.qcow2" in volumes(lab, "kvm01")
    for other in ("kvm02", "kvm03"):
        assert f"{name}.qcow2" not in volumes(lab, other)
        assert leftovers(api, hosts[other]) == []
