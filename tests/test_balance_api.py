"""The balance plan through the API on test-driver hosts: an uneven cluster, the
threshold setting, the cool-down, who may ask, and that running it is not built."""

from datetime import timedelta

import pytest
from django.utils import timezone

from hosts.models import Domain, Host
from hosts.sync import sync_host
from maintenance.models import Evacuation, Kind, PlacementRule
from migrations_app.models import Migration
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


def test_running_the_plan_is_not_built_yet(api, operator, viewer, uneven):
    refused = plan(api, operator, dry_run=False)
    assert refused.status_code == 501
    assert "not built yet" in refused.json()["detail"]
    assert plan(api, viewer, dry_run=False).status_code == 403
    assert not Migration.objects.exists()
