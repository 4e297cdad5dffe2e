"""One writer of the audit log (AuditEntry.record): every app's entries are
found by the VM's and the host's names, whichever app wrote them."""

import subprocess

import pytest

from hosts import sshkeys
from hosts.models import Host, HostKeyState
from migrations_app.models import AuditAction, AuditEntry

pytestmark = pytest.mark.django_db


def offered_key(tmp_path):
    """A real ed25519 public key, as a host's sshd would offer it."""
    path = tmp_path / "host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path.with_suffix(".pub").read_text()


def test_a_confirmed_host_key_is_found_by_the_hosts_name(api, operator, viewer, tmp_path, settings):
    settings.KVMWEB_CONNECT_TIMEOUT = 1
    key = offered_key(tmp_path)
    # An address nothing answers at: the sync after the confirmation finds the host offline, quickly.
    host = Host.objects.create(name="kvm07", uri="qemu+ssh://root@127.0.0.1:9/system")
    host.offer_host_key(key)
    host.save(update_fields=Host.SSH_FIELDS)
    api.force_authenticate(operator)
    confirmed = api.post(f"/api/hosts/{host.pk}/trust/", {"fingerprint": sshkeys.fingerprint(key)}, format="json")
    assert confirmed.status_code == 200, confirmed.content
    host.refresh_from_db()
    assert host.host_key_state == HostKeyState.TRUSTED

    api.force_authenticate(viewer)
    found = api.get("/api/audit/", {"host": "kvm07"}).json()["results"]
    assert [e["message"] for e in found] == [f"Confirmed the SSH host key of kvm07: {sshkeys.fingerprint(key)}"]
    assert found[0]["username"] == "oscar" and found[0]["action"] == AuditAction.HOST_KEY
    assert found[0]["data"]["fingerprint"] == sshkeys.fingerprint(key)
    assert api.get("/api/audit/", {"host": "kvm08"}).json()["results"] == []


def test_an_entry_is_about_a_host_or_about_a_move_not_both(operator):
    entry = AuditEntry.record(AuditAction.HOST, "kvm01 went into maintenance.", user=operator, host="kvm01")
    assert (entry.source_name, entry.target_name, entry.username) == ("kvm01", "", "oscar")
    with pytest.raises(TypeError, match="about a host, or about a move"):
        AuditEntry.record(AuditAction.HOST, "?", host="kvm01", source="kvm02", target="kvm03")


def test_a_key_confirmation_recorded_before_the_fix_is_found_too(api, viewer):
    # As kvmweb recorded them before: the host's name only in the data.
    AuditEntry(
        action=AuditAction.HOST, message="Confirmed the SSH host key of kvm09: SHA256:x", data={"host": "kvm09"}
    ).save()
    api.force_authenticate(viewer)
    assert api.get("/api/audit/", {"host": "kvm09"}).json()["count"] == 1
