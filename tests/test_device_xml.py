"""Reading the host-bound devices out of a domain's XML, and the destination XML that unbinds them."""

import xml.etree.ElementTree as ET

from hosts import devices

XML = """<domain type='kvm'><name>web1</name><memory unit='GiB'>2</memory>
<vcpu placement='static' cpuset='0-3,^2'>2</vcpu>
<cputune><vcpupin vcpu='0' cpuset='4'/><emulatorpin cpuset='6-7'/></cputune>
<numatune><memory mode='strict' nodeset='1'/></numatune>
<memoryBacking><hugepages><page size='1' unit='GiB'/></hugepages></memoryBacking>
<os><type>hvm</type>
  <nvram template='/usr/share/OVMF/OVMF_VARS_4M.fd'>/var/lib/libvirt/qemu/nvram/web1_VARS.fd</nvram></os>
<devices>
  <disk type='file' device='disk'><source file='/pool/top.qcow2'/><target dev='vda'/>
    <backingStore type='file'><format type='qcow2'/><source file='/pool/mid.qcow2'/>
      <backingStore type='file'><format type='raw'/><source file='/base/base.img'/><backingStore/></backingStore>
    </backingStore></disk>
  <disk type='file' device='cdrom'><source file='/isos/tools.iso'/><target dev='sdc'/></disk>
  <disk type='file' device='floppy'><target dev='fda'/></disk>
  <graphics type='vnc' port='-1' autoport='yes' listen='10.0.0.11'>
    <listen type='address' address='10.0.0.11'/></graphics>
  <graphics type='spice' autoport='yes'><listen type='network' network='mgmt'/></graphics>
  <serial type='tcp'><source mode='bind' host='10.0.0.11' service='4555'/><target port='0'/></serial>
  <console type='tcp'><source mode='bind' host='10.0.0.11' service='4555'/><target type='serial' port='0'/></console>
  <channel type='tcp'><source mode='connect' host='10.9.9.9' service='1'/><target type='virtio' name='org.x'/></channel>
  <hostdev mode='subsystem' type='pci'><source>
    <address domain='0x0000' bus='0x3b' slot='0x00' function='0x1'/></source></hostdev>
  <hostdev mode='subsystem' type='usb'><source><vendor id='0x046d'/><product id='0xc52b'/></source></hostdev>
  <interface type='direct'><source dev='eno1' mode='bridge'/></interface>
  <tpm model='tpm-crb'><backend type='emulator' version='2.0'/></tpm>
</devices></domain>"""


def test_every_host_bound_device_is_found():
    found = devices.parse(XML)
    assert found.media == [
        devices.Medium("cdrom", "sdc", "/isos/tools.iso"),
        devices.Medium("floppy", "fda", ""),
    ]
    # The console that mirrors serial port 0 is not counted twice; a chardev that connects out is not bound.
    assert [(x.kind, x.address, x.port) for x in found.listeners] == [
        ("VNC graphics", "10.0.0.11", ""),
        ("serial port 0 (TCP)", "10.0.0.11", "4555"),
    ]
    assert [h.describe() for h in found.hostdevs] == ["PCI device 0000:3b:00.1", "USB device 046d:c52b"]
    assert found.hostdevs[0].nodedev == "pci_0000_3b_00_1"
    assert found.direct == [devices.DirectInterface("eno1", "bridge")]
    assert found.vcpu_cpus == {0, 1, 3, 4}
    assert found.emulator_cpus == {6, 7}
    assert found.numa_nodes == {1}
    assert found.chains == [devices.DiskChain("vda", "/pool/top.qcow2", ["/pool/mid.qcow2", "/base/base.img"])]
    assert found.nvram == "/var/lib/libvirt/qemu/nvram/web1_VARS.fd"
    assert found.tpm == "emulator 2.0"


def test_the_destination_xml_moves_bound_listeners_and_ejects_what_was_asked():
    new, changes = devices.adapt(XML, {"10.0.0.11": "10.0.0.12"}, eject=["sdc"])
    assert changes == [
        "ejected /isos/tools.iso from cdrom sdc",
        "VNC graphics listens on 10.0.0.12 instead of 10.0.0.11",
        "serial port 0 (TCP) listens on 10.0.0.12 instead of 10.0.0.11",
    ]
    root = ET.fromstring(new)
    assert root.find("devices/disk[@device='cdrom']/source") is None
    assert root.find("devices/disk[@device='disk']/source").get("file") == "/pool/top.qcow2"
    vnc = root.find("devices/graphics[@type='vnc']")
    assert vnc.get("listen") == "10.0.0.12" and vnc.find("listen").get("address") == "10.0.0.12"
    assert {s.get("host") for s in root.iterfind("devices/*/source[@mode='bind']")} == {"10.0.0.12"}
    assert root.find("devices/channel/source").get("host") == "10.9.9.9"
    assert devices.parse(new).listeners[0].address == "10.0.0.12"


def test_nothing_to_change_leaves_the_xml_as_it_was():
    assert devices.adapt(XML, {"192.0.2.1": "192.0.2.2"}) == (XML, [])


def test_wildcard_and_loopback_addresses_exist_on_every_host():
    assert all(devices.is_portable_address(a) for a in ("", "0.0.0.0", "::", "127.0.0.1", "::1", "localhost"))
    assert not any(devices.is_portable_address(a) for a in ("10.0.0.11", "fe80::1", "kvm01.example"))


def test_cpusets_read_and_write_as_libvirt_does():
    assert devices.parse_cpuset("0-3,^2,8, 10-11") == {0, 1, 3, 8, 10, 11}
    assert devices.format_cpuset({0, 1, 3, 8, 10, 11}) == "0-1,3,8,10-11"
    assert devices.format_cpuset(set()) == ""
