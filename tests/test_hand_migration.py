"""A migration by hand with virsh and a split brain, on the lab's real libvirtds."""

import itertools
import os

import libvirt
import pytest
from django.db import connection

from hosts.models import Domain
from hosts.sync import sync_host
from migrations_app.models import AuditEntry
from tests.migration_helpers import register_lab, sync_all

pytestmark = [pytest.mark.lab, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def hosts(lab):
    return register_lab(lab)


def virsh(lab, host, *args, timeout=120):
    return lab.host_exec(host, "virsh", "-c", "qemu:///system", *args, timeout=timeout)


def test_a_vm_moved_with_virsh_is_where_it_runs_and_its_stale_definition_can_go(api, operator, lab, lab_guest, hosts):
    name = lab_guest("kvm01", disk="shared")
    sync_all()
    disk = Domain.objects.get(name=name).disks[0]["path"]

    # The usual way by hand: live, without --persistent or --undefinesource.
    virsh(lab, "kvm01", "migrate", "--live", name, "qemu+tcp://kvm02/system")
    assert lab.where(name) == ["kvm02"]

    for order in itertools.permutations(hosts):
        for host in order:
            sync_host(hosts[host])
        vm = Domain.objects.get(name=name)
        assert (vm.host.name, vm.state, vm.persistent) == ("kvm02", "running", False), order
        assert [(d.host.name, d.state) for d in vm.other_definitions] == [("kvm01", "shutoff")]
    moves = AuditEntry.objects.filter(action="inventory", domain_name=name)
    assert [e.message.split(" (seen")[0] for e in moves] == [f"{name} moved from kvm01 to kvm02 outside kvmweb"]

    # kvm01's copy is the only saved definition: removing it would lose the VM when it stops.
    api.force_authenticate(operator)
    url = f"/api/domains/{vm.pk}/remove-definition/"
    refused = api.post(url, {"host": "kvm01"}, format="json")
    assert refused.status_code == 409 and "only saved definition" in refused.json()["detail"]

    # Saved on kvm02 (as the usual next step by hand would), the stale one can go.
    lab.host_exec(
        "kvm02", "sh", "-c", f"virsh dumpxml --migratable {name} > /tmp/{name}.xml && virsh define /tmp/{name}.xml"
    )
    sync_host(hosts["kvm02"])
    response = api.post(url, {"host": "kvm01"}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["also_defined"] == [] and response.json()["host"] == "kvm02"
    with lab.connection("kvm01") as conn:
        with pytest.raises(libvirt.libvirtError):
            conn.lookupByName(name)
    with lab.connection("kvm02") as conn:
        dom = conn.lookupByName(name)
        assert dom.isActive() and dom.isPersistent()
    # The shared directory is the same path here as on every host.
    assert disk.startswith(lab.shared_dir) and os.path.getsize(disk) > 0


def test_a_vm_running_on_two_hosts_is_a_split_brain(lab, lab_guest, hosts):
    name = lab_guest("kvm01", disk=None, bridge=False)
    with lab.connection("kvm01") as conn:
        xml = conn.lookupByName(name).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    with lab.connection("kvm02") as conn:
        conn.createXML(xml, 0)  # the same UUID, started on kvm02 as well
    try:
        sync_all()
        sync_all()
        vm = Domain.objects.get(name=name)
        assert vm.split_brain and vm.running_on == ["kvm01", "kvm02"]
        assert AuditEntry.objects.filter(action="inventory", message__contains="(split brain)").count() == 1
    finally:
        with lab.connection("kvm02") as conn:
            conn.lookupByName(name).destroy()
        connection.close()
    sync_host(hosts["kvm02"])
    assert not Domain.objects.get(name=name).split_brain
