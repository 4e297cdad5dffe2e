"""The audit log and the admin in words: actions by name, outcomes without raw
look-alike values, proper plural and SSH labels."""

import pytest

from hosts.models import Host
from migrations_app.models import AuditAction, AuditEntry

pytestmark = pytest.mark.django_db


def test_the_outcome_filter_offers_words_not_look_alike_raw_values(client, viewer):
    AuditEntry.record(AuditAction.CHECK, "Pre-flight checks: fail.", outcome="fail")
    AuditEntry.record(AuditAction.FAILED, "Migration failed.", outcome="failed")
    AuditEntry.record(AuditAction.CHECK, "Pre-flight checks: pass.", outcome="pass")
    client.force_login(viewer)
    page = client.get("/audit/").content.decode()
    assert '<option value="fail">Checks failed</option>' in page
    assert '<option value="failed">Failed</option>' in page
    assert '<option value="pass">Checks passed</option>' in page
    assert "<td>Checks failed</td>" in page and "<td>fail</td>" not in page
    filtered = client.get("/audit/", {"outcome": "fail"}).content.decode()
    assert "Pre-flight checks: fail." in filtered and "Migration failed." not in filtered


def test_the_admin_says_audit_entries_and_ssh(client, owner):
    host = Host.objects.create(name="kvm01", uri="qemu+ssh://root@192.0.2.1/system")
    client.force_login(owner)
    index = client.get("/admin/").content.decode()
    assert "Audit entries" in index and "Audit entrys" not in index
    page = client.get(f"/admin/hosts/host/{host.pk}/change/").content.decode()
    assert "SSH fingerprint" in page and "Ssh fingerprint" not in page
    assert "Pinned SSH fingerprint" in page and "Ssh pinned fingerprint" not in page
