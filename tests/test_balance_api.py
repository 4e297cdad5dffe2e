"""The balance plan through the API on test-driver hosts: an uneven cluster, the
threshold setting, the cool-down, who may ask; running it as a plan of ordinary
migrations (the moves themselves run on the lab: test_balance_lab.py)."""

from datetime import timedelta

import django_rq
import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from hosts.models import Domain, Host
from hosts.sync import sync_host
from maintenance import runner
from maintenance.models import Evacuation, Kind, PlacementRule
from migrations_app.models import AuditEntry, Migration
from tests.testdriver import domain_uuid, domain_xml, write_host

pytestmark = pytest.mark.django_db


@pytest.fixture
def uneven(tmp_path):
    """Three hosts of 8 GiB (nothing reserved), six running 1 GiB guests all on kvm01."""
    made = {}
    for name, count in (("kvm01", 6), ("kvm02", 0), ("kvm03", 0)):
        domains = [domain_xml(f"{name}-vm{i}", domain_uuid(name, i), memory_mib=1024) for i in range(count)]
        uri = write_host(tmp_path, name, domains=domains, memory_mib=8192)
        made[name] = Host.objects.create(name=name, uri=uri, memory_reserved_mib=0)
        assert sync_host(made[name]).online
    return made


def plan(api, user, **body):
    api.force_authenticate(user)
    return api.post("/api/cluster/balance/", {"dry_run": True, **body}, format="json")


def test_the_dry_run_answers_the_fewest_moves_and_the_spread(api, operator, uneven):
    response = plan(api, operator)

    assert response.status_code == 200, response.content
    body = response.json()
    # Each guest is 12.5 points of a host and the mean is 25 %: only two per host is within 10 points.
    assert len(body["plan"]) == 4
    assert sorted(m["target_name"] for m in body["plan"]) == ["kvm02", "kvm02", "kvm03", "kvm03"]
    for move in body["plan"]:
        assert move["source_name"] == "kvm01" and move["predicted_seconds"] >= 1
        assert "kvm01 has" in move["why"] and "of its memory committed" in move["why"]
    assert body["balanced"] and body["threshold"] == 10
    assert body["mean"] == {"memory": 25.0, "vcpus": 12.5}
    before = {h["host_name"]: h["memory_percent"] for h in body["before"]["hosts"]}
    after = {h["host_name"]: h["memory_percent"] for h in body["after"]["hosts"]}
    assert before == {"kvm01": 75.0, "kvm02": 0.0, "kvm03": 0.0}
    assert after == {"kvm01": 25.0, "kvm02": 25.0, "kvm03": 25.0}
    assert body["memory_moved"] == 4 * 1024**3
    # Nothing moved, nothing started.
    assert not Migration.objects.exists() and not Evacuation.objects.exists()
    assert Domain.objects.filter(host=uneven["kvm01"]).count() == 6


def test_the_threshold_comes_from_the_setting(api, operator, uneven, settings):
    settings.KVMWEB_BALANCE_THRESHOLD = 30
    body = plan(api, operator).json()
    # Within 30 points of 25 %: kvm01 may keep four (50 %), the others need one each (12.5 %).
    assert len(body["plan"]) == 2 and body["threshold"] == 30


def test_hosts_in_maintenance_are_left_out(api, operator, uneven):
    Host.objects.filter(pk=uneven["kvm03"].pk).update(maintenance=True)
    body = plan(api, operator).json()
    assert {m["target_name"] for m in body["plan"]} == {"kvm02"}
    assert [h["host_name"] for h in body["before"]["hosts"]] == ["kvm01", "kvm02"]


def balanced_lately(dom, target, finished, by_balancing=True):
    migration = Migration.objects.create(
        domain=dom,
        domain_name=dom.name,
        domain_uuid=dom.uuid,
        source=target,
        source_name=target.name,
        target=dom.host,
        target_name=dom.host.name,
        mode="live",
        status="succeeded",
        finished_at=finished,
    )
    if by_balancing:
        evacuation = Evacuation.objects.create(kind=Kind.BALANCE, host_name="", status="succeeded")
        evacuation.migrations.add(migration)


def test_vms_balancing_moved_within_the_cool_down_are_not_moved_again(api, operator, uneven):
    doms = list(Domain.objects.filter(host=uneven["kvm01"]).order_by("name"))
    for dom in doms[:4]:
        balanced_lately(dom, uneven["kvm02"], timezone.now() - timedelta(minutes=10))
    # One moved by balancing two hours ago may move again; one moved by hand does not count.
    balanced_lately(doms[4], uneven["kvm02"], timezone.now() - timedelta(hours=2))
    balanced_lately(doms[5], uneven["kvm02"], timezone.now() - timedelta(minutes=10), by_balancing=False)

    body = plan(api, operator).json()

    assert sorted(c["domain_name"] for c in body["cooling_down"]) == [d.name for d in doms[:4]]
    assert sorted(m["domain_name"] for m in body["plan"]) == [doms[4].name, doms[5].name]
    # Two moves leave kvm01 at 50 % and the others at 12.5 %: closer, not within.
    assert not body["balanced"]
    assert body["after"]["memory_max_deviation"] == 25.0 < body["before"]["memory_max_deviation"]


def test_the_plan_obeys_the_rules(api, operator, uneven):
    doms = list(Domain.objects.filter(host=uneven["kvm01"]).order_by("name"))
    PlacementRule.objects.create(name="licensed", kind="pinned", vms=[str(d.uuid) for d in doms[:5]]).hosts.add(
        uneven["kvm01"]
    )
    body = plan(api, operator).json()
    assert [m["domain_name"] for m in body["plan"]] == [doms[5].name]
    assert not body["balanced"]


def test_viewers_may_see_the_plan_but_outsiders_may_not(api, viewer, outsider, uneven):
    assert plan(api, viewer).status_code == 200
    assert plan(api, outsider).status_code == 403


def run(api, user, captured):
    """Ask for a real run; the first step is queued once the transaction commits."""
    with captured(execute=True):
        return plan(api, user, dry_run=False)


def finish_moves(evacuation, status="succeeded"):
    """What the worker does for each move of the run: the record ends and the
    inventory is read again (here: the rows say where the VMs are now)."""
    for migration in evacuation.migrations.all():
        Migration.objects.filter(pk=migration.pk).update(status=status, finished_at=timezone.now())
        if status == "succeeded":
            Domain.objects.filter(uuid=migration.domain_uuid).update(host=migration.target)
    # The hosts were read after the moves ended: the step reads none again.
    Host.objects.update(last_seen=timezone.now() + timedelta(seconds=1))


def test_running_the_plan_moves_each_vm_as_an_ordinary_migration_of_a_balance_run(
    api, operator, uneven, django_capture_on_commit_callbacks
):
    planned = plan(api, operator).json()["plan"]
    jobs_before = django_rq.get_queue("default").count

    response = run(api, operator, django_capture_on_commit_callbacks)

    assert response.status_code == 202, response.content
    body = response.json()
    assert body["url"] == f"/evacuations/{body['id']}/"
    assert (body["kind"], body["status"], body["host_id"], body["subject"]) == (
        "balance",
        "queued",
        None,
        "the cluster",
    )
    assert [(m["domain_name"], m["target_name"]) for m in body["plan"]] == [
        (m["domain_name"], m["target_name"]) for m in planned
    ]
    assert {i["state"] for i in body["plan"]} == {"pending"}
    assert body["spread"]["before"]["memory_max_deviation"] == 50.0
    assert body["spread"]["after"]["memory_max_deviation"] == 0.0
    # Its first step is queued, as an evacuation's is.
    assert django_rq.get_queue("default").count == jobs_before + 1
    entry = AuditEntry.objects.get(action="balance")
    assert entry.username == operator.username and entry.data["evacuation"] == body["id"]
    assert [m["domain_name"] for m in entry.data["plan"]] == [m["domain_name"] for m in planned]
    assert f"started balance #{body['id']} of the cluster: 4 move(s)" in entry.message

    # The runner's step (the worker would run it) asks for every move at once.
    runner.advance(body["id"])
    evacuation = Evacuation.objects.get(pk=body["id"])
    assert evacuation.status == "running"
    moves = list(evacuation.migrations.order_by("pk"))
    assert [(m.domain_name, m.source_name, m.target_name, m.mode) for m in moves] == [
        (m["domain_name"], "kvm01", m["target_name"], "live") for m in planned
    ]
    assert all(m.requested_by == operator for m in moves)
    assert {i["state"] for i in evacuation.plan} == {"moving"}

    finish_moves(evacuation)
    runner.advance(evacuation.pk)

    evacuation.refresh_from_db()
    assert evacuation.status == "succeeded", evacuation.error
    assert evacuation.progress == {"done": 4, "moved": 4, "total": 4}
    ended = AuditEntry.objects.get(action="evacuation", data__evacuation=evacuation.pk)
    assert f"Balance #{evacuation.pk} of the cluster succeeded: 4 of 4 VM(s) moved." in ended.message
    # The cool-down reads the run's moves: the next plan leaves those four where they are.
    again = plan(api, operator).json()
    assert sorted(c["domain_name"] for c in again["cooling_down"]) == sorted(m["domain_name"] for m in planned)
    assert again["plan"] == [] and again["balanced"]


def test_only_one_balance_runs_at_a_time(api, operator, uneven, django_capture_on_commit_callbacks):
    first = run(api, operator, django_capture_on_commit_callbacks).json()

    second = run(api, operator, django_capture_on_commit_callbacks)

    assert second.status_code == 409
    assert f"Balance #{first['id']} is under way: only one balance runs at a time" in second.json()["detail"]
    assert Evacuation.objects.filter(kind=Kind.BALANCE).count() == 1
    # The database holds to it too, whatever asks.
    with pytest.raises(IntegrityError), transaction.atomic():
        Evacuation.objects.create(kind=Kind.BALANCE, host_name="", status="running")


def test_no_balance_while_an_evacuation_moves_vms(api, operator, uneven, django_capture_on_commit_callbacks):
    api.force_authenticate(operator)
    with django_capture_on_commit_callbacks(execute=True):
        evacuating = api.post(f"/api/hosts/{uneven['kvm03'].pk}/maintenance/", {}, format="json").json()

    refused = run(api, operator, django_capture_on_commit_callbacks)

    assert refused.status_code == 409
    assert f"Evacuation #{evacuating['id']} of kvm03 is under way" in refused.json()["detail"]
    assert not Evacuation.objects.filter(kind=Kind.BALANCE).exists()


def test_a_balanced_cluster_has_nothing_to_run(api, operator, tmp_path):
    for name in ("kvm01", "kvm02"):
        uri = write_host(tmp_path, name, domains=[domain_xml(f"{name}-vm0", domain_uuid(name, 0))], memory_mib=8192)
        assert sync_host(Host.objects.create(name=name, uri=uri, memory_reserved_mib=0)).online

    refused = plan(api, operator, dry_run=False)

    assert refused.status_code == 409
    assert "Nothing to run: every online host is within the threshold already" in refused.json()["detail"]
    assert not Evacuation.objects.exists()


def test_a_refused_move_is_not_planned_elsewhere(api, operator, uneven, django_capture_on_commit_callbacks):
    pk = run(api, operator, django_capture_on_commit_callbacks).json()["id"]
    runner.advance(pk)
    evacuation = Evacuation.objects.get(pk=pk)
    refused = evacuation.migrations.order_by("pk").first()
    Migration.objects.filter(pk=refused.pk).update(error="kvm02 said no.")
    finish_moves(evacuation)
    Migration.objects.filter(pk=refused.pk).update(status="failed")
    Domain.objects.filter(uuid=refused.domain_uuid).update(host=refused.source)

    runner.advance(pk)

    evacuation.refresh_from_db()
    assert evacuation.status == "failed"
    [item] = [i for i in evacuation.plan if i["state"] == "failed"]
    assert item["domain_name"] == refused.domain_name and len(item["migrations"]) == 1
    assert "It stays where it was; plan the balance again." in item["error"]
    assert evacuation.migrations.count() == 4  # no fifth move elsewhere


def test_a_balance_run_is_cancelled_like_an_evacuation(api, operator, uneven, django_capture_on_commit_callbacks):
    pk = run(api, operator, django_capture_on_commit_callbacks).json()["id"]

    cancelled = api.post(f"/api/evacuations/{pk}/cancel/")

    assert cancelled.status_code == 202
    assert cancelled.json()["status"] == "cancelled"
    runner.advance(pk)
    assert not Migration.objects.exists()
    entry = AuditEntry.objects.get(action="cancel", data__evacuation=pk)
    assert f"asked to cancel balance #{pk} of the cluster" in entry.message
    # Once it is over, another may run.
    assert run(api, operator, django_capture_on_commit_callbacks).status_code == 202


def test_viewers_may_not_run_the_plan(api, viewer, uneven):
    refused = plan(api, viewer, dry_run=False)
    assert refused.status_code == 403
    assert "Only operators" in refused.json()["detail"]
    assert not Migration.objects.exists() and not Evacuation.objects.exists()
