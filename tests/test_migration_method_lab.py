"""Moving faster and safer on the lab: parallel connections (multifd) for a
large guest, and the migration stream over TLS between hosts registered over
TLS; both used by libvirt and recorded on the migration."""

import pytest

from hosts.models import Host
from migrations_app.models import Migration
from tests.migration_helpers import (
    domain,
    register_lab,
    request,
    run,
    run_in_thread,
    ticks_carry_on,
    wait_transferring,
)

pytestmark = [pytest.mark.lab, pytest.mark.django_db(transaction=True)]


def register_tls(api, user, lab):
    hosts = {}
    for name in ("kvm01", "kvm02"):
        api.force_authenticate(user)
        response = api.post("/api/hosts/", {"name": name, "uri": lab.tls_uri(name)}, format="json")
        assert response.status_code == 201, response.content
        hosts[name] = Host.objects.get(name=name)
        assert hosts[name].status == "online", hosts[name].status_reason
    return hosts


def test_parallel_connections_are_used_and_recorded_for_a_large_guest(api, operator, lab, lab_guest):
    hosts = register_lab(lab)
    # "Large" kept modest for a 2-core machine: 768 MiB, 640 MiB of it filled with data.
    name = lab_guest("kvm01", disk="shared", memory_mib=768, dirty_mib=640, dirty_rate_mib=1)
    before = lab.last_tick(name)
    # A limit keeps it running long enough to look at the source's QEMU meanwhile.
    response = request(api, operator, domain(name), hosts["kvm02"], parallel_connections=4, bandwidth_mib=60)
    assert response.status_code == 201, response.content
    assert response.json()["parallel_connections"] == 4
    pk = response.json()["id"]
    thread = run_in_thread(pk)
    wait_transferring(pk)

    # libvirt really runs it with multifd over 4 channels: ask the source's QEMU.
    caps = {c["capability"]: c["state"] for c in qemu(lab, "kvm01", name, "query-migrate-capabilities")}
    channels = qemu(lab, "kvm01", name, "query-migrate-parameters")["multifd-channels"]
    thread.join(180)

    migration = Migration.objects.get(pk=pk)
    assert migration.status == "succeeded", (migration.error, migration.error_detail)
    assert caps["multifd"] is True and channels == 4
    assert "parallel" in migration.flags
    assert any("4 parallel connections" in e["message"] for e in migration.events)
    assert lab.where(name) == ["kvm02"]
    ticks_carry_on(lab, name, before)


def qemu(lab, host, name, command):
    """A QMP query of the guest's QEMU, through libvirt (read-only queries only)."""
    import json

    import libvirt_qemu

    with lab.connection(host) as conn:
        reply = libvirt_qemu.qemuMonitorCommand(conn.lookupByName(name), json.dumps({"execute": command}), 0)
    return json.loads(reply)["return"]


def test_a_live_migration_between_tls_hosts_sends_its_stream_over_tls(api, operator, lab, lab_guest, settings):
    settings.KVMWEB_TLS_DIR = lab.tls_client_dir
    hosts = register_tls(api, operator, lab)
    assert all(h.migrate_tls for h in hosts.values())  # on by default for TLS hosts
    name = lab_guest("kvm01", disk="shared")
    before = lab.last_tick(name)

    migration = run(request(api, operator, domain(name), hosts["kvm02"]).json()["id"])

    assert migration.status == "succeeded", (migration.error, migration.error_detail)
    assert "tls" in migration.flags
    check = next(c for c in migration.checks if c["name"] == "migration_tls")
    assert check["result"] == "pass" and lab.address("kvm02") in check["message"]
    assert lab.where(name) == ["kvm02"]
    ticks_carry_on(lab, name, before)

    # Turned off for a host: the next move sends the stream in clear.
    Host.objects.filter(name="kvm01").update(migrate_tls=False)
    back = run(request(api, operator, domain(name, host="kvm02"), hosts["kvm01"]).json()["id"])
    assert back.status == "succeeded", (back.error, back.error_detail)
    assert "tls" not in back.flags
    assert not any(c["name"] == "migration_tls" for c in back.checks)


def test_a_target_certificate_that_does_not_name_the_migration_address_fails_the_check_plainly(
    api, operator, lab, lab_guest, settings, monkeypatch
):
    settings.KVMWEB_TLS_DIR = lab.tls_client_dir
    hosts = register_tls(api, operator, lab)
    name = lab_guest("kvm01", disk="shared")
    # The data would go to an address kvm02's certificate does not name (its
    # certificate names kvm02 and its own address only).
    address = Host.address
    monkeypatch.setattr(Host, "address", lambda self: "10.255.255.1" if self.name == "kvm02" else address(self))

    migration = run(request(api, operator, domain(name), hosts["kvm02"]).json()["id"])

    assert migration.status == "failed"
    check = next(c for c in migration.checks if c["name"] == "migration_tls")
    assert check["result"] == "fail"
    assert "does not name that address" in check["message"] and "10.255.255.1" in check["message"]
    assert "subject alternative names" in check["message"]
    assert lab.where(name) == ["kvm01"]
    assert Migration.objects.get(pk=migration.pk).error_code == "preflight"
