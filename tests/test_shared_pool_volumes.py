"""A volume another host deleted from a shared pool is left out, not reported as unreadable."""

import pytest

from hosts.libvirt import open_host

pytestmark = pytest.mark.lab


def test_a_volume_deleted_by_another_host_does_not_break_reading_the_pools(lab):
    name = "vanishing.qcow2"
    with lab.connection("kvm01") as kvm01, lab.connection("kvm02") as kvm02:
        shared1 = kvm01.storagePoolLookupByName("shared")
        shared1.createXML(
            f"<volume><name>{name}</name><capacity unit='MiB'>1</capacity>"
            "<target><format type='qcow2'/></target></volume>",
            0,
        )
        shared2 = kvm02.storagePoolLookupByName("shared")
        shared2.refresh(0)  # kvm02 lists it now...
        path = shared2.storageVolLookupByName(name).path()
        shared1.storageVolLookupByName(name).delete(0)  # ...and keeps listing it after kvm01 deleted it
        assert name in shared2.listVolumes()

        with open_host(lab.uri("kvm02")) as conn:
            pools, volumes = conn.pools(with_volumes=True)

    assert "shared" in [p.name for p in pools]
    assert path not in volumes
