"""Only operators make kvmweb connect to a host (finding 3), and the admin
syncs after its transaction commits (finding 10)."""

import pytest
from django.db import connection

from hosts import sync
from hosts.models import Host
from tests.testdriver import write_host


@pytest.fixture
def host(db, tmp_path):
    return Host.objects.create(name="kvm01", uri=write_host(tmp_path, "kvm01", count=2))


@pytest.fixture
def synced(monkeypatch):
    """The hosts sync_host was called for (the real sync still runs)."""
    calls = []
    real = sync.sync_host

    def spy(host, *args, **kwargs):
        calls.append({"host": host.name, "in_transaction": connection.in_atomic_block})
        return real(host, *args, **kwargs)

    monkeypatch.setattr(sync, "sync_host", spy)
    return calls


def test_a_viewer_cannot_sync_through_the_api(api, viewer, host, synced):
    api.force_authenticate(viewer)
    response = api.post(f"/api/hosts/{host.pk}/sync/")
    assert response.status_code == 403
    assert "Only operators" in response.json()["detail"]
    assert synced == []


def test_a_viewer_cannot_sync_from_the_host_page(client, viewer, host, synced):
    client.force_login(viewer)
    assert "Sync now" not in client.get(f"/hosts/{host.name}/").content.decode()
    assert client.post(f"/hosts/{host.name}/sync/").status_code == 403
    assert synced == []


def test_staff_who_are_not_operators_cannot_sync_in_the_admin(client, viewer, host, synced):
    from django.contrib.auth.models import Permission

    viewer.is_staff = True
    viewer.save()
    viewer.user_permissions.add(*Permission.objects.filter(codename__in=["view_host", "change_host"]))
    client.force_login(viewer)
    changelist = client.get("/admin/hosts/host/").content.decode()
    assert "sync_now" not in changelist
    client.post(
        "/admin/hosts/host/",
        {"action": "sync_now", "_selected_action": [str(host.pk)], "index": "0", "select_across": "0"},
    )
    assert synced == []


def test_an_operator_syncs_through_the_api_and_the_page(api, client, operator, host, synced):
    api.force_authenticate(operator)
    assert api.post(f"/api/hosts/{host.pk}/sync/").status_code == 200
    client.force_login(operator)
    assert client.post(f"/hosts/{host.name}/sync/").status_code == 302
    assert [c["host"] for c in synced] == ["kvm01", "kvm01"]


@pytest.mark.django_db(transaction=True)
def test_the_admin_syncs_a_new_host_after_its_transaction_commits(client, owner, tmp_path, synced):
    client.force_login(owner)
    uri = write_host(tmp_path, "kvm02", count=1)
    response = client.post(
        "/admin/hosts/host/add/",
        {"name": "kvm02", "uri": uri, "max_incoming": "2", "max_outgoing": "2", **inline_management()},
        follow=True,
    )
    assert response.status_code == 200
    assert synced == [{"host": "kvm02", "in_transaction": False}]
    assert Host.objects.get(name="kvm02").domains.count() == 1


def inline_management():
    data = {}
    for prefix in ("pools", "networks", "domains"):
        data.update({f"{prefix}-TOTAL_FORMS": "0", f"{prefix}-INITIAL_FORMS": "0"})
    return data
