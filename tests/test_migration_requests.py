"""Requesting, refusing and cancelling migrations, and the record they leave (no QEMU needed)."""

import inspect
from datetime import timedelta

import pytest
from django.db import IntegrityError
from django.template import Context, Template
from django.utils import timezone

from core.records import InvalidTransition
from hosts.models import Domain, Host
from hosts.sync import sync_host
from migrations_app import engine
from migrations_app.models import AuditEntry, Migration
from tests.migration_helpers import migration_for
from tests.testdriver import write_host

pytestmark = pytest.mark.django_db


@pytest.fixture
def two_hosts(tmp_path):
    hosts = {}
    for name in ("kvm01", "kvm02"):
        hosts[name] = Host.objects.create(name=name, uri=write_host(tmp_path, name, count=3))
        sync_host(hosts[name])
    return hosts


def post(api, user, dom, target, **fields):
    api.force_authenticate(user)
    return api.post(
        "/api/migrations/", {"domain": dom.pk, "target_host": target.pk, "mode": "live", **fields}, format="json"
    )


def test_viewers_cannot_migrate(api, viewer, two_hosts):
    dom = Domain.objects.get(name="kvm01-vm001")
    response = post(api, viewer, dom, two_hosts["kvm02"])
    assert response.status_code == 403
    assert "Only operators" in response.json()["detail"]
    assert not Migration.objects.exists()


def test_an_operator_request_is_queued_and_recorded(api, operator, two_hosts):
    dom = Domain.objects.get(name="kvm01-vm001")
    response = post(api, operator, dom, two_hosts["kvm02"], bandwidth_mib=50, policy="strict")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["status"] == "queued" and body["requested_by"] == operator.username
    entry = AuditEntry.objects.get(action="request")
    assert entry.user == operator and entry.username == "oscar"
    assert entry.data["policy"] == "strict" and entry.data["bandwidth_mib"] == 50
    assert api.get(f"/api/migrations/{body['id']}/").json()["status"] == "queued"


@pytest.mark.parametrize(
    "fields, field, says",
    [
        ({"mode": "warp"}, "mode", "is not a valid choice"),
        ({"policy": "yolo"}, "policy", "There is no policy 'yolo'"),
        ({"bandwidth_mib": 0}, "bandwidth_mib", "greater than or equal to 1"),
    ],
)
def test_bad_requests_say_what_is_wrong(api, operator, two_hosts, fields, field, says):
    dom = Domain.objects.get(name="kvm01-vm001")
    response = post(api, operator, dom, two_hosts["kvm02"], **fields)
    assert response.status_code == 400
    assert says in " ".join(response.json()[field])


def test_moving_a_domain_to_its_own_host_is_refused(api, operator, two_hosts):
    dom = Domain.objects.get(name="kvm01-vm001")
    response = post(api, operator, dom, two_hosts["kvm01"])
    assert response.status_code == 400
    assert "kvm01-vm001 is already on kvm01. Choose another target host." in response.json()["detail"]


def test_the_database_allows_one_active_migration_per_domain(two_hosts):
    dom = Domain.objects.get(name="kvm01-vm001")
    migration_for(dom, two_hosts["kvm02"])
    with pytest.raises(IntegrityError):
        migration_for(dom, two_hosts["kvm02"])


def test_a_finished_migration_does_not_block_the_next(two_hosts):
    dom = Domain.objects.get(name="kvm01-vm001")
    first = migration_for(dom, two_hosts["kvm02"], status="failed")
    second = migration_for(dom, two_hosts["kvm02"])
    assert first.pk != second.pk


def test_transitions_refuse_to_skip_states(two_hosts):
    m = migration_for(Domain.objects.get(name="kvm01-vm001"), two_hosts["kvm02"])
    with pytest.raises(InvalidTransition):
        m.succeed({})
    m.start_checking()
    m.start()
    assert m.started_at is not None
    m.succeed({"time_ms": 1})
    with pytest.raises(InvalidTransition, match="is succeeded; cannot go to failed"):
        m.fail("late")
    assert Migration.objects.get(pk=m.pk).status == "succeeded"


def test_a_template_cannot_change_a_migration(two_hosts):
    m = migration_for(Domain.objects.get(name="kvm01-vm001"), two_hosts["kvm02"])
    page = Template(
        "{{ m.start_checking }}{{ m.cancel }}{{ m.request_cancel }}{{ m.wait_for_slot }}{{ m.heartbeat }}"
        "{{ m.note }}{{ m.status }}"
    ).render(Context({"m": m}))

    assert page == "queued"
    m.refresh_from_db()
    assert (m.status, m.phase, m.cancel_requested, m.events) == ("queued", "", False, [])
    assert not AuditEntry.objects.exists()


def test_every_method_that_writes_a_migration_is_kept_from_templates():
    writers = [
        name
        for name, method in vars(Migration).items()
        if inspect.isfunction(method)
        and any(call in inspect.getsource(method) for call in ("self._write(", "self._transition(", ".update("))
    ]
    assert {"start", "succeed", "fail", "cancel", "request_cancel", "save_progress", "heartbeat"} <= set(writers)
    assert [name for name in writers if not getattr(Migration, name).alters_data] == []


def test_cancelling_a_queued_migration_cancels_it_at_once(api, operator, two_hosts):
    m = migration_for(Domain.objects.get(name="kvm01-vm001"), two_hosts["kvm02"])
    api.force_authenticate(operator)
    response = api.post(f"/api/migrations/{m.pk}/cancel/")
    assert response.status_code == 202
    assert response.json()["status"] == "cancelled"
    assert "Cancelled before it started" in response.json()["error"]
    again = api.post(f"/api/migrations/{m.pk}/cancel/")
    assert again.status_code == 409 and "has already cancelled" in again.json()["detail"]


def test_viewers_cannot_cancel(api, viewer, two_hosts):
    m = migration_for(Domain.objects.get(name="kvm01-vm001"), two_hosts["kvm02"])
    api.force_authenticate(viewer)
    assert api.post(f"/api/migrations/{m.pk}/cancel/").status_code == 403
    assert Migration.objects.get(pk=m.pk).status == "queued"


def test_a_host_with_its_slots_full_makes_the_next_migration_wait(two_hosts):
    kvm02 = two_hosts["kvm02"]
    Host.objects.filter(pk=kvm02.pk).update(max_incoming=1)
    first, second = (migration_for(Domain.objects.get(name=f"kvm01-vm00{i}"), kvm02) for i in (1, 2))

    assert engine.claim(first) is True
    assert engine.claim(second) is False
    second.refresh_from_db()
    assert second.status == "queued"

    first.start()
    first.succeed({})
    assert engine.claim(second) is True


def test_the_audit_log_is_append_only(api, owner, two_hosts):
    entry = AuditEntry.record("host", "something happened", user=owner)
    entry.message = "rewritten"
    with pytest.raises(PermissionError):
        entry.save()
    with pytest.raises(PermissionError):
        entry.delete()
    with pytest.raises(PermissionError):
        AuditEntry.objects.all().delete()
    with pytest.raises(PermissionError):
        AuditEntry.objects.update(message="x")
    api.force_authenticate(owner)
    assert api.delete(f"/api/audit/{entry.pk}/").status_code == 405
    assert api.patch(f"/api/audit/{entry.pk}/", {"message": "x"}, format="json").status_code == 405


def test_the_admin_cannot_change_or_delete_audit_entries(client, owner, two_hosts):
    entry = AuditEntry.record("host", "something happened", user=owner)
    client.force_login(owner)
    assert client.get(f"/admin/migrations_app/auditentry/{entry.pk}/delete/").status_code == 403
    page = client.get(f"/admin/migrations_app/auditentry/{entry.pk}/change/")
    assert page.status_code == 200 and b'name="_save"' not in page.content
    assert AuditEntry.objects.get(pk=entry.pk).message == "something happened"


def test_the_audit_api_filters_by_domain_host_user_and_date(api, viewer, operator, two_hosts):
    dom = Domain.objects.get(name="kvm01-vm001")
    post(api, operator, dom, two_hosts["kvm02"])
    AuditEntry.record("host", "unrelated")
    api.force_authenticate(viewer)
    assert api.get("/api/audit/", {"domain": "kvm01-vm001"}).json()["count"] == 1
    assert api.get("/api/audit/", {"host": "kvm02"}).json()["count"] == 1
    assert api.get("/api/audit/", {"user": "oscar"}).json()["count"] == 1
    today = timezone.localdate().isoformat()
    assert api.get("/api/audit/", {"until": today}).json()["count"] == 2  # the whole day counts
    tomorrow = (timezone.localdate() + timedelta(days=1)).isoformat()
    assert api.get("/api/audit/", {"since": tomorrow}).json()["count"] == 0
    bad = api.get("/api/audit/", {"since": "last tuesday"})
    assert bad.status_code == 400 and "is not a date" in bad.json()["since"][0]


def test_reconcile_settles_a_migration_whose_worker_died_during_checks(two_hosts):
    from django.core.management import call_command

    m = migration_for(Domain.objects.get(name="kvm01-vm001"), two_hosts["kvm02"])
    m.start_checking()
    Migration.objects.filter(pk=m.pk).update(updated_at=timezone.now() - timedelta(minutes=5))

    call_command("reconcile")

    m.refresh_from_db()
    assert m.status == "failed" and m.error_code == "worker_died"
    assert "nothing was changed" in m.error
    assert AuditEntry.objects.filter(migration=m, action="reconciled").exists()


def test_reconcile_leaves_a_migration_with_a_live_heartbeat_alone(two_hosts):
    m = migration_for(Domain.objects.get(name="kvm01-vm001"), two_hosts["kvm02"])
    m.start_checking()
    assert engine.reconcile_all() == []
    assert Migration.objects.get(pk=m.pk).status == "checking"


def test_a_dry_runs_audit_entry_names_the_vm_and_hosts(api, client, operator, two_hosts):
    dom = Domain.objects.get(name="kvm01-vm001")
    assert post(api, operator, dom, two_hosts["kvm02"], dry_run=True).status_code == 200
    entries = api.get("/api/audit/", {"domain": "kvm01-vm001", "action": "check"}).json()["results"]
    assert len(entries) == 1
    assert api.get("/api/audit/", {"host": "kvm02", "action": "check"}).json()["count"] == 1
    client.force_login(operator)
    page = client.get("/audit/?domain=kvm01-vm001")
    assert "Pre-flight checks for live migration of kvm01-vm001" in page.content.decode()
