"""The lab itself, checked before the product's tests rely on it."""

import os
import subprocess
import sys
import time

import pytest

from tests.lab import Lab, LabError, tcp_reachable

pytestmark = pytest.mark.lab

LIVE_P2P = ("VIR_MIGRATE_LIVE", "VIR_MIGRATE_PEER2PEER", "VIR_MIGRATE_PERSIST_DEST", "VIR_MIGRATE_UNDEFINE_SOURCE")


def _flags(names):
    import libvirt

    flags = 0
    for name in names:
        flags |= getattr(libvirt, name)
    return flags


def test_every_host_answers_over_tcp_under_its_own_name(lab):
    assert lab.hosts == ["kvm01", "kvm02", "kvm03"]
    uuids = set()
    for host in lab.hosts:
        assert lab.uri(host) == "qemu+tcp://%s/system" % lab.address(host)
        with lab.connection(host) as conn:
            assert conn.getHostname() == host
            assert sorted(conn.listStoragePools()) == ["local", "shared"]
            assert conn.listNetworks() == ["lab-net"]
            uuids.add(conn.getCapabilities().split("<uuid>")[1].split("<")[0])
    assert len(uuids) == 3, "hosts must have distinct host UUIDs or libvirt refuses to migrate"


def test_status_reports_every_host_answering(lab):
    status = lab.status()
    assert status["up"]
    assert {h: s["libvirtd"] for h, s in status["hosts"].items()} == {"kvm01": True, "kvm02": True, "kvm03": True}


def test_up_again_on_a_running_lab_changes_nothing(lab):
    pids = {h: lab._host(h)["pid"] for h in lab.hosts}
    lab.up()
    assert {h: lab._host(h)["pid"] for h in lab.hosts} == pids


def test_a_guest_boots_and_ticks(lab, lab_guest):
    name = lab_guest("kvm01")
    first = lab.last_tick(name)
    assert first is not None
    later = lab.wait_ticking(name, timeout=10)
    assert later[0] > first[0] and later[1] > first[1]
    assert lab.where(name) == ["kvm01"]


def test_the_shared_pool_is_shared_and_the_local_pool_only_looks_alike(lab):
    vol_xml = "<volume><name>%s</name><capacity unit='MiB'>1</capacity><target><format type='raw'/></target></volume>"
    name = "probe-%d.img" % os.getpid()
    with lab.connection("kvm01") as one, lab.connection("kvm02") as two:
        for pool_name, seen_on_kvm02 in (("shared", True), ("local", False)):
            a, b = one.storagePoolLookupByName(pool_name), two.storagePoolLookupByName(pool_name)
            assert a.XMLDesc(0).split("<path>")[1] == b.XMLDesc(0).split("<path>")[1]
            vol = a.createXML(vol_xml % name, 0)
            try:
                b.refresh(0)
                assert (name in b.listVolumes()) is seen_on_kvm02, pool_name
            finally:
                vol.delete(0)


def test_a_live_migration_carries_the_running_guest_to_the_other_host(lab, lab_guest):
    name = lab_guest("kvm01", disk="shared")
    lab.wait_ticking(name, timeout=10)
    before = lab.last_tick(name)
    with lab.connection("kvm01") as src:
        dom = src.lookupByName(name)
        started = time.monotonic()
        dom.migrateToURI3("qemu+tcp://kvm02/system", {}, _flags(LIVE_P2P))
        took = time.monotonic() - started
    assert lab.where(name) == ["kvm02"]
    with lab.connection("kvm01") as src:
        assert name not in src.listDefinedDomains(), "UNDEFINE_SOURCE left the definition"
    after = lab.wait_ticking(name, timeout=15)
    after = lab.wait_ticking(name, timeout=15)
    assert after[0] > before[0], "the counter went back: the guest restarted"
    assert after[1] > before[1], "uptime went back: the guest rebooted"
    assert os.path.exists(lab.serial_log("kvm02", name))
    print("live migration of 256 MiB took %.1f s" % took)


def test_a_disk_in_the_local_pool_is_not_taken_for_shared(lab, lab_guest):
    import libvirt

    name = lab_guest("kvm01", disk="local", bridge=False)
    with lab.connection("kvm01") as src:
        with pytest.raises(libvirt.libvirtError, match="shared storage"):
            src.lookupByName(name).migrateToURI3("qemu+tcp://kvm02/system", {}, _flags(LIVE_P2P))
    assert lab.where(name) == ["kvm01"]


def test_a_cut_link_makes_the_host_unreachable_until_it_is_restored(lab):
    lab.cut_link("kvm02")
    try:
        started = time.monotonic()
        assert not tcp_reachable(lab.address("kvm02"), timeout=3)
        with pytest.raises(LabError):
            lab.connect("kvm02", timeout=5)
        assert time.monotonic() - started < 10
        assert lab.answers("kvm01")
        # Host to host too: kvm01 cannot reach kvm02's libvirtd.
        probe = subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                lab.netns("kvm01"),
                sys.executable,
                "-c",
                "import socket,sys; s=socket.socket(); s.settimeout(2);sys.exit(s.connect_ex((sys.argv[1], 16509)))",
                lab.address("kvm02"),
            ],
            capture_output=True,
            timeout=20,
        )
        assert probe.returncode != 0
    finally:
        lab.restore_link("kvm02")
    deadline = time.monotonic() + 15
    while not lab.answers("kvm02") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert lab.answers("kvm02")


def test_libvirtd_can_be_stopped_and_started_again(lab):
    lab.stop_libvirtd("kvm02")
    assert not lab.answers("kvm02", timeout=3)
    lab.start_libvirtd("kvm02")
    assert lab.answers("kvm02")


def test_down_leaves_no_namespace_process_mount_or_link(lab):
    # A second, small lab beside the session's: one host without br0.
    small = Lab(name="%s-x" % lab.name, hosts=("kvm09",), no_bridge_on=("kvm09",))
    small.up()
    try:
        assert small._load()["subnet"] != lab._load()["subnet"]
        assert small.answers("kvm09")
        with small.connection("kvm09") as conn:
            assert conn.listNetworks() == []
        with pytest.raises(LabError, match="br0"):
            small.make_guest("kvm09", "nobridge")
        state = small._load()
        pids = [state["share_pid"]] + [h["pid"] for h in state["hosts"].values()]
        netns = small.netns("kvm09")
        in_ns = _pids_of_netns(netns)
        assert len(in_ns) >= 4  # tini, its shell, virtlogd, libvirtd
    finally:
        small.down()
    assert netns not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    for pid in pids + in_ns:
        assert not os.path.exists("/proc/%d" % pid), "process %d left behind" % pid
    with open("/proc/mounts") as f:
        assert small.dir not in f.read()
    assert not os.path.exists("/sys/class/net/%s" % state["bridge"])
    assert not os.path.exists(small.dir)
    assert lab.answers("kvm01"), "taking one lab down disturbed another"


def _pids_of_netns(netns):
    inode = os.stat("/run/netns/%s" % netns).st_ino
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat("/proc/%s/ns/net" % entry).st_ino == inode:
                    found.append(int(entry))
            except OSError:
                pass
    return found


def _ssh_key(tmp_path):
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    return key


def test_sshd_serves_each_hosts_own_key_and_root_gets_in_only_with_an_authorised_key(lab, tmp_path):
    import libvirt

    key = _ssh_key(tmp_path)
    known = tmp_path / "known_hosts"
    known.write_text("".join("%s %s\n" % (lab.address(h), lab.ssh_host_key(h)) for h in lab.hosts))
    assert lab.ssh_fingerprint("kvm01") != lab.ssh_fingerprint("kvm02")
    for host in lab.hosts:
        scanned = subprocess.run(
            ["ssh-keyscan", "-t", "ed25519", lab.address(host)], capture_output=True, text=True, check=True
        ).stdout
        assert lab.ssh_host_key(host).split()[1] in scanned
    uri = lab.ssh_uri("kvm02").replace("qemu+ssh", "qemu+libssh") + "?sshauth=privkey&keyfile=%s&known_hosts=%s" % (
        key,
        known,
    )
    with pytest.raises(libvirt.libvirtError):
        libvirt.open(uri)  # not authorised yet
    lab.authorize_key("kvm02", (tmp_path / "id_ed25519.pub").read_text())
    conn = libvirt.open(uri)
    try:
        assert conn.getHostname() == "kvm02"
    finally:
        conn.close()


def test_tls_reaches_every_host_with_the_labs_client_certificate(lab):
    import libvirt

    for host in lab.hosts:
        conn = libvirt.open(lab.tls_uri(host) + "?pkipath=" + lab.tls_client_dir)
        try:
            assert conn.getHostname() == host
        finally:
            conn.close()


@pytest.mark.parametrize("transport", ["ssh", "tls"])
def test_peer_to_peer_migration_runs_over_ssh_and_tls_between_the_hosts(lab, lab_guest, transport):
    name = lab_guest("kvm01", disk="shared")
    dest = lab.ssh_uri("kvm02") if transport == "ssh" else lab.tls_uri("kvm02")
    with lab.connection("kvm01") as src:
        src.lookupByName(name).migrateToURI3(dest, {}, _flags(LIVE_P2P))
    assert lab.where(name) == ["kvm02"]


@pytest.mark.parametrize(
    ("keys", "known_hosts", "says"),
    [(False, True, "Permission denied (publickey)"), (True, False, "Host key verification failed")],
)
def test_without_host_to_host_ssh_a_migration_fails_at_once_and_the_guest_stays(
    lab, lab_guest, keys, known_hosts, says
):
    import libvirt

    name = lab_guest("kvm01", disk="shared")
    lab.set_peer_ssh(keys=keys, known_hosts=known_hosts)
    try:
        with lab.connection("kvm01") as src:
            started = time.monotonic()
            with pytest.raises(libvirt.libvirtError) as failed:
                src.lookupByName(name).migrateToURI3(lab.ssh_uri("kvm02"), {}, _flags(LIVE_P2P))
            assert time.monotonic() - started < 5
    finally:
        lab.set_peer_ssh()
    assert says in str(failed.value)
    assert lab.where(name) == ["kvm01"]


def test_a_rotated_host_key_is_served_at_once_and_the_other_hosts_know_it(lab, lab_guest):
    before = lab.ssh_fingerprint("kvm02")
    after = lab.rotate_ssh_host_key("kvm02")
    assert after != before and after == lab.ssh_fingerprint("kvm02")
    name = lab_guest("kvm01", disk="shared")
    with lab.connection("kvm01") as src:
        src.lookupByName(name).migrateToURI3(lab.ssh_uri("kvm02"), {}, _flags(LIVE_P2P))
    assert lab.where(name) == ["kvm02"]
