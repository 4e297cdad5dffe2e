"""Hosts reached over SSH (kvmweb's own key, host keys confirmed by an operator)
and over TLS (a CA, kvmweb's client certificate), on the lab's real sshd and
libvirtd: inventory, live and cold migration, a changed host key, missing
host-to-host keys."""

import os
import stat
import time

import pytest

from hosts import libvirt as libvirt_client
from hosts import sshkeys
from hosts.models import Host
from hosts.sync import sync_host
from migrations_app.models import AuditEntry
from tests.migration_helpers import domain, request, run, ticks_carry_on

pytestmark = [pytest.mark.lab, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def kvmweb_ssh(lab, settings, tmp_path):
    """kvmweb with a fresh var directory: its key is made on first use and authorised as root on every host."""
    settings.VAR_DIR = tmp_path / "var"
    for host in lab.hosts:
        lab.authorize_key(host, sshkeys.public_key())
    return sshkeys.key_path()


@pytest.fixture
def kvmweb_tls(lab, settings):
    settings.KVMWEB_TLS_DIR = lab.tls_client_dir


def register(api, user, name, uri, **extra):
    api.force_authenticate(user)
    response = api.post("/api/hosts/", {"name": name, "uri": uri, **extra}, format="json")
    assert response.status_code == 201, response.content
    return Host.objects.get(name=name)


def register_ssh(lab, api, user):
    """Both lab hosts over SSH, their host keys pinned up front."""
    return {
        h: register(api, user, h, lab.ssh_uri(h), fingerprint=lab.ssh_fingerprint(h))
        for h in lab.hosts
        if h in ("kvm01", "kvm02")
    }


def test_kvmweb_makes_its_own_key_private_on_first_use(kvmweb_ssh, settings):
    key = kvmweb_ssh
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(key.parent).st_mode) == 0o700
    assert sshkeys.public_key().startswith("ssh-ed25519 ")
    assert sshkeys.key_path() == key, "made once, then reused"


def test_a_new_ssh_host_shows_its_fingerprint_and_is_read_only_after_an_operator_confirms_it(
    lab, api, operator, viewer, kvmweb_ssh
):
    host = register(api, operator, "kvm01", lab.ssh_uri("kvm01"))
    body = api.get(f"/api/hosts/{host.pk}/").json()
    assert body["host_key_state"] == "unconfirmed"
    assert body["ssh_offered_fingerprint"] == lab.ssh_fingerprint("kvm01")
    assert body["status"] == "offline" and "does not trust the SSH host key" in body["status_reason"]
    assert not host.domains.exists() and body["hostname"] == ""
    with pytest.raises(libvirt_client.HostError) as refused:  # kvmweb's known_hosts does not have it
        with libvirt_client.open_host(host.uri):
            pass
    assert refused.value.code == "host_key"

    wrong = api.post(f"/api/hosts/{host.pk}/trust/", {"fingerprint": lab.ssh_fingerprint("kvm02")}, format="json")
    assert wrong.status_code == 400 and "offers the host key" in wrong.json()["fingerprint"][0]
    api.force_authenticate(viewer)
    assert api.post(f"/api/hosts/{host.pk}/trust/", {"fingerprint": lab.ssh_fingerprint("kvm01")}).status_code == 403

    api.force_authenticate(operator)
    right = api.post(f"/api/hosts/{host.pk}/trust/", {"fingerprint": lab.ssh_fingerprint("kvm01")}, format="json")
    assert right.status_code == 200, right.content
    assert right.json()["host_key_state"] == "trusted"
    assert right.json()["status"] == "online" and right.json()["hostname"] == "kvm01"
    assert AuditEntry.objects.filter(action="host_key", message__contains=lab.ssh_fingerprint("kvm01")).exists()
    known = sshkeys.known_hosts_path().read_text()
    assert known.split() == [lab.address("kvm01"), *lab.ssh_host_key("kvm01").split()[:2]]


def test_a_fingerprint_given_at_registration_pins_the_key_and_a_wrong_one_is_refused(lab, api, operator, kvmweb_ssh):
    api.force_authenticate(operator)
    wrong = api.post(
        "/api/hosts/",
        {"name": "kvm01", "uri": lab.ssh_uri("kvm01"), "fingerprint": lab.ssh_fingerprint("kvm02")},
        format="json",
    )
    assert wrong.status_code == 400
    assert f"offers the SSH host key {lab.ssh_fingerprint('kvm01')}" in wrong.json()["fingerprint"][0]
    host = register(api, operator, "kvm01", lab.ssh_uri("kvm01"), fingerprint=lab.ssh_fingerprint("kvm01"))
    assert host.status == "online" and host.host_key_state == "trusted" and host.hostname == "kvm01"


def test_without_kvmweb_s_key_on_the_host_the_login_is_refused_in_plain_words(lab, api, operator, settings, tmp_path):
    settings.VAR_DIR = tmp_path / "other"  # a key no host knows
    host = register(api, operator, "kvm01", lab.ssh_uri("kvm01"), fingerprint=lab.ssh_fingerprint("kvm01"))
    assert host.status != "online"
    assert "refused kvmweb's login" in host.status_reason and "ssh_public_key" in host.status_reason


def test_a_changed_host_key_puts_the_host_offline_with_a_warning_until_it_is_confirmed(
    lab, api, operator, viewer, kvmweb_ssh
):
    host = register(api, operator, "kvm02", lab.ssh_uri("kvm02"), fingerprint=lab.ssh_fingerprint("kvm02"))
    assert host.status == "online"
    old = host.ssh_fingerprint
    new = lab.rotate_ssh_host_key("kvm02")

    sync_host(host)
    host.refresh_from_db()
    assert host.status == "offline" and host.host_key_state == "changed"
    assert "has CHANGED" in host.status_reason and old in host.status_reason and new in host.status_reason
    with pytest.raises(libvirt_client.HostError) as refused:
        with libvirt_client.open_host(host.uri):
            pass
    assert refused.value.code == "host_key"
    api.force_authenticate(viewer)
    seen = api.get(f"/api/hosts/{host.pk}/").json()
    assert seen["host_key_state"] == "changed" and seen["ssh_offered_fingerprint"] == new
    assert seen["status_detail"] == "", "viewers get the plain reason only"

    api.force_authenticate(operator)
    assert api.post(f"/api/hosts/{host.pk}/trust/", {"fingerprint": old}, format="json").status_code == 400
    confirmed = api.post(f"/api/hosts/{host.pk}/trust/", {"fingerprint": new}, format="json")
    assert confirmed.status_code == 200 and confirmed.json()["status"] == "online"


def test_a_guest_moves_live_and_cold_between_hosts_reached_over_ssh(lab, lab_guest, api, operator, kvmweb_ssh):
    hosts = register_ssh(lab, api, operator)
    assert all(h.status == "online" for h in hosts.values())
    name = lab_guest("kvm01", disk="shared")
    before = lab.last_tick(name)

    live = run(request(api, operator, domain(name), hosts["kvm02"]).json()["id"])
    assert live.status == "succeeded", (live.error, live.error_detail)
    assert lab.where(name) == ["kvm02"]
    assert {"pass"} == {c["result"] for c in live.checks if c["name"] == "peer_login"}
    ticks_carry_on(lab, name, before)

    cold = run(
        request(api, operator, domain(name, host="kvm02"), hosts["kvm01"], mode="cold", storage="shared").json()["id"]
    )
    assert cold.status == "succeeded", (cold.error, cold.error_detail)
    assert lab.where(name) == ["kvm01"]


def test_inventory_and_a_live_migration_over_tls(lab, lab_guest, api, operator, kvmweb_tls):
    hosts = {h: register(api, operator, h, lab.tls_uri(h)) for h in ("kvm01", "kvm02")}
    assert all(h.status == "online" and h.hostname == n for n, h in hosts.items()), [
        (h.status_reason, h.status_detail) for h in hosts.values()
    ]
    name = lab_guest("kvm01", disk="shared")
    assert domain(name).host.name == "kvm01"
    migration = run(request(api, operator, domain(name), hosts["kvm02"]).json()["id"])
    assert migration.status == "succeeded", (migration.error, migration.error_detail)
    assert lab.where(name) == ["kvm02"]


def test_tls_without_kvmweb_s_client_certificate_says_what_to_configure(lab, api, operator, settings, tmp_path):
    settings.KVMWEB_TLS_DIR = str(tmp_path)  # empty
    host = register(api, operator, "kvm01", lab.tls_uri("kvm01"))
    assert host.status != "online"
    assert "KVMWEB_TLS_DIR" in host.status_reason


@pytest.mark.parametrize("missing", ["keys", "known_hosts"])
def test_without_host_to_host_keys_the_migration_fails_fast_with_the_ssh_key_message(
    lab, lab_guest, api, operator, kvmweb_ssh, missing
):
    hosts = register_ssh(lab, api, operator)
    name = lab_guest("kvm01", disk="shared")
    lab.set_peer_ssh(**{missing: False})
    try:
        started = time.monotonic()
        migration = run(request(api, operator, domain(name), hosts["kvm02"]).json()["id"])
        took = time.monotonic() - started
        # The same, asked of libvirt directly: no pre-flight check in front.
        with libvirt_client.open_host(hosts["kvm01"].uri) as src:
            uuid = src.inventory().domains[0].uuid
            direct_started = time.monotonic()
            with pytest.raises(libvirt_client.HostError) as direct:
                src.migrate(uuid, hosts["kvm02"].uri, ["live", "peer2peer"])
            direct_took = time.monotonic() - direct_started
    finally:
        lab.set_peer_ssh()
    assert migration.status == "failed"
    failed = [c for c in migration.checks if c["result"] == "fail"]
    assert [c["name"] for c in failed] == ["peer_login"], failed
    assert "could not log in to" in failed[0]["message"] and "ssh-copy-id root@" in failed[0]["message"]
    assert "password-less login" in migration.error or "password-less login" in failed[0]["message"]
    assert direct.value.code == "peer_ssh" and "the VM stays where it was" in direct.value.plain
    assert direct_took < 3, "libvirt gives up at once; nothing to wait for"
    assert lab.where(name) == ["kvm01"]
    print(f"missing host-to-host {missing}: migration failed in {took:.1f} s, migrate() alone in {direct_took:.2f} s")


def test_a_peer_login_proved_then_lost_fails_the_migration_plainly_and_is_asked_again(
    lab, lab_guest, api, operator, kvmweb_ssh
):
    hosts = register_ssh(lab, api, operator)
    name = lab_guest("kvm01", disk="shared")
    proved = request(api, operator, domain(name), hosts["kvm02"], dry_run=True).json()
    assert {c["name"]: c["result"] for c in proved["checks"]}["peer_login"] == "pass"
    lab.set_peer_ssh(keys=False)
    try:
        # Within the proof's minutes the check trusts it; the transfer finds the login gone.
        migration = run(request(api, operator, domain(name), hosts["kvm02"]).json()["id"])
        checks = {c["name"]: c for c in migration.checks}
        assert "s ago (kvmweb asks again" in checks["peer_login"]["message"]
        assert (migration.status, migration.error_code) == ("failed", "peer_ssh"), migration.error
        assert "ssh-copy-id root@" in migration.error and f"{name} is still running on kvm01" in migration.error
        assert lab.where(name) == ["kvm01"]
        # ...and the proof is gone: the next check asks kvm01 to log in again, and fails.
        again = request(api, operator, domain(name), hosts["kvm02"], dry_run=True).json()
        peer = {c["name"]: c for c in again["checks"]}["peer_login"]
        assert peer["result"] == "fail" and "ssh-copy-id root@" in peer["message"]
    finally:
        lab.set_peer_ssh()


def test_the_host_page_shows_the_key_to_compare_and_an_operator_confirms_it_with_a_button(
    lab, api, client, operator, viewer, kvmweb_ssh
):
    host = register(api, operator, "kvm01", lab.ssh_uri("kvm01"))
    client.force_login(viewer)
    page = client.get("/hosts/kvm01/").content.decode()
    assert lab.ssh_fingerprint("kvm01") in page and "ssh-keygen -lf" in page
    assert "Confirm this host key" not in page
    assert client.post("/hosts/kvm01/trust/", {"fingerprint": lab.ssh_fingerprint("kvm01")}).status_code == 403

    client.force_login(operator)
    page = client.get("/hosts/kvm01/").content.decode()
    assert "Confirm this host key" in page
    assert sshkeys.public_key() in page, "the line to add to authorized_keys"
    response = client.post("/hosts/kvm01/trust/", {"fingerprint": lab.ssh_fingerprint("kvm01")}, follow=True)
    assert "SSH host key of kvm01 confirmed" in response.content.decode()
    host.refresh_from_db()
    assert host.host_key_state == "trusted" and host.status == "online"
