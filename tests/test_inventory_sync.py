"""Inventory sync against libvirt's test driver: what it creates, updates, moves and keeps."""

import re

import pytest

from hosts.models import Domain, Host, HostStatus, Network, StoragePool
from hosts.sync import sync_host
from tests.testdriver import domain_uuid, write_host

pytestmark = pytest.mark.django_db


def register(name, uri):
    return Host.objects.create(name=name, uri=uri)


def test_sync_creates_host_facts_pools_networks_and_domains(tmp_path):
    host = register("kvm01", write_host(tmp_path, "kvm01", count=6))

    result = sync_host(host)

    host.refresh_from_db()
    assert result.online and result.domains == 6 and result.created == 6
    assert host.status == HostStatus.ONLINE
    assert re.fullmatch(r"\d+\.\d+\.\d+", host.libvirt_version)
    assert host.memory_total == 16384 * 1024 * 1024
    assert host.cpu_count == 4
    assert host.last_seen is not None
    assert list(StoragePool.objects.filter(host=host).values_list("name", "type")) == [("local", "dir")]
    assert list(Network.objects.filter(host=host).values_list("name", "bridge")) == [("lab-net", "br0")]
    vm = Domain.objects.get(name="kvm01-vm001")
    assert vm.state == "running" and vm.memory == 512 * 1024 * 1024 and vm.vcpus == 1
    assert vm.disks[0]["path"] == "/var/lib/libvirt/images/kvm01-vm001.qcow2"
    assert vm.disks[0]["format"] == "qcow2"
    assert vm.interfaces[0]["bridge"] == "br0"
    assert Domain.objects.get(name="kvm01-vm000").state == "shutoff"


def test_sync_updates_a_changed_domain_and_removes_one_that_is_gone(tmp_path):
    host = register("kvm01", write_host(tmp_path, "kvm01", count=3))
    sync_host(host)
    first_id = Domain.objects.get(name="kvm01-vm001").pk

    write_host(tmp_path, "kvm01", domains=[("kvm01-vm001", domain_uuid("kvm01", 1), "paused")])
    result = sync_host(host)

    assert result.removed == 2
    assert list(Domain.objects.values_list("pk", "state")) == [(first_id, "paused")]


def test_a_domain_that_shows_up_on_another_host_moves_its_row(tmp_path):
    uuid = domain_uuid("kvm01", 1)
    kvm01 = register("kvm01", write_host(tmp_path, "kvm01", domains=[("web01", uuid, "running")]))
    kvm02 = register("kvm02", write_host(tmp_path, "kvm02", domains=[]))
    sync_host(kvm01)
    sync_host(kvm02)
    row = Domain.objects.get(name="web01")
    assert row.host == kvm01

    # The VM moved: it is now defined on kvm02 and no longer on kvm01.
    write_host(tmp_path, "kvm02", domains=[("web01", uuid, "running")])
    write_host(tmp_path, "kvm01", domains=[])
    result = sync_host(kvm02)
    sync_host(kvm01)

    assert result.moved == 1
    moved = Domain.objects.get(name="web01")
    assert moved.pk == row.pk and moved.host == kvm02
    assert Domain.objects.count() == 1


def test_an_unreachable_host_is_marked_offline_and_keeps_its_inventory(tmp_path):
    host = register("kvm01", write_host(tmp_path, "kvm01", count=4))
    sync_host(host)
    last_seen = Host.objects.get(pk=host.pk).last_seen

    # Point it at a port where nothing listens: the host has gone away.
    host.uri = "qemu+tcp://127.0.0.1:1/system"
    host.save()
    result = sync_host(host, timeout=2)

    host.refresh_from_db()
    assert not result.online
    assert host.status == HostStatus.OFFLINE
    assert "could not reach libvirtd on 127.0.0.1 port 1" in host.status_reason
    # Every user sees this: it does not tell a closed port from a filtered one.
    assert "refused" not in (host.status_reason + host.status_detail).lower()
    assert host.last_seen == last_seen
    assert Domain.objects.filter(host=host).count() == 4
    assert StoragePool.objects.filter(host=host).count() == 1


def test_a_host_that_comes_back_is_online_again(tmp_path):
    uri = write_host(tmp_path, "kvm01", count=1)
    host = register("kvm01", "qemu+tcp://127.0.0.1:1/system")
    sync_host(host, timeout=2)
    assert Host.objects.get(pk=host.pk).status == HostStatus.OFFLINE

    host.uri = uri
    host.save()
    sync_host(host)

    host.refresh_from_db()
    assert host.status == HostStatus.ONLINE and host.status_reason == ""


def test_the_sync_command_syncs_named_hosts_and_refuses_unknown_ones(tmp_path, capsys):
    from django.core.management import CommandError, call_command

    register("kvm01", write_host(tmp_path, "kvm01", count=2))
    register("kvm02", write_host(tmp_path, "kvm02", count=3))

    call_command("sync_inventory", "kvm02")
    assert "kvm02: 3 domains" in capsys.readouterr().out
    assert Domain.objects.count() == 3

    with pytest.raises(CommandError, match="No such host: nope"):
        call_command("sync_inventory", "nope")
