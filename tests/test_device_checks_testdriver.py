"""The device checks for what the lab cannot run (PCI passthrough, macvtap, pinning to CPUs
the target lacks), on VMs defined in libvirt's test driver and read through it."""

import pytest

from hosts.models import Domain, Host
from hosts.sync import sync_host
from tests.testdriver import domain_uuid, mac_for, node_xml

pytestmark = pytest.mark.django_db

PCI_CARD = """
  <device>
    <name>pci_0000_03_00_0</name>
    <parent>computer</parent>
    <capability type='pci'><domain>0</domain><bus>3</bus><slot>0</slot><function>0</function>
      <product id='0x1533'/><vendor id='0x8086'/></capability>
  </device>"""
NIC = "<interface type='ethernet' name='{name}'><start mode='onboot'/><mac address='aa:bb:cc:dd:ee:0{i}'/></interface>"


def vm_xml(uuid_str, top="", devices=""):
    return f"""
  <domain type='test'>
    <name>vm</name>
    <uuid>{uuid_str}</uuid>
    <memory unit='MiB'>512</memory>
    {top}
    <os><type arch='x86_64'>hvm</type></os>
    <devices>
      <interface type='bridge'><mac address='{mac_for(uuid_str)}'/><source bridge='br0'/></interface>
      {devices}
    </devices>
  </domain>"""


@pytest.fixture
def make_hosts(tmp_path):
    """make_hosts(vm_top, vm_devices, target_extra) -> (vm's Domain row, target Host)."""

    def make(top="", devices="", target_extra=""):
        uuid_str = domain_uuid("kvm01", 0)
        src = tmp_path / "kvm01.xml"
        src.write_text(node_xml("kvm01", [vm_xml(uuid_str, top, devices)]))
        dst = tmp_path / "kvm02.xml"
        dst.write_text(node_xml("kvm02").replace("</node>", target_extra + "</node>"))
        hosts = [Host.objects.create(name=n, uri=f"test://{p}") for n, p in (("kvm01", src), ("kvm02", dst))]
        for host in hosts:
            sync_host(host)
        return Domain.objects.get(name="vm"), hosts[1]

    return make


def checks_of(api, operator, dom, target, **fields):
    api.force_authenticate(operator)
    body = {"domain": dom.pk, "target_host": target.pk, "mode": "live", "dry_run": True, **fields}
    response = api.post("/api/migrations/", body, format="json")
    assert response.status_code == 200, response.content
    found = {}
    for check in response.json()["checks"]:
        found.setdefault(check["name"], []).append(check)
    return found


PASSTHROUGH = (
    "<hostdev mode='subsystem' type='pci' managed='yes'><source>"
    "<address domain='0x0000' bus='0x03' slot='0x00' function='0x0'/></source></hostdev>"
)


def test_a_passed_through_pci_card_cannot_move_live(api, operator, make_hosts):
    dom, target = make_hosts(devices=PASSTHROUGH, target_extra=PCI_CARD)
    [check] = checks_of(api, operator, dom, target)["host_devices"]
    assert check["result"] == "fail"
    assert "PCI device 0000:03:00.0" in check["message"]
    assert "cannot move while the VM runs" in check["message"]
    assert check["label"] == "Passed-through devices"


def test_a_pci_card_moves_cold_only_to_a_host_that_has_it(api, operator, make_hosts):
    dom, target = make_hosts(devices=PASSTHROUGH)
    [check] = checks_of(api, operator, dom, target, mode="cold")["host_devices"]
    assert check["result"] == "fail"
    assert "kvm02 has no PCI device 0000:03:00.0" in check["message"]

    Host.objects.all().delete()
    dom, target = make_hosts(devices=PASSTHROUGH, target_extra=PCI_CARD)
    [check] = checks_of(api, operator, dom, target, mode="cold")["host_devices"]
    assert check["result"] == "warn"
    assert "kvm02 has PCI device 0000:03:00.0 as well" in check["message"]


def test_a_macvtap_interface_needs_its_host_device_on_the_target(api, operator, make_hosts):
    macvtap = "<interface type='direct'><source dev='{}' mode='bridge'/></interface>"
    dom, target = make_hosts(devices=macvtap.format("eth9"), target_extra=NIC.format(name="eth5", i=1))
    [check] = checks_of(api, operator, dom, target)["macvtap"]
    assert check["result"] == "fail"
    assert "kvm02 has no network device eth9" in check["message"]

    Host.objects.all().delete()
    dom, target = make_hosts(devices=macvtap.format("eth5"), target_extra=NIC.format(name="eth5", i=1))
    [check] = checks_of(api, operator, dom, target)["macvtap"]
    assert check["result"] == "pass", check


def test_pinning_to_cpus_and_numa_nodes_the_target_lacks_fails(api, operator, make_hosts):
    top = (
        "<vcpu cpuset='0-1'>2</vcpu><cputune><vcpupin vcpu='1' cpuset='20-23'/><emulatorpin cpuset='2'/></cputune>"
        "<numatune><memory mode='strict' nodeset='3'/></numatune>"
    )
    dom, target = make_hosts(top=top)
    [check] = checks_of(api, operator, dom, target)["pinning"]
    assert check["result"] == "fail"
    # The test driver's host of tests/testdriver.py has 4 CPUs in one NUMA cell.
    assert "its vCPUs are pinned to host CPUs 0-1,20-23, and kvm02 has 0-3" in check["message"]
    assert "NUMA nodes 3, and kvm02 has 0." in check["message"]
    assert "emulator" not in check["message"]


def test_a_console_on_an_address_kvmweb_cannot_place_is_refused_unless_a_listen_address_is_set(
    api, operator, make_hosts, settings
):
    devices = (
        "<graphics type='vnc' listen='192.0.2.7'/>"
        "<serial type='tcp'><source mode='bind' host='0.0.0.0' service='4555'/><target port='0'/></serial>"
    )
    dom, target = make_hosts(devices=devices)
    consoles = checks_of(api, operator, dom, target)["consoles"]
    by_kind = {c["message"].split(" on ")[0]: c for c in consoles}
    assert by_kind["The VNC graphics"]["result"] == "fail"
    assert "192.0.2.7" in by_kind["The VNC graphics"]["message"]
    assert "KVMWEB_LISTEN_ADDRESS" in by_kind["The VNC graphics"]["message"]
    assert by_kind["The serial port 0 (TCP)"]["result"] == "pass"

    settings.KVMWEB_LISTEN_ADDRESS = "0.0.0.0"
    consoles = checks_of(api, operator, dom, target)["consoles"]
    vnc = next(c for c in consoles if "VNC" in c["message"])
    assert vnc["result"] == "warn"
    assert "it will listen on 0.0.0.0 instead" in vnc["message"]


def test_a_vm_with_a_tpm_of_the_host_cannot_move(api, operator, make_hosts):
    devices = "<tpm model='tpm-tis'><backend type='passthrough'><device path='/dev/tpm0'/></backend></tpm>"
    dom, target = make_hosts(devices=devices)
    [check] = checks_of(api, operator, dom, target, mode="cold")["firmware"]
    assert check["result"] == "fail"
    assert "uses kvm01's own TPM (passthrough /dev/tpm0)" in check["message"]
