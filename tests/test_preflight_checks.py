"""Each pre-flight failure, on a lab set up to trigger it, with the sentence that says what to do."""

import contextlib
import re

import pytest

from hosts.models import Host
from tests.migration_helpers import domain, register_lab, request

pytestmark = [pytest.mark.lab, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def hosts(lab):
    return register_lab(lab)


def dry_run(api, operator, name, target, dom=None, **fields):
    response = request(api, operator, dom or domain(name), target, dry_run=True, **fields)
    assert response.status_code == 200, response.content
    body = response.json()
    return body, {c["name"]: c for c in body["checks"]}


def redefine(lab, host, name, edit):
    """Change a (shut off) guest's definition on one host."""
    with lab.connection(host) as conn:
        xml = conn.lookupByName(name).XMLDesc()
        conn.defineXML(edit(xml))


def test_a_healthy_request_passes_every_check_quickly(api, operator, lab, lab_guest, hosts):
    name = lab_guest("kvm01", disk="shared")
    body, checks = dry_run(api, operator, name, hosts["kvm02"])
    assert body["ok"] is True
    failed = {k: c["message"] for k, c in checks.items() if c["result"] == "fail"}
    assert failed == {}
    assert checks["shared_storage"]["result"] == "pass"
    # Even a dry run writes (and deletes) a probe volume: the check says so.
    assert "kvm02 saw it appear" in checks["shared_storage"]["message"]
    assert "probe volume .kvmweb-probe-" in checks["shared_storage"]["message"]
    assert "on kvm01 and deleted it again" in checks["shared_storage"]["message"]
    for expected in (
        "cpu_vendor",
        "cpu_model",
        "nx_flag",
        "architecture",
        "name_clash",
        "networks",
        "memory",
        "target_hostname",
        "domain_state",
    ):
        assert checks[expected]["result"] == "pass", checks[expected]


def test_a_pool_proved_shared_is_not_probed_again_until_the_proof_is_old(
    api, operator, lab, lab_guest, hosts, monkeypatch
):
    from migrations_app.checks import storage as preflight

    name = lab_guest("kvm01", disk="shared")
    _, first = dry_run(api, operator, name, hosts["kvm02"])
    assert "probe volume .kvmweb-probe-" in first["shared_storage"]["message"]
    # Proved a moment ago: the disks are still looked up, no probe is written.
    _, again = dry_run(api, operator, name, hosts["kvm02"])
    assert again["shared_storage"]["result"] == "pass"
    assert ".kvmweb-probe-" not in again["shared_storage"]["message"]
    assert "s ago showed the pool shared with kvm02" in again["shared_storage"]["message"]
    # Once the proof is older than the bound, the probe is written again.
    monkeypatch.setattr(preflight, "SHARED_PROOF_SECONDS", 0)
    _, later = dry_run(api, operator, name, hosts["kvm02"])
    assert "probe volume .kvmweb-probe-" in later["shared_storage"]["message"]


def test_a_peer_login_proved_is_not_probed_again_until_the_proof_is_old(
    api, operator, lab, lab_guest, hosts, monkeypatch
):
    from hosts import peer_login as preflight
    from hosts.libvirt import Connection

    probes = []
    probe = Connection.probe_peer
    monkeypatch.setattr(Connection, "probe_peer", lambda self, *a: probes.append(a) or probe(self, *a))
    name = lab_guest("kvm01", disk="shared")
    _, first = dry_run(api, operator, name, hosts["kvm02"])
    assert first["peer_login"]["message"] == "kvm01 can open kvm02's libvirt itself."
    assert len(probes) == 1
    # Proved a moment ago: kvm01 is not asked to log in to kvm02 again.
    _, again = dry_run(api, operator, name, hosts["kvm02"])
    assert again["peer_login"]["result"] == "pass"
    assert re.search(r"it did \d+ s ago \(kvmweb asks again after 5 minutes\)", again["peer_login"]["message"])
    assert len(probes) == 1
    # The other way round is another pair: asked.
    back_name = lab_guest("kvm02", disk="shared")
    _, back = dry_run(api, operator, back_name, hosts["kvm01"], dom=domain(back_name, host="kvm02"))
    assert back["peer_login"]["message"] == "kvm02 can open kvm01's libvirt itself."
    assert len(probes) == 2
    # Once the proof is older than the bound, kvm01 is asked again.
    monkeypatch.setattr(preflight, "PEER_PROOF_SECONDS", 0)
    _, later = dry_run(api, operator, name, hosts["kvm02"])
    assert later["peer_login"]["message"] == "kvm01 can open kvm02's libvirt itself."
    assert len(probes) == 3


def test_a_name_already_used_on_the_target_fails(api, operator, lab, lab_guest, hosts):
    name = lab_guest("kvm01", disk="shared")
    lab_guest("kvm02", name=name, start=False)
    body, checks = dry_run(api, operator, name, hosts["kvm02"])
    assert body["ok"] is False
    assert checks["name_clash"]["result"] == "fail"
    assert f"kvm02 already has a different VM named {name}" in checks["name_clash"]["message"]


def test_a_bridge_missing_on_the_target_fails(api, operator, lab, lab_guest, hosts):
    lab.host_exec("kvm01", "ip", "link", "add", "brx", "type", "bridge")
    lab.host_exec("kvm01", "ip", "link", "set", "brx", "up")
    try:
        name = lab_guest("kvm01", disk="shared", start=False)
        redefine(lab, "kvm01", name, lambda xml: xml.replace("bridge='br0'", "bridge='brx'"))
        with lab.connection("kvm01") as conn:
            conn.lookupByName(name).create()
        body, checks = dry_run(api, operator, name, hosts["kvm02"])
    finally:
        with contextlib.suppress(Exception):
            lab.remove_guest(name)
        lab.host_exec("kvm01", "ip", "link", "del", "brx")
    assert checks["networks"]["result"] == "fail"
    assert "kvm02 lacks bridge brx" in checks["networks"]["message"]
    assert "virsh iface-bridge" in checks["networks"]["message"]


def test_local_disks_are_not_taken_for_shared_storage(api, operator, lab, lab_guest, hosts):
    name = lab_guest("kvm01", disk="local")
    body, checks = dry_run(api, operator, name, hosts["kvm02"])
    assert checks["shared_storage"]["result"] == "fail"
    assert "not visible on kvm02" in checks["shared_storage"]["message"]

    # The same path on the target, but another file: the probe tells them apart.
    with lab.connection("kvm02") as conn:
        conn.storagePoolLookupByName("local").createXML(
            f"<volume><name>{name}.qcow2</name><capacity unit='MiB'>64</capacity>"
            "<target><format type='qcow2'/></target></volume>",
            0,
        )
    try:
        body, checks = dry_run(api, operator, name, hosts["kvm02"])
    finally:
        with lab.connection("kvm02") as conn:
            conn.storagePoolLookupByName("local").storageVolLookupByName(f"{name}.qcow2").delete(0)
    assert checks["shared_storage"]["result"] == "fail"
    assert "they are different files" in checks["shared_storage"]["message"]


def test_a_target_pool_without_room_for_the_disks_fails(api, operator, lab, lab_guest, hosts):
    lab.host_exec("kvm02", "mkdir", "-p", "/var/lib/libvirt/small")
    lab.host_exec("kvm02", "mount", "-t", "tmpfs", "-o", "size=64k", "kvmweb-small", "/var/lib/libvirt/small")
    try:
        with lab.connection("kvm02") as conn:
            pool = conn.storagePoolCreateXML(
                "<pool type='dir'><name>small</name><target><path>/var/lib/libvirt/small</path></target></pool>", 0
            )
        Host.objects.get(name="kvm02")
        name = lab_guest("kvm01", disk="local")
        body, checks = dry_run(api, operator, name, hosts["kvm02"], storage="copy", target_pool="small")
    finally:
        with contextlib.suppress(Exception):
            pool.destroy()
        lab.host_exec("kvm02", "umount", "/var/lib/libvirt/small")
    assert checks["free_space"]["result"] == "fail"
    assert re.search(r"Pool small on kvm02 has [\d.]+ KiB free; the disks hold", checks["free_space"]["message"])


def test_a_shut_off_guest_larger_than_the_target_can_start_is_warned_about(api, operator, lab, lab_guest, hosts):
    name = lab_guest("kvm01", disk="shared", start=False)
    # 1 GiB more than kvm02 has at all, whatever machine this runs on.
    too_big_kib = Host.objects.get(name="kvm02").memory_total // 1024 + 1024**2
    redefine(
        lab,
        "kvm01",
        name,
        lambda xml: re.sub(
            r"<(memory|currentMemory) unit='KiB'>\d+</\1>",
            lambda m: f"<{m.group(1)} unit='KiB'>{too_big_kib}</{m.group(1)}>",
            xml,
        ),
    )
    # Promising twice the memory is allowed here, so what stops the guest is
    # the memory free now, not the memory kvm02 has promised (tests/test_capacity.py).
    Host.objects.filter(name="kvm02").update(memory_ratio=2.0)
    body, checks = dry_run(api, operator, name, hosts["kvm02"], mode="cold")
    # Moved cold, it stays shut off on kvm02 and needs nothing there: a warning, not a failure.
    assert checks["memory"]["result"] == "warn"
    assert f"{name} is shut off and stays so on kvm02" in checks["memory"]["message"]
    assert "could not start there" in checks["memory"]["message"]
    assert "Free memory there or choose another host" in checks["memory"]["message"]


def test_a_guest_cpu_the_target_cannot_provide_fails_a_live_move(api, operator, lab, lab_guest, hosts):
    name = lab_guest("kvm01", disk="shared", start=False)
    redefine(
        lab, "kvm01", name, lambda xml: xml.replace("</model>", "</model><feature policy='require' name='avx512f'/>", 1)
    )
    body, checks = dry_run(api, operator, name, hosts["kvm02"])
    assert checks["cpu_model"]["result"] == "fail"
    assert "cannot provide the guest's CPU model" in checks["cpu_model"]["message"]
    assert checks["domain_state"]["result"] == "fail"
    assert "not running, so it cannot be migrated live" in checks["domain_state"]["message"]


def test_an_unreachable_target_fails_fast_with_a_reason(api, operator, lab, lab_guest, hosts):
    import time

    name = lab_guest("kvm01", disk="shared")
    dom = domain(name)  # while kvm02 still answers: the inventory says it is online
    lab.cut_link("kvm02")
    try:
        started = time.monotonic()
        body, checks = dry_run(api, operator, name, hosts["kvm02"], dom=dom)
        took = time.monotonic() - started
    finally:
        lab.restore_link("kvm02")
    assert checks["target_reachable"]["result"] == "fail"
    assert "kvm02 cannot be reached" in checks["target_reachable"]["message"]
    assert took < 15


def test_an_offline_target_is_refused_before_any_check(api, operator, lab, lab_guest, hosts):
    name = lab_guest("kvm01", disk="shared")
    dom = domain(name)
    Host.objects.filter(name="kvm02").update(status="offline", status_reason="No route to host.")
    response = request(api, operator, dom, Host.objects.get(name="kvm02"))
    assert response.status_code == 409
    assert "The target host kvm02 is offline: No route to host." in response.json()["detail"]
