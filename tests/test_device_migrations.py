"""Real guests carrying the devices real VMs carry (a CD-ROM, VNC, a serial port on TCP, a backing
chain, UEFI, a TPM, snapshots), moved between the lab's hosts: each is named by the checks before the
start, or adapted and recorded in the migration's log."""

import contextlib
import hashlib
import os
import xml.etree.ElementTree as ET

import libvirt
import pytest

from hosts.libvirt import HostError, open_host
from tests.lab import devices as lab_devices
from tests.migration_helpers import domain, register_lab, request, run, ticks_carry_on, wait_for

pytestmark = [pytest.mark.lab, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def hosts(lab):
    return register_lab(lab)


def dry_run(api, operator, name, target, source="kvm01", **fields):
    response = request(api, operator, domain(name, host=source), target, dry_run=True, **fields)
    assert response.status_code == 200, response.content
    checks = {}
    for check in response.json()["checks"]:
        checks.setdefault(check["name"], []).append(check)
    return response.json()["ok"], checks


def migrate(api, operator, name, target, source="kvm01", **fields):
    response = request(api, operator, domain(name, host=source), target, **fields)
    assert response.status_code == 201, response.content
    migration = run(response.json()["id"])
    assert migration.status == "succeeded", (migration.error, migration.error_detail)
    return migration, " ".join(e["message"] for e in migration.events)


def live_xml(lab, host, name):
    with lab.connection(host) as conn:
        return ET.fromstring(conn.lookupByName(name).XMLDesc(0))


def test_a_cd_rom_the_target_cannot_see_is_named_before_the_start_and_ejected_when_asked(
    api, operator, lab, lab_guest, hosts
):
    with lab.connection("kvm01") as conn:
        iso = lab_devices.volume(conn, "local", "tools-%s.iso" % os.getpid(), mib=1, fmt="raw")
    try:
        name = lab_guest("kvm01", disk="shared", extra_devices=[lab_devices.cdrom(iso)])
        ok, checks = dry_run(api, operator, name, hosts["kvm02"])
        assert ok is False
        [media] = checks["removable_media"]
        assert media["result"] == "fail"
        assert f"the CD-ROM sdc ({iso}) is not on storage kvm02 sees" in media["message"]
        assert "eject removable media for the migration" in media["message"]

        ok, checks = dry_run(api, operator, name, hosts["kvm02"], eject_media=True)
        assert ok is True and checks["removable_media"][0]["result"] == "warn"

        before = lab.last_tick(name)
        migration, log = migrate(api, operator, name, hosts["kvm02"], eject_media=True)
    finally:
        with lab.connection("kvm01") as conn:
            conn.storageVolLookupByPath(iso).delete(0)
    assert f"Adapted for kvm02: ejected {iso} from cdrom sdc." in log
    assert lab.where(name) == ["kvm02"]
    ticks_carry_on(lab, name, before)
    cdrom = live_xml(lab, "kvm02", name).find("devices/disk[@device='cdrom']")
    assert cdrom is not None and cdrom.find("source") is None
    with lab.connection("kvm02") as conn:
        config = ET.fromstring(conn.lookupByName(name).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    assert config.find("devices/disk[@device='cdrom']/source") is None


def test_vnc_and_a_tcp_serial_port_bound_to_the_source_listen_on_the_target_after_a_live_move(
    api, operator, lab, lab_guest, hosts
):
    source, target = lab.address("kvm01"), lab.address("kvm02")
    name = lab_guest(
        "kvm01", disk="shared", extra_devices=[lab_devices.vnc(source), lab_devices.serial_tcp(source, 4555)]
    )
    ok, checks = dry_run(api, operator, name, hosts["kvm02"])
    assert ok is True
    messages = sorted(c["message"] for c in checks["consoles"])
    assert [c["result"] for c in checks["consoles"]] == ["warn", "warn"]
    assert messages == [
        f"The VNC graphics on {source} is bound to kvm01's address: on kvm02 it will listen on {target} instead.",
        f"The serial port 1 (TCP) on {source} port 4555 is bound to kvm01's address: on kvm02 it will listen on "
        f"{target} instead.",
    ]

    # As libvirt does it unaided: QEMU on the target cannot bind, and the words say why.
    with open_host(lab.uri("kvm01")) as conn:
        with pytest.raises(HostError) as caught:
            conn.migrate(domain(name).uuid, lab.uri("kvm02"), ["live", "peer2peer"], migrate_uri=f"tcp://{target}")
    assert "could not listen for a console (VNC, SPICE) or serial port" in caught.value.plain
    assert "bound to an address the target host does not have" in caught.value.plain
    assert "Failed to bind socket: Cannot assign requested address" in caught.value.detail
    assert lab.where(name) == ["kvm01"]

    before = lab.last_tick(name)
    migration, log = migrate(api, operator, name, hosts["kvm02"])
    assert (
        f"Adapted for kvm02: VNC graphics listens on {target} instead of {source}; "
        f"serial port 1 (TCP) listens on {target} instead of {source}." in log
    )
    ticks_carry_on(lab, name, before)
    moved = live_xml(lab, "kvm02", name)
    assert moved.find("devices/graphics").get("listen") == target
    assert moved.find("devices/serial[@type='tcp']/source").get("host") == target


def test_a_backing_chain_must_be_visible_when_shared_and_is_merged_when_copied(api, operator, lab, lab_guest, hosts):
    tag = os.getpid()
    with lab.connection("kvm01") as conn:
        base = lab_devices.volume(conn, "local", f"base-{tag}.qcow2")
        top = lab_devices.volume(conn, "shared", f"top-{tag}.qcow2", backing=base)
        top2 = lab_devices.volume(conn, "shared", f"top2-{tag}.qcow2", backing=base)
    made = []
    try:
        name = lab_guest("kvm01", disk="shared", extra_devices=[lab_devices.disk(top)])
        made.append(name)
        ok, checks = dry_run(api, operator, name, hosts["kvm02"])
        assert ok is False
        [chain] = checks["backing_chain"]
        assert chain["result"] == "fail"
        assert f"Disk vdb ({top}) is built on {base}, which kvm02 does not see" in chain["message"]

        # Copied live, libvirt mirrors the whole chain into one file on the target.
        ok, checks = dry_run(api, operator, name, hosts["kvm02"], storage="copy", target_pool="local")
        assert checks["backing_chain"][0]["result"] == "warn"
        assert "the chain is flattened" in checks["backing_chain"][0]["message"]
        migrate(api, operator, name, hosts["kvm02"], storage="copy", target_pool="local")
        assert backing_of(lab, "kvm02", f"/var/lib/libvirt/images/top-{tag}.qcow2") == ""

        # Copied cold, kvmweb merges the chain itself before the copy.
        name = lab_guest("kvm01", extra_devices=[lab_devices.disk(top2)])
        made.append(name)
        migration, log = migrate(
            api, operator, name, hosts["kvm02"], mode="cold", storage="copy", target_pool="local", shutdown_timeout=30
        )
        assert f"Merged {top2} and its backing files {base} into one file." in log
        assert lab.where(name) == ["kvm02"]  # it started: nothing missing below its disk
        wait_for(lambda: lab.last_tick(name), what="the guest to tick on the target")
        assert backing_of(lab, "kvm02", f"/var/lib/libvirt/images/top2-{tag}.qcow2") == ""
    finally:
        for name in made:
            lab.remove_guest(name)
        with lab.connection("kvm01") as conn:
            for path in (top, top2, base):
                with contextlib.suppress(libvirt.libvirtError):
                    conn.storageVolLookupByPath(path).delete(0)


def backing_of(lab, host, path):
    with lab.connection(host) as conn:
        for pool in conn.listAllStoragePools(0):
            pool.refresh(0)
        vol = ET.fromstring(conn.storageVolLookupByPath(path).XMLDesc(0))
    found = vol.find("backingStore/path")
    return found.text if found is not None else ""


def state_digest(lab, host, relative):
    with open(os.path.join(lab.host_dir(host), "lib", relative), "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def test_uefi_variables_and_tpm_state_move_live_with_the_memory_and_cold_with_kvmweb(
    api, operator, lab, lab_guest, hosts
):
    name = lab_guest("kvm01", disk="shared", extra_devices=[lab_devices.tpm()], os_extra=lab_devices.uefi())
    nvram = f"qemu/nvram/{name}_VARS.fd"
    uuid = str(domain(name).uuid)
    tpm_state = f"swtpm/{uuid}/tpm2/tpm2-00.permall"
    ok, checks = dry_run(api, operator, name, hosts["kvm02"])
    [firmware] = checks["firmware"]
    assert firmware["result"] == "pass"
    assert "travel with the memory" in firmware["message"]

    migrate(api, operator, name, hosts["kvm02"])
    # libvirt 9.0 wrote the guest's variables and TPM state on the target, and left the
    # source's NVRAM file behind; the cold move back must replace it.
    assert state_digest(lab, "kvm02", nvram) == state_digest(lab, "kvm01", nvram)
    assert state_digest(lab, "kvm02", tpm_state)
    stale = os.path.join(lab.host_dir("kvm01"), "lib", nvram)
    with open(stale, "wb") as f:
        f.write(b"stale")

    # Cold: without kvmweb's copy the target would start from an empty template and a new TPM.
    # Shut off, so that no firmware or swtpm changes the files between the two readings.
    with lab.connection("kvm02") as conn:
        conn.lookupByName(name).destroy()
    ok, checks = dry_run(api, operator, name, hosts["kvm01"], source="kvm02", mode="cold")
    assert "kvmweb copies the UEFI variables" in checks["firmware"][0]["message"]
    nvram_before, tpm_before = state_digest(lab, "kvm02", nvram), state_digest(lab, "kvm02", tpm_state)
    migration, log = migrate(api, operator, name, hosts["kvm01"], source="kvm02", mode="cold")
    assert (
        f"Copied the UEFI variables (/var/lib/libvirt/{nvram}) and the TPM state "
        f"(/var/lib/libvirt/swtpm/{uuid}/tpm2) to kvm01." in log
    )
    assert state_digest(lab, "kvm01", nvram) == nvram_before
    assert state_digest(lab, "kvm01", tpm_state) == tpm_before
    with lab.connection("kvm01") as conn:
        conn.lookupByName(name).create()
    lab.wait_ticking(name)


def test_snapshots_stop_a_live_move_and_move_with_a_cold_one(api, operator, lab, lab_guest, hosts):
    name = lab_guest("kvm01", disk="shared", start=False)
    with lab.connection("kvm01") as conn:
        dom = conn.lookupByName(name)
        dom.snapshotCreateXML("<domainsnapshot><name>before-upgrade</name></domainsnapshot>", 0)
        dom.create()
    ok, checks = dry_run(api, operator, name, hosts["kvm02"])
    assert ok is False
    assert checks["snapshots"][0]["result"] == "fail"
    assert (
        "has 1 snapshot(s). libvirt refuses to move a running VM that has snapshots"
        in (checks["snapshots"][0]["message"])
    )

    migration, log = migrate(api, operator, name, hosts["kvm02"], mode="cold", force_off=True, shutdown_timeout=30)
    assert "Defined 1 snapshot(s) on kvm02 as they were on kvm01." in log
    with lab.connection("kvm02") as conn:
        dom = conn.lookupByName(name)
        assert [s.getName() for s in dom.listAllSnapshots(0)] == ["before-upgrade"]
        assert dom.snapshotCurrent(0).getName() == "before-upgrade"
