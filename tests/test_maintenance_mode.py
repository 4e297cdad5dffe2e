"""Maintenance mode through the API, on test-driver hosts: the plan, the 409s,
the audit, and coming home (the moves themselves run on the lab)."""

from datetime import timedelta

import django_rq
import pytest
from django.utils import timezone

from dashboard.counts import host_counts
from hosts.models import Domain, Host
from hosts.sync import sync_host
from maintenance import runner
from maintenance.models import Evacuation, Item, Kind
from migrations_app.models import AuditEntry, Migration
from tests.testdriver import write_host

pytestmark = pytest.mark.django_db


@pytest.fixture
def hosts(tmp_path):
    made = {}
    # kvm02 keeps all but 600 MiB of its 2 GiB for itself (the capacity model's reserve): room for one 512 MiB VM.
    for name, extra, reserved in (
        ("kvm01", {"count": 3}, None),
        ("kvm02", {"memory_mib": 2048}, 2048 - 600),
        ("kvm03", {}, None),
    ):
        made[name] = Host.objects.create(
            name=name, uri=write_host(tmp_path, name, **extra), memory_reserved_mib=reserved
        )
        assert sync_host(made[name]).online
    return made


def maintenance(api, user, host, **body):
    api.force_authenticate(user)
    return api.post(f"/api/hosts/{host.pk}/maintenance/", body, format="json")


def test_a_dry_run_answers_the_plan_and_changes_nothing(api, operator, hosts):
    response = maintenance(api, operator, hosts["kvm01"], dry_run=True)

    assert response.status_code == 200, response.content
    body = response.json()
    placed = {m["domain_name"]: m["target_name"] for m in body["plan"]}
    # Both running VMs leave; kvm02 holds only one of them, so they spread.
    assert placed == {"kvm01-vm001": "kvm02", "kvm01-vm002": "kvm03"}
    assert {"domain", "target", "mode", "storage", "predicted_seconds", "why"} <= set(body["plan"][0])
    assert body["unplaced"] == []
    # The shut-off VM's disk is on no shared storage: it stays, and says so.
    assert [s["domain_name"] for s in body["staying"]] == ["kvm01-vm000"]
    assert not Host.objects.get(pk=hosts["kvm01"].pk).maintenance
    assert not Evacuation.objects.exists()


def test_viewers_may_not_plan_or_enter_maintenance(api, viewer, hosts):
    assert maintenance(api, viewer, hosts["kvm01"], dry_run=True).status_code == 403
    assert maintenance(api, viewer, hosts["kvm01"]).status_code == 403
    assert not Host.objects.get(pk=hosts["kvm01"].pk).maintenance


def test_vms_that_fit_nowhere_need_an_explicit_partial_evacuation(api, operator, hosts):
    Host.objects.filter(pk=hosts["kvm03"].pk).update(maintenance=True)

    refused = maintenance(api, operator, hosts["kvm01"])

    assert refused.status_code == 409
    assert "allow_partial" in refused.json()["detail"]
    [unplaced] = refused.json()["unplaced"]
    assert "kvm03: it is in maintenance" in unplaced["reason"]
    assert "memory room" in unplaced["reason"]
    assert not Host.objects.get(pk=hosts["kvm01"].pk).maintenance

    accepted = maintenance(api, operator, hosts["kvm01"], allow_partial=True)
    assert accepted.status_code == 202, accepted.content
    evacuation = Evacuation.objects.get(pk=accepted.json()["id"])
    assert evacuation.allow_partial and len(evacuation.plan) == 1 and len(evacuation.unplaced) == 1


def test_entering_maintenance_is_audited_and_refuses_migrations_onto_the_host(api, operator, hosts):
    response = maintenance(api, operator, hosts["kvm01"])
    assert response.status_code == 202, response.content
    assert Host.objects.get(pk=hosts["kvm01"].pk).maintenance
    entry = AuditEntry.objects.filter(source_name="kvm01").first()
    assert entry.username == "oscar" and "put kvm01 into maintenance" in entry.message
    assert entry.action == "maintenance" and entry.get_action_display() == "Entered maintenance"

    api.force_authenticate(operator)
    other = Domain.objects.create(uuid="11111111-2222-3333-4444-555555555555", name="elsewhere", host=hosts["kvm03"])
    refused = api.post(
        "/api/migrations/", {"domain": other.pk, "target_host": hosts["kvm01"].pk, "mode": "live"}, format="json"
    )
    assert refused.status_code == 409
    assert "kvm01 is in maintenance" in refused.json()["detail"]
    assert not Migration.objects.filter(domain_name="elsewhere").exists()


def test_a_second_evacuation_of_the_same_host_is_refused(api, operator, hosts):
    first = maintenance(api, operator, hosts["kvm01"])
    second = maintenance(api, operator, hosts["kvm01"])
    assert first.status_code == 202
    assert second.status_code == 409
    assert f"#{first.json()['id']}" in second.json()["detail"]


def test_the_evacuation_can_be_read_and_cancelled_before_it_starts(api, operator, hosts):
    pk = maintenance(api, operator, hosts["kvm01"]).json()["id"]

    body = api.get(f"/api/evacuations/{pk}/").json()
    assert (body["kind"], body["status"]) == ("evacuate", "queued")
    assert body["progress"] == {"done": 0, "moved": 0, "total": 2}
    assert body["migrations"] == []

    cancelled = api.post(f"/api/evacuations/{pk}/cancel/")
    assert cancelled.status_code == 202
    # Nothing had started: it ends at once, and a worker picking it up later does nothing.
    assert (cancelled.json()["status"], cancelled.json()["cancel_requested"]) == ("cancelled", True)
    assert [i["state"] for i in cancelled.json()["plan"]] == ["cancelled", "cancelled"]
    runner.advance(pk)
    assert not Migration.objects.exists()
    # The host stays in maintenance until an operator takes it out.
    assert Host.objects.get(pk=hosts["kvm01"].pk).maintenance


def test_a_running_evacuation_is_cancelled_by_its_next_step(api, operator, hosts, django_capture_on_commit_callbacks):
    pk = maintenance(api, operator, hosts["kvm01"]).json()["id"]
    # A step started it; no move was asked for yet (the worker is not running).
    Evacuation.objects.filter(pk=pk).update(status="running", updated_at=timezone.now() - timedelta(minutes=5))
    jobs_before = django_rq.get_queue("default").count

    with django_capture_on_commit_callbacks(execute=True):  # django-rq queues a job once its transaction commits
        response = api.post(f"/api/evacuations/{pk}/cancel/")

    assert response.status_code == 202
    assert (response.json()["status"], response.json()["cancel_requested"]) == ("running", True)
    # Its next step is queued, and whoever runs it finishes the evacuation.
    assert django_rq.get_queue("default").count == jobs_before + 1
    runner.advance(pk)
    evacuation = Evacuation.objects.get(pk=pk)
    assert evacuation.status == "cancelled"
    assert [i["state"] for i in evacuation.plan] == ["cancelled", "cancelled"]
    assert not Migration.objects.exists()
    # The host can leave maintenance and be evacuated again.
    assert api.post(f"/api/hosts/{hosts['kvm01'].pk}/activate/", {}, format="json").status_code == 200


def test_leaving_maintenance_without_return_only_ends_it(api, operator, hosts):
    Host.objects.filter(pk=hosts["kvm01"].pk).update(maintenance=True)
    api.force_authenticate(operator)

    response = api.post(f"/api/hosts/{hosts['kvm01'].pk}/activate/", {}, format="json")

    assert response.status_code == 200, response.content
    assert response.json() == {"maintenance": False}
    assert not Host.objects.get(pk=hosts["kvm01"].pk).maintenance
    left = AuditEntry.objects.filter(source_name="kvm01").first()
    assert "took kvm01 out of maintenance" in left.message and left.get_action_display() == "Left maintenance"
    again = api.post(f"/api/hosts/{hosts['kvm01'].pk}/activate/", {}, format="json")
    assert again.status_code == 409 and "not in maintenance" in again.json()["detail"]


def test_coming_home_brings_back_only_what_is_still_where_the_evacuation_put_it(api, operator, hosts):
    kvm01, kvm02, kvm03 = hosts["kvm01"], hosts["kvm02"], hosts["kvm03"]
    stayed, moved_on = Domain.objects.get(name="kvm01-vm001"), Domain.objects.get(name="kvm01-vm002")
    # What an evacuation did: both went to kvm03; since then someone moved one on to kvm02.
    Domain.objects.filter(pk=stayed.pk).update(host=kvm03)
    Domain.objects.filter(pk=moved_on.pk).update(host=kvm02)
    Host.objects.filter(pk=kvm01.pk).update(maintenance=True)
    item = {"target": kvm03.pk, "target_name": "kvm03", "state": Item.MOVED, "migrations": []}
    Evacuation.objects.create(
        host=kvm01,
        host_name="kvm01",
        status="succeeded",
        plan=[
            {**item, "domain": stayed.pk, "domain_uuid": str(stayed.uuid), "domain_name": stayed.name},
            {**item, "domain": moved_on.pk, "domain_uuid": str(moved_on.uuid), "domain_name": moved_on.name},
        ],
    )
    api.force_authenticate(operator)

    response = api.post(f"/api/hosts/{kvm01.pk}/activate/", {"return_vms": True}, format="json")

    assert response.status_code == 202, response.content
    back = Evacuation.objects.get(pk=response.json()["id"])
    assert back.kind == Kind.RETURN
    assert [(m["domain_name"], m["target_name"]) for m in back.plan] == [(stayed.name, "kvm01")]
    assert not Host.objects.get(pk=kvm01.pk).maintenance


def test_the_plan_page_is_for_operators_and_shows_every_vm(client, operator, viewer, hosts):
    client.force_login(viewer)
    assert client.get("/hosts/kvm01/maintenance/").status_code == 403
    assert client.post("/hosts/kvm01/activate/").status_code == 403

    client.force_login(operator)
    page = client.get("/hosts/kvm01/maintenance/").content.decode()
    assert 'data-domain="kvm01-vm001"' in page and 'data-domain="kvm01-vm002"' in page
    assert "kvm01-vm000" in page  # staying, with its reason
    assert not Host.objects.get(pk=hosts["kvm01"].pk).maintenance


def test_the_dashboard_shows_which_host_is_in_maintenance_and_its_feed_says_so(client, viewer, hosts):
    Host.objects.filter(pk=hosts["kvm01"].pk).update(maintenance=True)
    client.force_login(viewer)

    page = client.get("/").content.decode()

    rows = {name: page.split(f'data-host="{name}"')[1].split("</tr>")[0] for name in ("kvm01", "kvm02")}
    assert '"status orange maintenance">In maintenance' in rows["kvm01"]
    assert '"status orange maintenance" hidden>' in rows["kvm02"]
    assert {h["name"]: h["maintenance"] for h in host_counts()} == {"kvm01": True, "kvm02": False, "kvm03": False}


def test_viewers_may_follow_an_evacuation_but_not_cancel_it_nor_end_maintenance(api, operator, viewer, hosts):
    pk = maintenance(api, operator, hosts["kvm01"]).json()["id"]
    api.force_authenticate(viewer)

    assert api.get(f"/api/evacuations/{pk}/").status_code == 200
    assert api.post(f"/api/evacuations/{pk}/cancel/").status_code == 403
    assert api.post(f"/api/hosts/{hosts['kvm01'].pk}/activate/", {}, format="json").status_code == 403
    assert not Evacuation.objects.get(pk=pk).cancel_requested
    assert Host.objects.get(pk=hosts["kvm01"].pk).maintenance
